"""How often does the CI check cry wolf, and how often does it miss a real slowdown?

    python benchmarks/false_alarms.py --tries 20 --threshold 5% --metric samples_per_s --work /tmp/vaebench-fa

The experiment behind issue 5's "done when", run as CI would run it, from the outside:

* Two snapshots of the package are taken from one git revision (`--ref`, default HEAD) into
  `WORK/base` and `WORK/planted`, so edits to the working tree during the experiment cannot
  leak in. The planted copy's `loop.py` gets a busy-wait at the end of every training step
  lasting `--slowdown` (default 10 %) of that step's own duration: a real, honest slowdown
  of the measured code, outside the product code.
* Each try runs three sides of `--config` (default benchmarks/ci.toml): A and A' from the
  base snapshot, P from the planted one, interleaved run by run (round r runs repeat r of
  each side, in a rotating order), as the CI recipe in docs/ci.md interleaves baseline and
  candidate. Every side is a fresh results folder filled by `python -m vaebench.cli sweep`
  started inside its snapshot with PYTHONPATH pointing at it; `child_process_env` then puts
  that snapshot first on the training child's path (checked before the first try).
* A vs A' is the A/A check (it passes when `vaebench compare` exits 0); A vs P is the
  planted check (caught when it exits 1). Exit status 2 counts as neither and is shown.

Not collected by pytest (no `test_` prefix). It prints one line per try and the running
counts, so a partial log is still a result. `--analyze` runs nothing: it compares the
finished tries of an existing `--work` folder again, e.g. with another `--threshold` or
`--metric`, to see what a different rule would have decided on the same runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ANCHOR = "            t_f = clock()\n"
PLANT = (
    ANCHOR
    + "            _planted_end = clock() + PLANTED_SLOWDOWN * (t_f - t_a)  # planted by false_alarms.py\n"
    + "            while clock() < _planted_end:\n"
    + "                pass\n"
    + "            t_f = clock()\n"
)
CLOCK_LINE = "Clock = Callable[[], float]\n"  # a module-level line of loop.py to define the slowdown before
SIDES = ("A", "A2", "P")


@dataclass
class Tally:
    aa_pass: int = 0
    aa_done: int = 0
    caught: int = 0
    planted_done: int = 0
    errors: int = 0
    side_s: list[float] = field(default_factory=list)


def snapshot(ref: str, dest: Path) -> None:
    """The package at `ref`, extracted with `git archive` (no working-tree edits)."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as tar:
        subprocess.run(["git", "archive", ref, "vaebench"], cwd=REPO, stdout=tar, check=True)
        tar.seek(0)
        with tarfile.open(fileobj=tar) as archive:
            archive.extractall(dest, filter="data")


def plant(root: Path, slowdown: float) -> None:
    path = root / "vaebench" / "train" / "loop.py"
    text = path.read_text()
    if text.count(ANCHOR) != 1:
        raise SystemExit(f"{path}: expected one `t_f = clock()` line to plant after, found {text.count(ANCHOR)}")
    text = text.replace(ANCHOR, PLANT)
    text = text.replace(CLOCK_LINE, f"PLANTED_SLOWDOWN = {slowdown!r}\n{CLOCK_LINE}", 1)
    path.write_text(text)


def env_for(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root)
    return env


def verify(root: Path, planted: bool) -> None:
    """The CLI and the training child started from `root` both import `root`'s package."""
    code = (
        "import vaebench.train.loop as loop\n"
        "from vaebench.measure.child_env import child_process_env\n"
        "from vaebench.spec import RunSpec\n"
        "print(loop.__file__); print(child_process_env(RunSpec())['PYTHONPATH'].split(':')[0]);"
        "print(hasattr(loop, 'PLANTED_SLOWDOWN'))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env_for(root),
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0].startswith(str(root)), f"{root}: the CLI imports {out[0]}"
    assert out[1] == str(root), f"{root}: the child's path starts with {out[1]}"
    assert out[2] == str(planted), f"{root}: planted={out[2]}, expected {planted}"


def run_side(root: Path, config: Path, out: Path, repeats: int) -> float:
    """One more repeat of a side: the sweep resumes, so `--repeats r` runs only repeat r."""
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "vaebench.cli", "sweep", "--config", str(config), "--out", str(out),
         "--repeats", str(repeats)],
        cwd=root, env=env_for(root), capture_output=True, text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"sweep in {out} failed ({done.returncode}): {done.stdout[-500:]}{done.stderr[-500:]}")
    return time.monotonic() - start


def compare(
    baseline: Path, candidate: Path, threshold: str, metrics: list[str], folder: Path
) -> tuple[int, dict[str, object]]:
    report = folder / f"compare-{baseline.name}-{candidate.name}.json"
    report.unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "vaebench.cli", "compare", str(baseline), str(candidate),
         "--threshold", threshold, "--json", str(report), *(["--metric", *metrics] if metrics else [])],
        cwd=REPO, capture_output=True, text=True,
    )
    payload = json.loads(report.read_text()) if report.exists() else {}
    return done.returncode, payload


def changes(payload: dict[str, object]) -> str:
    checks = payload.get("checks", [])
    assert isinstance(checks, list)
    return ", ".join(f"{c['label']} {c['change']:+.1%} p={c['p_value']:.3g} {c['verdict']}" for c in checks)


def one_try(index: int, args: argparse.Namespace, roots: dict[str, Path], tally: Tally) -> None:
    folder = args.work / f"try-{index:02d}"
    outs = {side: folder / side for side in SIDES}
    seconds = dict.fromkeys(SIDES, 0.0)
    for repeat in range(1, args.repeats + 1):
        shift = (index + repeat) % len(SIDES)
        for side in SIDES[shift:] + SIDES[:shift]:  # rotate who goes first each round
            seconds[side] += run_side(roots[side], args.config, outs[side], repeat)
    tally.side_s.extend(seconds.values())
    judge(index, args, outs, tally, f"sides {' '.join(f'{s} {t:.0f}s' for s, t in seconds.items())}")


def judge(index: int, args: argparse.Namespace, outs: dict[str, Path], tally: Tally, head: str) -> None:
    # A re-analysis writes its JSON apart, leaving the experiment's own beside the runs.
    folder = Path(tempfile.mkdtemp(prefix="fa-analyze-")) if args.analyze else outs["A"].parent
    aa_code, aa = compare(outs["A"], outs["A2"], args.threshold, args.metric, folder)
    p_code, planted = compare(outs["A"], outs["P"], args.threshold, args.metric, folder)
    tally.aa_done += 1
    tally.planted_done += 1
    tally.aa_pass += aa_code == 0
    tally.caught += p_code == 1
    tally.errors += (aa_code == 2) + (p_code == 2)
    print(f"try {index}: {head}", flush=True)
    print(f"  A/A     exit {aa_code}: {changes(aa)}", flush=True)
    print(f"  planted exit {p_code}: {changes(planted)}", flush=True)
    print(f"  so far: A/A passed {tally.aa_pass}/{tally.aa_done}, planted caught "
          f"{tally.caught}/{tally.planted_done}, errors {tally.errors}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=20, help="tries, three sides each (default: 20)")
    parser.add_argument("--config", type=Path, default=REPO / "benchmarks" / "ci.toml",
                        help="sweep file of one side (default: benchmarks/ci.toml)")
    parser.add_argument("--repeats", type=int, default=None, help="runs a side (default: the file's)")
    parser.add_argument("--threshold", default="5%", help="compare's --threshold (default: 5%%)")
    parser.add_argument("--metric", action="append", default=[],
                        help="compare's --metric, repeatable (default: compare's own, samples/s and epoch time)")
    parser.add_argument("--analyze", action="store_true",
                        help="run nothing: compare the finished tries in --work again")
    parser.add_argument("--slowdown", type=float, default=0.10, help="planted share of a step (default: 0.10)")
    parser.add_argument("--ref", default="HEAD", help="git revision to snapshot (default: HEAD)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "vaebench-false-alarms",
                        help="scratch folder; must not exist yet (default: $TMPDIR/vaebench-false-alarms)")
    args = parser.parse_args(argv)
    args.config = args.config.resolve()
    if args.repeats is None:
        import tomllib

        args.repeats = int(tomllib.loads(args.config.read_text()).get("repeats", 1))
    if args.analyze:
        return analyze(args)
    if args.work.exists():
        parser.error(f"{args.work} exists; give a fresh --work")
    base, planted = args.work / "base", args.work / "planted"
    snapshot(args.ref, base)
    snapshot(args.ref, planted)
    plant(planted, args.slowdown)
    verify(base, planted=False)
    verify(planted, planted=True)
    roots = {"A": base, "A2": base, "P": planted}
    print(f"{args.tries} tries x 3 sides of {args.config.name} ({args.repeats} runs a side, interleaved), "
          f"threshold {args.threshold}, planted slowdown {args.slowdown:.0%} of every step, "
          f"snapshots of {args.ref} in {args.work}", flush=True)
    tally = Tally()
    try:
        for index in range(1, args.tries + 1):
            one_try(index, args, roots, tally)
    except KeyboardInterrupt:
        print("interrupted: the counts below are over the finished tries", flush=True)
    if tally.side_s:
        print(f"side duration: median {statistics.median(tally.side_s):.0f} s, "
              f"min {min(tally.side_s):.0f} s, max {max(tally.side_s):.0f} s over {len(tally.side_s)} sides")
    print(f"A/A (identical code) passed {tally.aa_pass} of {tally.aa_done}; "
          f"planted {args.slowdown:.0%} slowdown caught {tally.caught} of {tally.planted_done}; "
          f"exit-2 errors {tally.errors}")
    return 0


def analyze(args: argparse.Namespace) -> int:
    tally = Tally()
    for folder in sorted(args.work.glob("try-*")):
        outs = {side: folder / side for side in SIDES}
        runs = [len((outs[s] / "runs.jsonl").read_text().splitlines()) if (outs[s] / "runs.jsonl").exists() else 0
                for s in SIDES]
        if min(runs) < args.repeats:
            print(f"{folder.name}: unfinished ({runs} runs), left out")
            continue
        judge(int(folder.name.split("-")[1]), args, outs, tally, "re-analyzed")
    print(f"threshold {args.threshold}, metrics {' '.join(args.metric) or 'compare default'}: "
          f"A/A passed {tally.aa_pass} of {tally.aa_done}; planted caught {tally.caught} of {tally.planted_done}; "
          f"exit-2 errors {tally.errors}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
