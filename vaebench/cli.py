"""`vaebench` command line: one small function per subcommand, heavy imports inside them.

Exit status: 0 success, 1 a run failed or a regression was found, 2 bad usage or input.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__
from .errors import (
    BUG_REPORT,
    EXIT_BROKEN_PIPE,
    EXIT_BUG,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    STOPS,
    Interrupted,
    UsageError,
    VaebenchError,
    signal_of,
    stop_signals_raise,
)
from .result import OK
from .rules import ALPHA, MAX_SAMPLE_HZ, MIN_SAMPLE_HZ, REGRESSION_THRESHOLD, SAMPLE_HZ
from .spec import (
    ADAM_IMPLS,
    ALLOCATORS,
    AMP_MODES,
    COMPILE_MODES,
    DATA_SOURCES,
    DEFAULT,
    LOADERS,
    SPEC_FIELDS,
    SYNC_MODES,
    WAIT_POLICIES,
    RunSpec,
    value_problem,
)
from .storage import RUNS_FILE
from .sweep import DEFAULT_JOB_MINUTES, EXECUTORS, SUBMITIT_LOCAL_PARALLEL

if TYPE_CHECKING:
    from typing import TypeAlias

    SubParsers: TypeAlias = argparse._SubParsersAction["Parser"]  # add_subparsers()' type

    from .analysis.report import Report
    from .measure.execution import Planned
    from .measure.run import RunOptions
    from .result import DataInfo, RunRecord
    from .sweep import ExecutorSettings, Skipped

def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status: 0 ok, 1 failed or regression, 2 bad usage or input,
    130/143/129 interrupted (SIGINT/SIGTERM/SIGHUP), 141 stdout's reader went away (as a shell
    reports SIGPIPE), 70 a bug (the traceback is printed)."""
    try:
        return _main(argv)
    except BrokenPipeError:  # `vaebench ... | head` stopped reading: nothing is left to tell it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail too
        return EXIT_BROKEN_PIPE


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # named by the command they were given to, whose --help lists what it takes
            prog = f"{parser.prog} {args.command}" if getattr(args, "command", None) else parser.prog
            raise BadArguments(prog, f"unrecognized arguments: {' '.join(extra)} (see `{prog} --help`)")
    except BadArguments as exc:
        print(f"{exc.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not hasattr(args, "handler"):
        parser.print_help()
        return EXIT_USAGE
    try:
        with stop_signals_raise():
            return int(args.handler(args))
    except VaebenchError as exc:
        print(f"vaebench {args.command}: {'error: ' if exc.exit_code == EXIT_USAGE else ''}{exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"vaebench {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        raise
    except Exception:  # noqa: BLE001 - anything else is a bug, not bad input
        traceback.print_exc()
        print(f"vaebench {args.command}: internal error: {BUG_REPORT} (exit status {EXIT_BUG})", file=sys.stderr)
        return EXIT_BUG


class BadArguments(UsageError):
    """argparse refused the command line; `prog` is the (sub)command that did."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    """argparse that refuses a bad command line in one line, pointing at --help, instead of an
    eight-line usage block, and that reads `-5%`, `-inf` or `-1e3` as a (bad) value to check,
    not as an unknown option."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-(\d|\.\d|inf|nan)", re.IGNORECASE)

    def error(self, message: str) -> NoReturn:
        raise BadArguments(self.prog, f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="vaebench",
        description="Benchmark and profile PyTorch training of the reference MNIST VAE.",
        epilog="Run `vaebench COMMAND --help` for a command's options. "
        "Exit status: 0 ok, 1 a run failed or a regression was found, 2 bad usage or input, "
        "130/143/129 interrupted (SIGINT/SIGTERM/SIGHUP), 70 an internal error (please report it).",
    )
    parser.add_argument("--version", action="version", version=f"vaebench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def _command(
    sub: SubParsers, name: str, help_text: str, handler: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(handler=handler)
    return parser


def add_run_knobs(parser: argparse.ArgumentParser, *, lists: bool = False) -> None:
    """The knobs of one run. With `lists`, each takes a comma list (a sweep's grid axes)."""
    many = " (comma list)" if lists else ""
    text = str if lists else None
    group = parser.add_argument_group("run configuration" + (": comma lists form a grid" if lists else ""))

    def knob(flag: str, kind: Callable[[str], Any], help_text: str, **kwargs: Any) -> None:
        group.add_argument(flag, type=text or kind, help=help_text + many, **kwargs)

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
    knob("--compile", str, f"torch.compile mode: {', '.join(COMPILE_MODES)} (default: off); full batches only, "
         "the ragged last batch of an epoch runs eagerly")
    knob("--amp", str, f"autocast: {', '.join(AMP_MODES)}; fp16 needs CUDA (default: off)")
    knob("--sync", str, f"when the host reads the loss: {', '.join(SYNC_MODES)} (default: {DEFAULT.sync}, "
         "the seed's loss.item() every step; epoch sums it on the device and reads it once per epoch)")
    if lists:
        knob("--cuda-graphs", str, "capture the whole step as a CUDA graph: on, off")
    else:
        group.add_argument("--cuda-graphs", action="store_true", default=None,
                           help="capture the whole training step, fused Adam included, once as a CUDA graph "
                           "and replay it; needs CUDA and --sync epoch (default: off)")
    knob("--adam", str, f"how the seed's Adam runs: {', '.join(ADAM_IMPLS)}; auto is fused under --cuda-graphs and "
         "torch's choice otherwise (foreach on CUDA), fused is one kernel for all parameters, compiled wraps its "
         "step in torch.compile (default mode) so inductor fuses it; same algorithm and settings (default: auto)")
    knob("--omp-wait-policy", str, f"how idle OpenMP threads wait: {', '.join(WAIT_POLICIES)}; active spins, passive "
         "sleeps in the kernel at once, default keeps the runtime's (libgomp: spin about 3 ms, then sleep); "
         f"GOMP_SPINCOUNT and KMP_BLOCKTIME are set to match (default: {DEFAULT.omp_wait_policy})")
    knob("--allocator", str, f"C allocator: {', '.join(ALLOCATORS)}; jemalloc and tcmalloc are preloaded (LD_PRELOAD), "
         f"found through ldconfig or --allocator-path (default: {DEFAULT.allocator}, glibc's malloc)")
    if lists:
        knob("--bind", str, "pin OpenMP threads to cores (OMP_PROC_BIND=close, OMP_PLACES=cores): on, off")
    else:
        group.add_argument("--bind", action="store_true", default=None,
                           help="pin OpenMP threads to cores: OMP_PROC_BIND=close, OMP_PLACES=cores (default: off)")
    group.add_argument("--allocator-path", default=None, metavar="LIB",
                       help="the library to preload for --allocator jemalloc or tcmalloc, where ldconfig does not "
                       "know it; its file name must contain jemalloc or tcmalloc (default: found through ldconfig)")
    knob("--seed", int, f"seed for init, noise and shuffling (default: {DEFAULT.seed})")
    knob("--data", str, f"data source: {', '.join(DATA_SOURCES)} (default: auto = mnist if on "
         "disk, else the embedded 5k digits)")
    knob("--samples", int, f"samples per epoch (default: {DEFAULT.samples}, MNIST's size)")
    knob("--nproc-per-node", int, "data-parallel ranks on each host, started by torchrun (DDP: gloo on cpu, nccl "
         f"on cuda with one GPU per rank); --batch-size stays per rank (default: {DEFAULT.nproc_per_node})")
    knob("--nnodes", int, f"hosts in one data-parallel run (default: {DEFAULT.nnodes})")


DATA_DIR_HELP = ("where MNIST lives in torchvision's layout (default: $VAEBENCH_DATA, else data/ in vaebench's "
                 "cache: $VAEBENCH_CACHE, $XDG_CACHE_HOME/vaebench or ~/.cache/vaebench)")
SAMPLE_HZ_HELP = (f"outside monitor's sampling rate (default: {SAMPLE_HZ:g} Hz; {MIN_SAMPLE_HZ:g} to "
                  f"{MAX_SAMPLE_HZ:g}, under 1%% of a core)")


def add_io_options(parser: argparse.ArgumentParser, *, out_default: str) -> None:
    group = parser.add_argument_group("input and output")
    group.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    group.add_argument("--out", default=out_default, help=f"results folder (default: {out_default})")
    group.add_argument("--timeout", type=float, default=None,
                       help="kill a run after this many seconds, recorded as failed (default: none)")
    group.add_argument("--sample-hz", type=float, default=SAMPLE_HZ, help=SAMPLE_HZ_HELP)


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    """The run spec: the defaults, overridden by every knob given on the command line."""
    values = {name: getattr(args, name) for name in SPEC_FIELDS if getattr(args, name, None) is not None}
    return dataclasses.replace(DEFAULT, **values)


def _add_run(sub: SubParsers) -> None:
    parser = _command(sub, "run", "Train the reference VAE once in a fresh child process, measured from "
                      "inside and outside, and append its record to --out/runs.jsonl.", _cmd_run)
    parser.epilog = (
        "Examples: `vaebench run --device cpu --epochs 1`; `vaebench run --device cuda --loader device "
        "--profile`; `vaebench run --data synthetic --steps 200 --compile default`. Exit status: 0 the run "
        "finished; 1 it failed (crash, out of memory, timeout), recorded as failed with its reason; "
        "2 bad input, refused before anything ran."
    )
    add_run_knobs(parser)
    add_io_options(parser, out_default="reports/runs")
    parser.add_argument("--profile", action="store_true", default=None,
                        help="trace a torch.profiler window after warm-up (default: off)")
    parser.add_argument("--profile-steps", type=int, default=None,
                        help=f"steps in the profiler window (default: {DEFAULT.profile_steps})")
    parser.add_argument("--no-instrument", dest="instrument", action="store_false", default=None,
                        help="drop the per-step timers and device events, to measure their cost; recorded as "
                        "instrument=off, a configuration of its own (default: on)")
    hosts = parser.add_argument_group("several hosts (with --nnodes above 1; run the same command on every host)")
    hosts.add_argument("--node-rank", type=int, default=0, help="this host's place, 0 to nnodes-1 (default: 0)")
    hosts.add_argument("--rdzv-endpoint", default="", metavar="HOST:PORT",
                       help="node 0's rendezvous, reachable from every host (torchrun's --rdzv-endpoint)")
    parser.add_argument("--syscalls", action="store_true",
                        help="after the timed run, a diagnostic run of the same spec under `strace -c -f` (or "
                        "`perf trace -s`), never the timed one: calls and seconds per syscall, stored with the run, "
                        "the top ones printed (default: off)")


def _run_shown(spec: RunSpec, data: DataInfo, options: RunOptions) -> RunRecord:
    """Run once and print what it measured, kept or not: a record the disk refused is shown
    before the error says it was not written."""
    from .analysis.summary import format_run
    from .measure.run import run_once
    from .storage import NotSaved

    try:
        record = run_once(spec, data, options)
    except NotSaved as exc:
        if exc.lost is not None:
            print(format_run(exc.lost))
        raise
    print(format_run(record, str(options.out / "runs.jsonl") if options.launch.node_rank == 0 else ""))
    return record


def _cmd_run(args: argparse.Namespace) -> int:
    from .machine import host_fingerprint
    from .measure.launch import Launch
    from .measure.run import RunOptions, check, prepare_data
    from .measure.syscalls import find_tracer
    from .rules import one_rank, single_rank_rate
    from .storage import rows_if_any

    spec = spec_from_args(args)
    launch = Launch(node_rank=args.node_rank, rdzv_endpoint=args.rdzv_endpoint)
    launch.check(spec)
    _check_io(args, create=False)
    _check_allocator_path(args.allocator_path, [spec.allocator])  # the user's own mismatch first
    check(spec, allocator_path=args.allocator_path or "")
    _check_io(args)  # the results folder is made once the run is known to be runnable here
    # Without strace or perf: exit 2 naming what to install, before anything trains.
    tracer = find_tracer() if args.syscalls else None
    spec, data = prepare_data(spec, args.data_dir)
    if args.data is None or args.data == "auto":
        print(f"data: {data.source} ({data.samples} samples/epoch) at {data.path}", file=sys.stderr)
    short = spec.steps_short()
    if short:
        print(f"warning: {short}", file=sys.stderr)
    out = Path(args.out)
    options = RunOptions(out=out, timeout=args.timeout, sample_hz=args.sample_hz,
                         progress=sys.stderr.isatty(), launch=launch,
                         allocator_path=args.allocator_path or "", tracer=tracer)
    if spec.world_size > 1 and launch.node_rank == 0:
        # Scaling efficiency needs one rank's samples/s at the same per-rank batch on this host.
        rows = rows_if_any(out)
        if math.isnan(single_rank_rate(rows, spec, host_fingerprint()["hostname"])):
            print("measuring one rank first: the baseline of the scaling efficiency", file=sys.stderr)
            baseline = _run_shown(one_rank(spec), data, dataclasses.replace(options, tracer=None))
            print()
            if baseline.status != OK:
                return EXIT_FAILED
    record = _run_shown(spec, data, options)
    if launch.node_rank > 0:
        print(f"node {launch.node_rank} of {spec.nnodes}: the run's record is written on node 0, with rank 0")
    return EXIT_OK if record.status == OK else EXIT_FAILED


def _check_io(args: argparse.Namespace, *, create: bool = True, also: tuple[str, ...] = ()) -> None:
    """Check the options of how to run (`sweep.run_options`) and, unless `create` is off (a dry
    run creates nothing), create the results folder; `also` names subfolders of it the command
    writes besides the records' (`storage.unwritable`). A folder whose records no reader accepts
    (another tool's runs.jsonl, a damaged line) is refused too, before anything is added to it."""
    from .sweep import run_options

    names = ("out", "data_dir", "timeout", "sample_hz")
    checked = run_options({name: getattr(args, name, None) for name in names})
    args.sample_hz = checked.get("sample_hz", SAMPLE_HZ)
    if not create:
        return
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"results folder {out} cannot be created: {exc.strerror or exc}") from None
    from .storage import rows_if_any, unwritable

    problem = unwritable(out, also)
    if problem:
        raise UsageError(f"results folder {out} cannot be written: {problem}")
    rows_if_any(out)


def _check_field(flag: str, name: str, value: object) -> None:
    """A command's own flag that sets a run field (ladder's --epochs, ...), checked as the field."""
    problem = value_problem(name, value)
    if problem:
        raise UsageError(f"{flag}: {problem}")


def _add_env(sub: SubParsers) -> None:
    parser = _command(sub, "env", "Print this machine's fingerprint, as every record carries it.", _cmd_env)
    parser.add_argument("--json", action="store_true", help="print JSON instead of aligned text")


def _cmd_env(args: argparse.Namespace) -> int:
    import json

    from .machine import host_fingerprint, runtime_fingerprint

    info = host_fingerprint()
    info.update(runtime_fingerprint())
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
    return EXIT_OK


def _add_report(sub: SubParsers) -> None:
    parser = _command(
        sub, "report", "Summarize a results folder: tables, figures, report.md, CSV and Parquet.",
        _cmd_report,
    )
    parser.add_argument("folder", metavar="DIR", type=results_folder, help="results folder holding runs.jsonl "
                        "(or that file); the report is written into it")
    parser.add_argument("--baseline", default=None, metavar="SPEC",
                        help="configuration to compute speed-ups against, as field=value pairs, "
                        "e.g. 'device=cpu,threads=1' (default: no speed-up column)")
    parser.add_argument("--runs", default=None, metavar="RUN_ID,...",
                        help="runs to draw in the GPU timeline "
                        "(default: one per configuration, GPU runs first, at most 6)")


def _refuse_beside(args: argparse.Namespace, mode: str, *, allowed: Sequence[str]) -> None:
    """Refuse the options given with `mode` (one that runs nothing) that it would ignore."""
    defaults = vars(build_parser().parse_args([args.command]))
    ignored = [name for name, value in vars(args).items()
               if name not in (*allowed, "command", "handler") and value != defaults.get(name, value)]
    if ignored:
        flags = ", ".join("--" + name.replace("_", "-") for name in ignored)
        raise UsageError(f"{mode} runs nothing, so it would ignore {flags}")


def _check_allocator_path(allocator_path: str | None, allocators: Sequence[str]) -> None:
    """Refuse an --allocator-path that no run would preload, rather than ignore it."""
    from .machine import allocator_of_path

    named = allocator_of_path(allocator_path) if allocator_path else None
    if allocator_path and named not in allocators:
        used = ", ".join(sorted(set(allocators)))
        raise UsageError(f"--allocator-path {allocator_path} is {f'a {named}' if named else 'no known allocator'} "
                         f"library, but the runs use --allocator {used}, which would ignore it"
                         + (f": give --allocator {named}" if named else ""))


def results_folder(text: str) -> str:
    """A results folder named on the command line, or named by its runs.jsonl."""
    path = Path(text)
    return str(path.parent) if path.name == RUNS_FILE and path.is_file() else text


def _cmd_report(args: argparse.Namespace) -> int:
    from .analysis.export import write_report
    from .analysis.report import build_report

    runs = [r.strip() for r in args.runs.split(",") if r.strip()] if args.runs else None
    report = build_report(args.folder, baseline=args.baseline, runs=runs)
    try:
        written = write_report(report)  # before the printout: stdout may be a pipe that closes early
    except OSError as exc:  # a folder of someone else's results, a read-only share: the tables still print
        _print_report(report)
        raise UsageError(f"{exc.filename or args.folder}: cannot be written ({exc.strerror or exc}); the report "
                         "is printed above, not saved") from None
    _print_report(report)
    print(f"wrote {written}")
    return EXIT_OK


def _print_report(report: Report) -> None:
    from .analysis.report_text import bottleneck_lines, kernel_lines, summary_table, warning_lines

    print(summary_table(report).to_string(index=False))
    for line in warning_lines(report):
        print(line)
    for row in report.failed.itertuples():
        print(f"failed: {row.run_id} {row.config}: {row.reason}")
    for line in bottleneck_lines(report):
        print(line)
    if report.kernel:
        print()
        print("\n".join(kernel_lines(report)))


COMPARE_EPILOG = (
    "Exit status: 0 no regression (improvements, unchanged or inconclusive results, runs beside a busy "
    "neighbour included: they are not judged, with a loud note); "
    "1 at least one regression: a slowdown past the threshold that is also significant, a "
    "final loss outside the seed-to-seed band, or a candidate point whose runs all failed (a crash, "
    "out of memory, a timeout); 2 usage or infrastructure error: a bad option, a missing folder, a "
    "corrupt runs.jsonl or series file, the same runs on both sides, fingerprints that differ, no "
    "configuration paired, a --markdown/--json path that cannot be written, or (with --strict) runs "
    "beside a busy neighbour, too few runs for a check to fail, or a configuration one side lacks."
)


def parse_metrics(text: str) -> list[str]:
    """'real_s,sys_s' as ['real_s', 'sys_s']; an unknown name is refused."""
    from .analysis.compare import METRICS

    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METRICS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown metric {(unknown[0] if unknown else text)!r}; choose from "
                                         f"{', '.join(METRICS)}")
    return names


def parse_fraction(text: str) -> float:
    """'10%' or '0.1' as 0.1; a bare number of 1 or more is refused as ambiguous."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a fraction or percentage: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    if not raw.endswith("%") and value >= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is ambiguous: write {value:g}% or a fraction")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def _add_compare(sub: SubParsers) -> None:
    from .analysis.compare import DEFAULT_METRICS, METRICS

    parser = _command(
        sub, "compare", "Check a candidate results folder against a baseline for regressions.",
        _cmd_compare,
    )
    parser.epilog = COMPARE_EPILOG
    parser.add_argument("baseline", metavar="BASELINE", type=results_folder,
                        help="results folder of the reference (or its runs.jsonl)")
    parser.add_argument("candidate", metavar="CANDIDATE", type=results_folder,
                        help="results folder of the change (or its runs.jsonl)")
    parser.add_argument("--threshold", type=parse_fraction, default=REGRESSION_THRESHOLD, metavar="T",
                        help=f"smallest slowdown that counts, as 10%% or 0.1 (default: {REGRESSION_THRESHOLD:.0%}%)")
    parser.add_argument("--metric", dest="metrics", action="extend", nargs="+", metavar="M",
                        type=parse_metrics, default=None,
                        help=f"metrics to check, space- or comma-separated, from {', '.join(METRICS)} "
                        f"(default: {' '.join(DEFAULT_METRICS)})")
    parser.add_argument("--alpha", type=parse_fraction, default=ALPHA,
                        help="significance level of the one-sided test; the ratio intervals shown are at "
                        f"1 - 2 x alpha, the matching two-sided level (default: {ALPHA:g}, so {1 - 2 * ALPHA:.0%}% "
                        "intervals)")
    parser.add_argument("--allow-different-machines", action="store_true",
                        help="compare even when CPU, GPU, torch or thread settings differ; "
                        "the differences are printed as warnings")
    parser.add_argument("--strict", action="store_true",
                        help="exit 2 when a check could not judge: runs measured beside a busy neighbour, or "
                        "too few runs for any change to be significant (default: exit 0 with a loud note)")
    parser.add_argument("--markdown", metavar="FILE", default=None,
                        help="also write a Markdown summary, e.g. $GITHUB_STEP_SUMMARY")
    parser.add_argument("--json", metavar="FILE", default=None, help="also write JSON")


def _cmd_compare(args: argparse.Namespace) -> int:
    from .analysis.compare import DEFAULT_METRICS, compare, load_step_times
    from .storage import load_runs

    _check_summary_paths(args)
    tables, steps = [], []
    for folder in (args.baseline, args.candidate):
        if Path(folder).is_file():
            raise UsageError(f"{folder}: a file, not a results folder; name the folder that holds runs.jsonl "
                             "(or runs.jsonl itself)")
        if not Path(folder).is_dir():
            raise UsageError(f"{folder}: no such results folder")
        try:
            runs = load_runs(folder)
            ids = [str(i) for i in runs["run_id"]] if "run_id" in runs.columns else []
            tables.append(runs)
            steps.append(load_step_times(folder, ids))
        except OSError as exc:  # a series file that cannot be read
            raise UsageError(f"{folder}: {exc}") from None
    try:
        comparison = compare(
            tables[0], tables[1], threshold=args.threshold, alpha=args.alpha,
            metrics=tuple(dict.fromkeys(name for names in args.metrics or [DEFAULT_METRICS] for name in names)),
            allow_different_machines=args.allow_different_machines,
            baseline_series=steps[0], candidate_series=steps[1],
        )
    except UsageError as exc:  # different machines, nothing paired: the job's summary says why too
        _write_summaries(args, f"## vaebench compare\n\n:x: Could not compare: {exc}\n",
                         json.dumps({"exit_code": EXIT_USAGE, "error": str(exc)}, indent=2))
        raise
    comparison = dataclasses.replace(comparison, strict=args.strict)
    _write_summaries(args, comparison.to_markdown(), comparison.to_json())  # first: stdout may be a closed pipe
    print(comparison.to_text())
    if comparison.exit_code == EXIT_USAGE:
        raise UsageError(comparison.unjudged)
    return comparison.exit_code


def _check_summary_paths(args: argparse.Namespace) -> None:
    """compare's --markdown and --json can be written: checked before comparing, so that a typo
    in a path cannot turn a found regression (exit 1) into exit 2."""
    for flag, given in (("--markdown", args.markdown), ("--json", args.json)):
        if not given:
            continue
        path = Path(given)
        folder = path.parent
        if path.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK):
            why = "is a folder" if path.is_dir() else f"{folder} is not a writable folder"
            raise UsageError(f"{flag} {given}: {why}")


def _write_summaries(args: argparse.Namespace, markdown: str, json_text: str) -> None:
    """compare's --markdown and --json files, for a CI job's summary and artifacts."""
    try:
        if args.markdown:
            Path(args.markdown).write_text(markdown, encoding="utf-8")
        if args.json:
            Path(args.json).write_text(json_text + "\n", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write the summary: {exc}") from None


def _add_sweep(sub: SubParsers) -> None:
    parser = _command(
        sub, "sweep",
        "Run a grid of configurations, each repeated, interleaved, resumable. Every knob takes a comma "
        "list; the grid is their product (times --repeats). Points already in --out are skipped.",
        _cmd_sweep,
    )
    add_run_knobs(parser, lists=True)
    parser.add_argument("--profile", action="store_true", default=None, help="profile every point (default: off)")
    group = parser.add_argument_group("sweep")
    group.add_argument("--config", help="a sweep file (TOML: [grid] lists, [run] fixed values, repeats, out); "
                       "command-line knobs override it. Examples in benchmarks/*.toml")
    group.add_argument("--repeats", type=int, default=None, help="runs of every point (default: 1, or the file's)")
    group.add_argument("--order-seed", type=int, default=None, help="seed of the interleaved order (default: 0)")
    group.add_argument("--force", action="store_true", help="rerun points already in --out")
    group.add_argument("--dry-run", action="store_true", help="list the points and the estimated time; run nothing")
    io = parser.add_argument_group("input and output")
    io.add_argument("--out", default=None, help="results folder (default: the file's `out`, else reports/sweep)")
    io.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    io.add_argument("--timeout", type=float, default=None, help="kill a run after this many seconds (default: none)")
    io.add_argument("--sample-hz", type=float, default=None, help=SAMPLE_HZ_HELP)
    jobs = parser.add_argument_group(
        "where the points run (or a sweep file's [executor] table: kind, partition, time, gpus_per_job, "
        "cpus_per_job, max_parallel, extra); slurm and submitit-local need `pip install 'vaebench[slurm]'`")
    jobs.add_argument("--executor", choices=EXECUTORS, default=None,
                      help="local: here, one point after another (default); slurm: one Slurm job per point, a job "
                      "array through submitit; submitit-local: the same jobs as local processes, to try a set-up")
    jobs.add_argument("--slurm-partition", default=None, help="the jobs' partition (default: the cluster's)")
    jobs.add_argument("--slurm-time", default=None, metavar="LIMIT",
                      help=f"each job's time limit: minutes, 90m, 2h or H:MM:SS (default: {DEFAULT_JOB_MINUTES} min)")
    jobs.add_argument("--slurm-gpus-per-job", type=int, default=None,
                      help="GPUs per job (default: a CUDA point's ranks, none for a CPU point)")
    jobs.add_argument("--slurm-cpus-per-job", type=int, default=None,
                      help="CPUs per job (default: threads x ranks where --threads is set, else Slurm's)")
    jobs.add_argument("--max-parallel", type=int, default=None,
                      help=f"jobs at once (default: Slurm's array limit; {SUBMITIT_LOCAL_PARALLEL} for submitit-local, "
                      "which shares this machine between them: 1 for clean timings). On Slurm it is each job array's "
                      "%%N: points that need different resources (CPUs, GPUs, nodes) go in arrays of their own, "
                      "each limited on its own")
    jobs.add_argument("--slurm-extra", action="append", default=None, metavar="KEY=VALUE",
                      help="another of submitit's Slurm parameters, e.g. account=lab, constraint=a100, "
                      "exclusive=true; repeatable")
    jobs.add_argument("--status", metavar="DIR", default=None,
                      help="run nothing: list every point of the sweep in DIR as done, failed (with the reason), "
                      "running or pending, with job ids")
    jobs.add_argument("--json", action="store_true",
                      help="with --status: print the points as JSON, for a script (the same fields as the table, "
                      "with each point's spec_key and repeat)")


def _cmd_sweep(args: argparse.Namespace) -> int:
    from ._format import counted, format_duration
    from .machine import capabilities
    from .measure import cluster
    from .measure.execution import estimate_s, history_of, run_points, schedule
    from .measure.run import RunOptions
    from .sweep import SweepConfig, executor_settings, load_config, merge, parse_axes

    if args.status is not None:
        _refuse_beside(args, "--status", allowed=("status", "json"))
        return _sweep_status(Path(args.status), as_json=args.json)
    if args.json:
        raise UsageError("--json goes with --status DIR: a sweep's progress is printed as it runs")
    config = load_config(args.config) if args.config else SweepConfig()
    settings = executor_settings(config.executor, {
        "kind": args.executor, "partition": args.slurm_partition, "time": args.slurm_time,
        "gpus_per_job": args.slurm_gpus_per_job, "cpus_per_job": args.slurm_cpus_per_job,
        "max_parallel": args.max_parallel, "extra": args.slurm_extra})
    if settings.submitit:
        cluster.check(settings)
    job_flags = ("slurm_partition", "slurm_time", "slurm_gpus_per_job", "slurm_cpus_per_job", "max_parallel",
                 "slurm_extra")
    given = ["--" + name.replace("_", "-") for name in job_flags if getattr(args, name) is not None]
    if settings.kind == "local" and given:
        verb = "sets" if len(given) == 1 else "set"
        raise UsageError(f"{', '.join(given)} {verb} how submitit runs jobs; the local executor runs the points "
                         "itself, one at a time, and would ignore it: add --executor slurm or submitit-local")
    slurm_only = [flag for flag in given if flag in ("--slurm-partition", "--slurm-cpus-per-job", "--slurm-extra")]
    if settings.kind == "submitit-local" and slurm_only:
        verb = "applies" if len(slurm_only) == 1 else "apply"
        print(f"note: submitit-local runs the jobs as processes here and ignores {', '.join(slurm_only)}, which "
              f"{verb} under --executor slurm", file=sys.stderr)
    axes = parse_axes({name: getattr(args, name, None) for name in SPEC_FIELDS})
    if args.profile:
        axes["profile"] = [True]
    config = merge(config, axes, repeats=args.repeats, order_seed=args.order_seed, out=args.out,
                   timeout=args.timeout, data_dir=args.data_dir, sample_hz=args.sample_hz,
                   allocator_path=args.allocator_path)
    opts = config.options
    args.out, args.data_dir = opts.get("out") or "reports/sweep", opts.get("data_dir")
    args.timeout, args.sample_hz = opts.get("timeout"), opts.get("sample_hz")
    from .measure.ledger import JOBS_DIR, POINTS_DIR

    _check_io(args, create=not args.dry_run, also=(POINTS_DIR, JOBS_DIR))
    specs = config.specs()
    hosts = max(spec.nnodes for spec in specs)
    if hosts > 1 and settings.kind != "slurm":
        raise UsageError(f"--nnodes {hosts} needs hosts that only --executor slurm gives a sweep (one job over "
                         f"{hosts} nodes); on hosts of your own, start `vaebench run --nnodes {hosts} --node-rank R "
                         "--rdzv-endpoint HOST:PORT` on each")
    out = Path(args.out)
    allocator_path = str(opts.get("allocator_path") or "")
    _check_allocator_path(allocator_path, [spec.allocator for spec in specs])
    # Slurm's nodes are not this machine: only what can run nowhere is skipped here.
    here = settings.kind != "slurm"
    plan = schedule([(specs, config.repeats)], out=out, data_dir=args.data_dir, force=args.force,
                    caps=capabilities(probe_torch=any(spec.device != "cpu" for spec in specs),
                                      allocator_path=allocator_path) if here else None,
                    order_seed=config.order_seed, prepare=not args.dry_run)
    _print_skipped(plan.skipped)
    for short in dict.fromkeys(spec.steps_short() for spec in specs):
        if short:
            print(f"warning: {short}", file=sys.stderr)
    history = history_of(out)
    total_s = sum(estimate_s(p.point.spec, history) for p in plan.todo)
    print(f"sweep: {counted(len(specs) - len(plan.skipped), 'configuration')} x {counted(config.repeats, 'repeat')} = "
          f"{counted(len(plan.planned), 'run')}; {plan.done} already in {out}, {len(plan.todo)} to run, "
          f"about {format_duration(total_s)}")
    if args.dry_run:
        for p in plan.todo[:DRY_RUN_LINES]:
            print(f"  {p.point.spec.display_label()} #{p.point.repeat + 1}  "
                  f"~{format_duration(estimate_s(p.point.spec, history))}  ({p.data.source})")
        if len(plan.todo) > DRY_RUN_LINES:
            print(f"  ... and {len(plan.todo) - DRY_RUN_LINES:,} more")
        return EXIT_OK
    options = RunOptions(out=out, timeout=args.timeout, sample_hz=args.sample_hz,
                         sweep=opts.get("name") or (Path(args.config).stem if args.config else "cli"),
                         allocator_path=allocator_path)
    if settings.submitit:
        return _sweep_on_jobs(plan.planned, plan.todo, options, settings)
    cluster.plan(out, plan.planned, options.sweep, "local", plan.todo)  # for --status
    if not plan.todo:
        print(f"sweep: nothing left to run: every point has a successful run in {out}")
        print(f"next: vaebench report {out}")
        return EXIT_OK
    outcome = run_points(plan.todo, options, force=args.force)
    failed = len(outcome.failed)
    print(f"sweep: {counted(len(outcome.records), 'run')} recorded in {out / 'runs.jsonl'}, {failed} failed"
          + (f", {outcome.held_elsewhere} left to another sweep" if outcome.held_elsewhere else ""))
    outcome.raise_if_interrupted()
    print(f"next: vaebench report {out}")
    return EXIT_FAILED if failed else EXIT_OK


def _sweep_on_jobs(planned: Sequence[Planned], todo: Sequence[Planned], options: RunOptions,
                   settings: ExecutorSettings) -> int:
    """Submit the points without an ok record as jobs, then follow them until each has a record."""
    from ._format import counted
    from .measure import cluster

    out = options.out
    busy = cluster.in_flight(out, todo)
    entries = cluster.plan(out, planned, options.sweep, settings.kind,
                           [p for p in todo if (p.point.spec.key(), p.point.repeat) not in busy])
    if busy:
        print(f"sweep: {counted(len(busy), 'point')} already {'has' if len(busy) == 1 else 'have'} a job queued "
              "or running; left to it")
    if not entries:
        print(f"sweep: nothing to submit; `vaebench sweep --status {out}` lists every point")
        return EXIT_OK
    limit = settings.parallel()
    for warning in (cluster.crowding(entries, settings), cluster.unsized(entries, settings)):
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    submitted = cluster.submit(out, entries, settings, options)
    print(f"sweep: {counted(len(entries), 'job')} through {settings.kind}, "
          f"{f'{limit} at a time' if limit else 'as many at once as Slurm allows'}; logs in {out / 'jobs'}")
    follow_hint = (f"follow them with `vaebench sweep --status {out}` (and `vaebench report {out}` when they are "
                   f"done); cancel them with `{submitted.cancel}`")
    try:
        followed = cluster.follow(out, submitted)
    except STOPS as stop:  # Ctrl-C, or SIGTERM/SIGHUP
        raise Interrupted(signal_of(stop), f"stopped following; the jobs keep running: {follow_hint}") from None
    print(f"sweep: {counted(len(followed.rows), 'run')} recorded in {out}, {followed.failed} failed"
          + (f", {followed.unsubmitted} never submitted (the queue was stopped)" if followed.unsubmitted else ""))
    print(f"next: vaebench report {out}")
    return EXIT_FAILED if followed.failed or followed.unsubmitted else EXIT_OK


def _sweep_status(out: Path, *, as_json: bool = False) -> int:
    from .measure import cluster, ledger

    if not out.is_dir():
        raise UsageError(f"{out}: no such results folder")
    statuses = cluster.status(out)
    if not statuses:
        raise UsageError(f"{out}: no sweep plan here (no {ledger.POINTS_DIR}/ folder); run `vaebench sweep --out "
                         f"{out} ...` first")
    print(json.dumps(ledger.status_json(statuses), indent=2) if as_json else ledger.format_status(statuses))
    return EXIT_OK


DRY_RUN_LINES = 200  # points a dry run lists; past them it counts


def _print_skipped(skipped: Sequence[Skipped]) -> None:
    for item in skipped:
        print(f"skip {item.spec.display_label()}: {item.reason}", file=sys.stderr)


CALIBRATE_EPILOG = (
    "The sweep file gives the configuration; its `out` does not apply here: the A/A runs go to --out, "
    "apart from the sweep's results. Exit status: 0 the report was printed; 1 a run failed (the report "
    "covers the runs that succeeded, when there are two or more); 2 usage error: a bad option, a sweep "
    "file that does not expand to exactly one configuration, or one that cannot run here."
)


def _add_calibrate(sub: SubParsers) -> None:
    parser = _command(
        sub, "calibrate",
        "Measure this machine's noise: run one configuration repeatedly (A/A), then print each "
        "metric's noise floor, the smallest slowdown compare detects at 3 to 20 repeats, and a "
        "threshold and repeat count to use. Resumable: runs already in --out are kept.",
        _cmd_calibrate,
    )
    parser.epilog = CALIBRATE_EPILOG
    parser.add_argument("--config", required=True,
                        help="a sweep file that expands to exactly one configuration, e.g. benchmarks/ci.toml")
    parser.add_argument("--repeats", type=int, default=10,
                        help="A/A runs of the configuration (default: 10; fewer give an uncertain floor)")
    parser.add_argument("--threshold", type=parse_fraction, default=REGRESSION_THRESHOLD, metavar="T",
                        help="the threshold to advise repeats for, as 10%% or 0.1 "
                        f"(default: {REGRESSION_THRESHOLD:.0%}%)")
    add_io_options(parser, out_default="reports/calibrate")


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from ._format import counted
    from .analysis.calibration import calibrate_folder, recommend
    from .machine import capabilities
    from .measure.execution import run_points, schedule
    from .measure.run import RunOptions
    from .sweep import check_repeats, load_config

    check_repeats(args.repeats, "--repeats", least=2)  # A/A: two runs or more to see any noise
    _check_io(args, create=False)
    config = load_config(args.config)
    specs = config.specs()
    if len(specs) != 1:
        labels = "; ".join(s.display_label() for s in specs[:4]) + ("; ..." if len(specs) > 4 else "")
        raise UsageError(f"{args.config} expands to {len(specs)} configurations ({labels}); calibrate measures "
                         "one: give each [grid] field a single value")
    _check_io(args)  # the folder is made only for a file that will run
    out = Path(args.out)
    plan = schedule([(specs, args.repeats)], out=out, data_dir=args.data_dir,
                    caps=capabilities(probe_torch=specs[0].device != "cpu"))
    if plan.skipped:
        raise UsageError(f"{args.config}: cannot run here: {plan.skipped[0].reason}")
    print(f"calibrate: {args.repeats} A/A runs of {specs[0].display_label()}; "
          f"{plan.done} already in {out}, {len(plan.todo)} to run")
    options = RunOptions(out=out, timeout=args.timeout, sample_hz=args.sample_hz, sweep="calibrate")
    outcome = run_points(plan.todo, options)
    outcome.raise_if_interrupted()
    result = calibrate_folder(out, plan.planned[0].point.spec.key(), args.repeats, config.repeats)
    for line in result.failed:
        print(f"failed: {line}", file=sys.stderr)
    if result.left_out:
        print(f"note: {result.left_out}")
    if result.report is None:
        print(f"calibrate: only {counted(result.ok, 'successful run')}; the noise needs 2 or more", file=sys.stderr)
        return EXIT_FAILED
    if result.warning:
        print(f"WARNING: {result.warning}")
    print(result.report.to_text(threshold=args.threshold))
    print(recommend(result.report, config.repeats, source=f"the repeats {args.config} runs, as its CI job would"))
    return EXIT_FAILED if result.failed else EXIT_OK


REPRODUCE_EPILOG = (
    "A claim file (TOML) holds the published rows, the configuration they ran and the relations "
    "to check, with tolerances; the format is documented in docs/claims.md, and the default claim "
    "is vaebench/reproduce/claims/blog-3090.toml. Exit status: 0 the runs finished (whatever the verdicts), "
    "1 a run failed, 2 bad usage or a bad claim file."
)


def _add_reproduce(sub: SubParsers) -> None:
    parser = _command(
        sub, "reproduce",
        "Reproduce a published GPU-vs-CPU comparison (by default the blog's RTX 3090 vs 20-core CPU): "
        "the claim's configuration on every device here, a CPU thread sweep and what-if runs, then the "
        "table with the published rows, relation by relation, the findings and a report folder.",
        _cmd_reproduce,
    )
    parser.epilog = REPRODUCE_EPILOG
    parser.add_argument("--quick", action="store_true",
                        help="one epoch per run and no thread sweep: a first look in a minute or two")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of the seed runs, to fit a time budget; the report says so "
                        "(default: the claim's, 10 for the blog; --quick: 1)")
    parser.add_argument("--claim", default=None, metavar="FILE",
                        help="claim file to check (default: the packaged blog-3090; format: docs/claims.md)")
    parser.add_argument("--device", default=None,
                        help="run on this device only: cpu, cuda:N (default: every CUDA GPU and the CPU)")
    parser.add_argument("--data", default=None, choices=list(DATA_SOURCES),
                        help="data source (default: auto = mnist if on disk, else the embedded 5k digits)")
    parser.add_argument("--samples", type=int, default=None,
                        help=f"samples per epoch (default: {DEFAULT.samples}, MNIST's size, as the claim ran)")
    parser.add_argument("--force", action="store_true",
                        help="measure again the runs already in --out (default: reuse them, like a resumed sweep)")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: judge the claim again on the runs already in --out, as they were planned "
                        "(--quick and --epochs, unless given, are read from the runs); works without torch, e.g. on "
                        "another machine's results")
    add_io_options(parser, out_default="reports/reproduce")


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from ._format import format_duration
    from .machine import capabilities
    from .measure.execution import estimate_s, history_of
    from .measure.run import RunOptions
    from .reproduce import claim as claims
    from .reproduce import plan as reproduce

    _check_io(args)
    for flag in ("epochs", "samples"):
        if getattr(args, flag) is not None:
            _check_field(f"--{flag}", flag, getattr(args, flag))
    if args.quick and args.epochs is not None:
        raise UsageError("--quick runs one epoch: give --quick or --epochs, not both")
    claim = claims.load(args.claim)
    out = Path(args.out)
    outcome = None
    if args.report_only:
        _refuse_beside(args, "--report-only", allowed=("report_only", "claim", "quick", "epochs", "out"))
        given = args.quick or args.epochs is not None
        if not given:  # as the folder's runs were planned
            args.quick, args.epochs = reproduce.sizing_of_folder(claim.run, out)
            sizing = reproduce.sizing_flags(args.quick, args.epochs)
            print(f"judging the runs in {out} as planned {'with ' + sizing if sizing else 'in full'} "
                  "(read from the runs; give --quick or --epochs to choose)")
        plan = reproduce.plan_of_folder(claim.run, out, quick=args.quick, epochs=args.epochs)
        if given:
            reproduce.check_held(claim.run, plan, out, quick=args.quick, epochs=args.epochs)
    else:
        caps = capabilities(probe_torch=args.device != "cpu")  # CUDA is asked through torch
        plan, data = reproduce.prepare(claim.run, caps, device=args.device, quick=args.quick, epochs=args.epochs,
                                       data=args.data, samples=args.samples, data_dir=args.data_dir)
        todo, history = reproduce.remaining(plan, data, out, force=args.force), history_of(out)
        done = len(plan.runs) - len(todo)
        estimate = f", about {format_duration(sum(estimate_s(spec, history) for spec in todo))}"
        left = (f"; all already in {out}, none to run" if not todo
                else f"; {done} already in {out}, {len(todo)} to run{estimate}" if done else estimate)
        print(f"reproduce {claim.name}: {len(plan.runs)} runs on {', '.join(plan.devices)} with {data.source} "
              f"({data.samples:,} samples/epoch){left}"
              + ("" if caps.cuda_devices or args.device else "; no CUDA GPU here, so only the CPU side runs"))
        options = RunOptions(out=out, timeout=args.timeout, sample_hz=args.sample_hz,
                             progress=sys.stderr.isatty(), sweep="reproduce")
        outcome, reused = reproduce.run_plan(plan, data, options, force=args.force)
        outcome.raise_if_nothing_kept(out)
        if reused:
            print(f"reused {reused} runs already in {out} (--force measures them again)")
    comparison, markdown = reproduce.judge(claim, plan, out, quick=args.quick, epochs=args.epochs)
    print()
    print(comparison)
    print(f"\nReport: {markdown} (table: reproduce.csv, figure: reproduce.png; every run: {out / 'report.md'})")
    if outcome is not None:
        outcome.raise_if_interrupted(then="finish")
    return EXIT_FAILED if outcome is not None and outcome.failed else EXIT_OK


TUNE_EPILOG = (
    "Examples: vaebench tune --device cpu --budget 120s; "
    "vaebench tune --device cuda --target-loss 110 --lr-scaling sqrt. "
    "Writes tune.md, tune.json and figures into --out; every isolated run is stored there, so "
    "`vaebench report` works on it. Interrupted, it writes them with the trials that finished and no "
    "recommendation. Exit status: 0 a recommendation, 1 none, 2 bad usage, 130/143/129 interrupted."
)


def _add_tune(sub: SubParsers) -> None:
    from .tune.driver import QUALITY_EPOCHS, TUNE_SAMPLES, TuneSettings
    from .tune.search import INCLUDABLE, LR_SCALINGS

    parser = _command(
        sub, "tune",
        "Find the batch size and pipeline with the highest steady-state samples/s that does not cost "
        "quality: a batch search (powers of two, then a refinement), the loader/workers/threads knobs at "
        "the best batch, and a quality guard that trains the leaders and batch 128 to the same samples.",
        _cmd_tune,
    )
    parser.epilog = TUNE_EPILOG
    group = parser.add_argument_group("what to tune")
    group.add_argument("--device", default=DEFAULT.device, help=f"cpu, cuda, cuda:N or mps (default: {DEFAULT.device})")
    group.add_argument("--budget", default=f"{TuneSettings.budget_s / 60:g}m",
                       help="time for the whole tune, e.g. 120s, 10m (default: %(default)s); "
                       "when it runs out the best so far is reported, and said so")
    group.add_argument("--max-batch", type=int, default=TuneSettings.max_batch,
                       help="largest batch to try (default: %(default)s, and never more than --samples)")
    group.add_argument("--include", default=None, metavar="ITEMS",
                       help=f"also try these knobs, comma list of {', '.join(INCLUDABLE)} (default: none)")
    group.add_argument("--isolated", action="store_true",
                       help="run every batch-search trial as its own process (slower; default: one warm "
                       "screening process, leaders confirmed in isolated runs)")
    for flag in ("--loader", "--threads"):
        group.add_argument(flag, type=int if flag == "--threads" else str, default=None,
                           help=f"start the search from this {flag[2:]} (default: the seed's)")
    quality = parser.add_argument_group("quality guard")
    quality.add_argument("--target-loss", type=float, default=None,
                         help="also report time to this loss; the candidate reaching it first wins (default: none)")
    quality.add_argument("--lr-scaling", choices=LR_SCALINGS, default="none",
                         help="learning rate for batch b: 1e-3, times b/128 (linear) or sqrt(b/128) (default: none)")
    quality.add_argument("--quality-samples", type=int, default=None,
                         help=f"samples each candidate trains on (default: {QUALITY_EPOCHS} epochs of --samples)")
    quality.add_argument("--tolerance", type=parse_fraction, default=TuneSettings.tolerance,
                         help="how much worse than batch 128's loss a pick may be, as 2%% or 0.02 "
                         f"(default: {TuneSettings.tolerance:.0%}%)")
    data = parser.add_argument_group("input and output")
    data.add_argument("--data", default=None, help=f"data source: {', '.join(DATA_SOURCES)} (default: auto)")
    data.add_argument("--samples", type=int, default=TUNE_SAMPLES,
                      help=f"samples per epoch (default: {TUNE_SAMPLES})")
    data.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    data.add_argument("--out", default="reports/tune", help="results folder (default: reports/tune)")
    parser.set_defaults(timeout=None, sample_hz=SAMPLE_HZ)


def _cmd_tune(args: argparse.Namespace) -> int:
    from .machine import capabilities
    from .measure.run import RunOptions, check, prepare_data
    from .spec import MAX_SAMPLES, MAXIMUMS
    from .sweep import check_number, check_whole
    from .tune.driver import TuneSettings, minimum_budget_s, tune
    from .tune.report import format_table, trials_frame, write
    from .tune.search import REFERENCE_BATCH, START_BATCH, parse_budget, parse_include

    budget, include = parse_budget(args.budget), parse_include(args.include)
    if budget < minimum_budget_s():
        raise UsageError(f"--budget {args.budget} cannot fit a tune: the search, and the quality guard's runs of "
                         f"the reference batch and a candidate, need at least {minimum_budget_s():g}s")
    if args.target_loss is not None and not check_number(args.target_loss, "--target-loss") > 0:
        raise UsageError(f"--target-loss must be positive, got {args.target_loss:g}")
    _check_field("--samples", "samples", args.samples)
    if args.samples < REFERENCE_BATCH:
        raise UsageError(f"--samples must be at least {REFERENCE_BATCH}, the seed's batch, which the quality guard "
                         f"trains as its yardstick; got {args.samples}")
    check_whole(args.max_batch, "--max-batch", least=START_BATCH, most=MAX_SAMPLES, why="a batch is at most an epoch")
    if args.quality_samples is not None:
        most_epochs = MAXIMUMS["epochs"][0]
        check_whole(args.quality_samples, "--quality-samples", least=1, most=most_epochs * args.samples,
              why=f"{most_epochs:,} epochs of --samples")
    fixed = {k: getattr(args, k) for k in ("loader", "threads", "data") if getattr(args, k) is not None}
    base = dataclasses.replace(DEFAULT, device=args.device, samples=args.samples, **fixed)
    _check_io(args)
    caps = capabilities(probe_torch=base.device != "cpu")
    check(base, caps)
    base, data = prepare_data(base, args.data_dir)
    settings = TuneSettings(base=base, budget_s=budget, max_batch=args.max_batch,
                            target_loss=args.target_loss, lr_scaling=args.lr_scaling, include=include,
                            quality_samples=args.quality_samples, tolerance=args.tolerance, isolated=args.isolated)
    print(f"tune: {base.device}, {data.source} ({data.samples} samples/epoch), budget {budget:g} s", file=sys.stderr)
    result = tune(settings, data, RunOptions(out=Path(args.out)), caps)
    result.raise_if_nothing_kept()
    print(format_table(trials_frame(result)))
    print(f"\nrecommendation: {'' if result.recommendation.trial else 'none: '}{result.recommendation.reason}")
    for line in [*result.recommendation.rejected, result.search.memory_note(), *result.notes]:
        print(f"  {line}")
    written = write(result, Path(args.out))
    result.raise_if_interrupted(written)
    print(f"wrote {written}; next: vaebench report {args.out}")
    return EXIT_OK if result.recommendation.trial is not None else EXIT_FAILED


LADDER_EPILOG = (
    "Examples: vaebench ladder --device cuda; vaebench ladder --device cuda --rungs seed,cuda-graphs,max-autotune; "
    "vaebench ladder --device cpu --steps 40 --no-profile (a rehearsal: the CUDA-only rungs are skipped). "
    "Writes ladder.md, ladder.csv and ladder.png into --out beside every run's record and report.md. "
    "Resumable: rungs already in --out are reused. Exit status: 0 every rung ran, 1 a rung failed, 2 bad usage."
)


DEFAULT_LADDER: dict[str, Any] = {"device": "cuda", "epochs": DEFAULT.epochs, "steps": None, "data": "auto",
                                  "samples": DEFAULT.samples}


def _add_ladder(sub: SubParsers) -> None:
    from .reproduce.ladder import DEFAULT_RUNGS, RUNG_NAMES

    parser = _command(
        sub, "ladder",
        "Climb from the seed's idle GPU to a busy one, one knob per rung (pinned tensor loader, device loader, "
        "--sync epoch, --cuda-graphs, --adam compiled, compile reduce-overhead), each rung with the seed's "
        "hyperparameters; print "
        "training time, samples/s, GPU utilization, trace busy share, kernels per step and final loss per rung.",
        _cmd_ladder,
    )
    parser.epilog = LADDER_EPILOG
    group = parser.add_argument_group("the ladder")
    group.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda; with --report-only, "
                       "the device the folder's ladder ran on)")
    group.add_argument("--rungs", default=None, metavar="NAMES",
                       help=f"comma list from {', '.join(RUNG_NAMES)} (default: {','.join(DEFAULT_RUNGS)}; "
                       "with --report-only, those the folder holds)")
    group.add_argument("--epochs", type=int, default=None,
                       help=f"epochs of every timed rung (default: {DEFAULT.epochs}, the seed's)")
    group.add_argument("--steps", type=int, default=None, help="stop every timed rung after this many steps "
                       "(default: all epochs; for rehearsals)")
    group.add_argument("--repeats", type=int, default=1, help="timed runs of every rung (default: 1)")
    group.add_argument("--no-profile", dest="profile", action="store_false",
                       help="skip the short profiled run of every rung (no busy share, no kernels per step)")
    group.add_argument("--force", action="store_true", help="rerun rungs already in --out")
    group.add_argument("--report-only", action="store_true",
                       help="run nothing: rebuild ladder.md from the runs already in --out, with the device, "
                       "epochs, steps, data and samples they ran with unless given here (no torch needed)")
    group.add_argument("--data", default=None, choices=list(DATA_SOURCES), help="data source (default: auto)")
    group.add_argument("--samples", type=int, default=None,
                       help=f"samples per epoch (default: {DEFAULT.samples})")
    add_io_options(parser, out_default="reports/ladder")


def _cmd_ladder(args: argparse.Namespace) -> int:
    from ._format import counted
    from .machine import capabilities
    from .measure.execution import SweepOutcome, run_points, schedule
    from .measure.run import RunOptions
    from .reproduce import ladder
    from .storage import read_rows, runs_table
    from .sweep import check_repeats

    _check_io(args, create=False)
    rungs = ladder.pick([n.strip() for n in args.rungs.split(",") if n.strip()] if args.rungs else None)
    check_repeats(args.repeats, "--repeats")
    for flag in ("epochs", "samples", "steps"):
        if getattr(args, flag) is not None:
            _check_field(f"--{flag}", flag, getattr(args, flag))
    out = Path(args.out)
    given = {name: getattr(args, name) for name in ladder.FOLDER_SETTINGS}
    records, table = None, None  # with --report-only, the folder read once for its settings, rungs and report
    if args.report_only:  # what the command line leaves out, the folder's ladder says
        _refuse_beside(args, "--report-only", allowed=("report_only", "rungs", "profile", "out", *given))
        records = read_rows(out)
        table = runs_table(records)
        given = {name: ran if given[name] is None else given[name]
                 for name, ran in ladder.settings_of_folder(out, table).items()}
    settings: dict[str, Any] = {name: DEFAULT_LADDER[name] if value is None else value for name, value in given.items()}
    base = ladder.seed_base(**settings)
    if args.report_only and not args.rungs:
        rungs = ladder.rungs_of_folder(base, table)
    plan = ladder.make_plan(base, rungs, profile=args.profile)
    outcome, skipped = SweepOutcome(), []
    if args.report_only:
        data = base.data
    else:
        runs = schedule([([s for _, s in plan.timed], args.repeats), ([s for _, s in plan.profiled], 1)], out=out,
                        data_dir=args.data_dir, caps=capabilities(probe_torch=base.device != "cpu"), force=args.force)
        _check_io(args)  # made once some rung can run here
        cannot = {item.spec: item.reason for item in runs.skipped}
        idle = {rung.name: cannot[spec] for rung, spec in plan.timed if spec in cannot}
        for name, reason in idle.items():  # once a rung, not once for its timed and once for its profiled run
            print(f"skip rung {name}: {reason}", file=sys.stderr)
        ours = {spec for rung, spec in (*plan.timed, *plan.profiled) if rung.name in idle}
        _print_skipped([item for item in runs.skipped if item.spec not in ours])
        skipped = [item.reason for item in runs.skipped]
        climbing = f"{len(rungs) - len(idle)} of {len(rungs)} rungs" if idle else counted(len(rungs), "rung")
        print(f"ladder: {climbing} on {base.device}, {counted(len(runs.planned), 'run')}; {runs.done} already in "
              f"{out}, {len(runs.todo)} to run")
        options = RunOptions(out=out, timeout=args.timeout, sample_hz=args.sample_hz, sweep="ladder")
        outcome = run_points(runs.todo, options, force=args.force)
        outcome.raise_if_nothing_kept(out)
        data = runs.planned[0].point.spec.data
    # The plan's specs carry data=auto; the records carry the resolved source.
    text, path = ladder.report_folder(dataclasses.replace(base, data=data), rungs, out, profile=args.profile,
                                      skipped=skipped, records=records)
    print(text)
    print(f"wrote {path} and {out / 'report.md'}")
    outcome.raise_if_interrupted(then="finish")
    return EXIT_FAILED if outcome.failed else EXIT_OK


COMMANDS: list[Callable[[SubParsers], None]] = [
    _add_run, _add_sweep, _add_env, _add_report, _add_compare, _add_calibrate, _add_reproduce, _add_tune,
    _add_ladder,
]


if __name__ == "__main__":
    sys.exit(main())
