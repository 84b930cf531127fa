"""`vaebench` command line: one small function per subcommand, heavy imports inside them.

Exit status: 0 success, 1 a run failed or a regression was found, 2 bad usage or input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from . import __version__
from .spec import AMP_MODES, COMPILE_MODES, DATA_SOURCES, DEFAULT, LOADERS

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input found after parsing: printed as one line, exit status 2."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.handler(args))
    except UsageError as exc:
        print(f"vaebench {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"vaebench {args.command}: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vaebench",
        description="Benchmark and profile PyTorch training of the reference MNIST VAE.",
        epilog="Run `vaebench COMMAND --help` for a command's options. "
        "Exit status: 0 ok, 1 a run failed or a regression was found, 2 bad usage.",
    )
    parser.add_argument("--version", action="version", version=f"vaebench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def _command(
    sub: argparse._SubParsersAction, name: str, help_text: str, handler: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(handler=handler)
    return parser


def add_run_knobs(parser: argparse.ArgumentParser, *, lists: bool = False) -> None:
    """The knobs of one run. With `lists`, each takes a comma list (a sweep's grid axes)."""
    many = " (comma list)" if lists else ""
    text = str if lists else None
    group = parser.add_argument_group("run configuration" + (": comma lists form a grid" if lists else ""))

    def knob(flag: str, kind: type | None, help_text: str, **kwargs: object) -> None:
        group.add_argument(flag, type=text or kind, help=help_text + many, **kwargs)  # type: ignore[arg-type]

    knob("--device", str, f"cpu, cuda, cuda:N or mps (default: {DEFAULT.device})")
    knob("--threads", int, "intra-op threads, set before torch loads (default: torch's, all cores)")
    knob("--interop-threads", int, "inter-op threads (default: torch's)")
    knob("--batch-size", int, f"samples per step (default: {DEFAULT.batch_size}, the seed's)")
    knob("--epochs", int, f"passes over the data (default: {DEFAULT.epochs}, the seed's)")
    knob("--steps", int, "stop after this many optimizer steps (default: run all epochs)")
    knob("--lr", float, f"Adam learning rate (default: {DEFAULT.lr})")
    knob("--loader", str, f"input pipeline: {', '.join(LOADERS)} (default: {DEFAULT.loader})")
    knob("--workers", int, f"DataLoader workers, reference loader (default: {DEFAULT.workers})")
    if lists:
        knob("--pin-memory", str, "page-locked host batches: on, off")
    else:
        group.add_argument("--pin-memory", action="store_true", default=None,
                           help="page-locked host batches, copied non_blocking (CUDA)")
    knob("--compile", str, f"torch.compile mode: {', '.join(COMPILE_MODES)} (default: off)")
    knob("--amp", str, f"autocast: {', '.join(AMP_MODES)}; fp16 needs CUDA (default: off)")
    knob("--seed", int, f"seed for init, noise and shuffling (default: {DEFAULT.seed})")
    knob("--data", str, f"data source: {', '.join(DATA_SOURCES)} (default: auto = mnist if on "
         "disk, else the embedded 5k digits)")
    knob("--samples", int, f"samples per epoch (default: {DEFAULT.samples}, MNIST's size)")


def add_io_options(parser: argparse.ArgumentParser, *, out_default: str) -> None:
    group = parser.add_argument_group("input and output")
    group.add_argument("--data-dir", default=None,
                       help="where MNIST lives in torchvision's layout "
                       "(default: $VAEBENCH_DATA or ~/.cache/vaebench/data)")
    group.add_argument("--out", default=out_default, help=f"results folder (default: {out_default})")
    group.add_argument("--timeout", type=float, default=None,
                       help="kill a run after this many seconds, recorded as failed (default: none)")
    group.add_argument("--sample-hz", type=float, default=10.0,
                       help="outside monitor's sampling rate (default: 10 Hz)")


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []
