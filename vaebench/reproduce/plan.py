"""`vaebench reproduce`: the plan of runs behind a claim, and running it.

The plan, per device here (each CUDA GPU, then the CPU with all its cores):
- the seed run: the claim's configuration (for the blog, the seed program's: reference
  loader, batch 128, 10 epochs, lr 1e-3, torch's default threads), once. `--quick` runs one
  epoch instead.
- the what-if runs: on the CPU the `tensor` and `device` loaders, on a GPU the ladder's
  rungs (pinned tensor loader, device loader, --sync epoch, --cuda-graphs, compile
  reduce-overhead), each for `SHORT_EPOCHS`, against a run of the claim's configuration of the
  same length on the same device, so that a speed-up compares runs measured the same way.
  Under `--quick` that short run is the seed run itself.
- on the CPU, one what-if per preloadable allocator found here (jemalloc, tcmalloc).
- unless `--quick`, a CPU thread sweep of short runs at 1, 2, 4, ... threads up to the
  logical core count and twice that (oversubscribed), since only rates, the sys/user
  ratio and the kernel-time counters matter there; each thread count also runs with
  `--omp-wait-policy passive` and `active`. The point at torch's default thread count is
  the short run above, so it runs once.

Runs already in the results folder (same configuration) are reused, like a resumed sweep;
`--force` measures them again, and the comparison reads each short run as their median.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import storage
from ..errors import UsageError
from ..measure.execution import Planned, SweepOutcome, pending, run_points
from ..measure.run import RunOptions, check, prepare_data, run_once
from ..result import OK, DataInfo
from ..spec import DEFAULT, Capabilities, RunSpec
from ..sweep import Point
from . import ladder

if TYPE_CHECKING:
    import pandas as pd

    from .claim import Claim

SHORT_EPOCHS = 1  # what-if and sweep runs: one epoch of 60,000 samples gives steady rates and CPU times
SEED, BASELINE, SWEEP, WHAT_IF, POLICY = "seed", "baseline", "sweep", "what-if", "wait-policy"
ROLE_ORDER = (SEED, BASELINE, WHAT_IF, SWEEP, POLICY)  # seed runs first: they are the comparison itself
SWEPT_POLICIES = ("passive", "active")  # beside the runtime's default, at every count of the CPU thread sweep
WHAT_IF_LOADERS = ("tensor", "device")
GPU_WHAT_IFS = ("pinned-tensor", "device-loader", "sync-epoch", "cuda-graphs", "reduce-overhead")  # ladder rungs


@dataclass(frozen=True)
class PlannedRun:
    spec: RunSpec
    roles: tuple[str, ...]  # a run can serve several: the quick seed run is also the baseline


@dataclass(frozen=True)
class Plan:
    runs: tuple[PlannedRun, ...]
    devices: tuple[str, ...]
    quick: bool

    def with_role(self, role: str) -> list[RunSpec]:
        return [run.spec for run in self.runs if role in run.roles]


def devices_here(cuda_devices: int) -> list[str]:
    return [f"cuda:{i}" for i in range(cuda_devices)] + ["cpu"]


def thread_counts(cores: int) -> list[int]:
    """1, 2, 4, ... below `cores`, then `cores` itself and twice it: oversubscribed, as a
    default thread count that counts hyperthreads or another process's cores would be."""
    counts, t = [], 1
    while t < cores:
        counts.append(t)
        t *= 2
    return [*counts, max(cores, 1), 2 * max(cores, 1)]


def make_plan(
    run: Mapping[str, Any],
    devices: Sequence[str],
    *,
    quick: bool,
    data: str,
    epochs: int | None = None,
    samples: int = DEFAULT.samples,
    cores: int = 1,
    default_threads: int = 1,
    allocators: Sequence[str] = (),
) -> Plan:
    """The runs for `devices`; `run` holds the claim's run fields over vaebench's defaults.

    `default_threads` is the thread count torch picks on its own (the physical cores): the
    sweep point at that count is the default-threads run and is not run a second time.
    `epochs` sizes the seed runs (default: the claim's; `quick` means one). `allocators` are
    the preloadable ones this machine has, each a CPU what-if.
    """
    base = dataclasses.replace(DEFAULT, **run, data=data, samples=samples).normalized()
    roles: dict[RunSpec, list[str]] = {}

    def add(spec: RunSpec, role: str) -> None:
        entry = roles.setdefault(spec, [])
        if role not in entry:
            entry.append(role)

    for device in devices:
        seed_epochs = SHORT_EPOCHS if quick else epochs or base.epochs
        seed = dataclasses.replace(base, device=device, epochs=seed_epochs)
        short = dataclasses.replace(seed, epochs=SHORT_EPOCHS)
        add(seed, SEED)
        add(short, BASELINE)
        if device.startswith("cuda"):
            for rung in ladder.pick(GPU_WHAT_IFS):
                add(rung.spec(short), WHAT_IF)
        else:
            for loader in WHAT_IF_LOADERS:
                if loader != base.loader:
                    add(dataclasses.replace(short, loader=loader), WHAT_IF)
            for allocator in allocators:
                if allocator != base.allocator:
                    add(dataclasses.replace(short, allocator=allocator), WHAT_IF)
        if device == "cpu" and not quick:
            for threads in thread_counts(cores):
                same = short.threads == threads or (short.threads is None and threads == default_threads)
                point = short if same else dataclasses.replace(short, threads=threads)
                add(point, SWEEP)
                for policy in SWEPT_POLICIES:
                    if policy != point.omp_wait_policy:
                        add(dataclasses.replace(point, omp_wait_policy=policy), POLICY)
    ordered = sorted(roles.items(), key=lambda item: min(ROLE_ORDER.index(r) for r in item[1]))
    return Plan(tuple(PlannedRun(spec, tuple(r)) for spec, r in ordered), tuple(devices), quick)


def prepare(
    run: Mapping[str, Any],
    caps: Capabilities,
    *,
    device: str | None,
    quick: bool,
    epochs: int | None,
    data: str | None,
    samples: int | None,
    data_dir: str | None,
) -> tuple[Plan, DataInfo]:
    """The plan for this machine (every CUDA GPU and the CPU, or `device`), its data prepared;
    raises UsageError when a device or the data cannot be had."""
    import psutil

    devices = [device] if device else devices_here(caps.cuda_devices)
    base = dataclasses.replace(DEFAULT, **run, data=data or "auto",
                               samples=samples if samples is not None else DEFAULT.samples)
    for name in devices:
        check(dataclasses.replace(base, device=name), caps)
    base, info = prepare_data(base, data_dir)
    plan = make_plan(run, devices, quick=quick, data=base.data, samples=base.samples, epochs=epochs,
                     cores=caps.logical_cores, default_threads=psutil.cpu_count(logical=False) or 1,
                     allocators=caps.allocators)
    return plan, info


def plan_of_folder(run: Mapping[str, Any], folder: Path, *, quick: bool, epochs: int | None = None) -> Plan:
    """The plan that filled a results folder, rebuilt from its records (devices, data, samples,
    the CPU's cores and torch's default threads there), to report on it again without running."""
    return make_plan(run, quick=quick, epochs=epochs, **_planned_on(_runs_of(folder), folder))


def _runs_of(folder: Path) -> pd.DataFrame:
    """The folder's records; where it holds none, the error names the command that fills it."""
    try:
        return storage.load_runs(folder)
    except storage.NoResults:
        raise storage.NoResults(f"no results at {folder}: run `vaebench reproduce --out {folder}` first "
                                "(--report-only judges the runs already there)") from None


def _planned_on(runs: pd.DataFrame, folder: Path) -> dict[str, Any]:
    """What a folder's reproduce records say `make_plan` was given, but for its sizing."""
    mine = runs[runs["sweep"] == "reproduce"] if "sweep" in runs else runs
    if mine.empty:
        raise UsageError(f"{folder}: no reproduce runs in this folder")
    cpu = mine[mine["device"] == "cpu"]
    first = (cpu if not cpu.empty else mine).iloc[0]
    used = mine["allocator"].dropna() if "allocator" in mine else []
    return {"devices": sorted(set(mine["device"]), key=lambda d: (d == "cpu", d)), "data": str(first["data"]),
            "samples": int(first["samples"]), "cores": int(first.get("fp_logical_cores") or 1),
            "default_threads": int(first.get("fp_physical_cores") or 1),
            "allocators": sorted({str(a) for a in used} - {"system"})}


def sizing_of_folder(run: Mapping[str, Any], folder: Path) -> tuple[bool, int | None]:
    """The --quick and --epochs that planned a folder's reproduce runs: the largest plan the folder
    holds every run of or, where it holds no plan whole, the one most of its runs belong to (the
    full plan on a tie). A quick plan's runs are part of the full one's, hence the largest."""
    runs = _runs_of(folder)
    planned_on = _planned_on(runs, folder)
    keys = set(runs["spec_key"]) if "spec_key" in runs else set()
    mine = runs[runs["sweep"] == "reproduce"] if "sweep" in runs else runs
    ran = sorted({int(e) for e in mine["epochs"].dropna()}) if "epochs" in mine else []
    sizings: list[tuple[bool, int | None]] = [(False, None), (True, None), *((False, epochs) for epochs in ran)]
    plans = [make_plan(run, quick=quick, epochs=epochs, **planned_on).runs for quick, epochs in sizings]
    held = [sum(planned.spec.key() in keys for planned in plan) for plan in plans]
    whole = [i for i, plan in enumerate(plans) if plan and held[i] == len(plan)]
    best = max(whole, key=lambda i: len(plans[i])) if whole else max(range(len(plans)), key=lambda i: held[i])
    return sizings[best]


def sizing_flags(quick: bool, epochs: int | None) -> str:
    """`--quick`, `--epochs 3`, or empty for the claim's own length."""
    return " ".join(["--quick"] * quick + [f"--epochs {epochs}"] * (epochs is not None))


def check_held(run: Mapping[str, Any], plan: Plan, folder: Path, *, quick: bool, epochs: int | None) -> None:
    """Refuse to judge a folder on a plan whose seed runs it lacks: the table would hold no
    measured row, and reproduce.md would be overwritten with nothing. The error says how the
    folder's runs were planned."""
    held = set(_runs_of(folder)["spec_key"])
    missing = [spec for spec in plan.with_role(SEED) if spec.key() not in held]
    if not missing:
        return
    given = sizing_flags(quick, epochs) or "in full"
    lacks = ", ".join(f"{spec.device} {spec.epochs} epoch{'' if spec.epochs == 1 else 's'}" for spec in missing)
    found = sizing_of_folder(run, folder)
    if found == (quick, epochs):
        again = " ".join(["vaebench reproduce", sizing_flags(quick, epochs)]).strip()
        raise UsageError(f"--report-only {given}: {folder} lacks seed runs of that plan ({lacks}); run `{again}` "
                         "again without --report-only to finish them")
    holds = f"with {sizing_flags(*found)}" if any(found) else "in full (no --quick, no --epochs)"
    raise UsageError(f"--report-only {given}: {folder} holds no seed run of that plan ({lacks}); its runs were "
                     f"planned {holds}: give that, or neither --quick nor --epochs to read it from the runs")


def _planned(plan: Plan, data: DataInfo) -> list[Planned]:
    return [Planned(Point(run.spec, 0), data) for run in plan.runs]


def remaining(plan: Plan, data: DataInfo, out: Path, *, force: bool = False) -> list[RunSpec]:
    """The plan's runs that `run_plan` would run: those without a successful run in `out`, or all."""
    todo, _ = pending(_planned(plan, data), out, force)
    return [planned.point.spec for planned in todo]


def judge(claim: Claim, plan: Plan, folder: Path, *, quick: bool, epochs: int | None) -> tuple[str, Path]:
    """Judge the claim on the folder's runs of `plan`; write reproduce.md and the folder's report.
    Returns the comparison as text and the Markdown's path."""
    from ..analysis.export import write_report
    from ..analysis.report import build_report
    from . import report

    comparison = report.compare(claim, collect(plan, folder), quick=quick, epochs=epochs,
                                cuda_devices=sum(d.startswith("cuda") for d in plan.devices))
    markdown = report.write(comparison, folder)
    write_report(build_report(folder))
    return report.render_text(comparison), markdown


def run_plan(
    plan: Plan,
    data: DataInfo,
    options: RunOptions,
    *,
    force: bool = False,
    report: Callable[[str], None] = print,
) -> tuple[SweepOutcome, int]:
    """Run what the folder lacks (everything with `force`); return the outcome and the reused count."""
    todo, reused = pending(_planned(plan, data), options.out, force)
    # run_once is looked up here, at call time, so that tests can stand in a fake runner.
    return run_points(todo, options, force=force, report=report, run=run_once), reused


def collect(plan: Plan, folder: str | Path) -> pd.DataFrame:
    """The folder's successful records of each planned run, oldest first (several where `--force`
    measured it again), or where none succeeded its latest record, each with its `roles`
    ("seed,baseline")."""
    import pandas as pd

    runs = storage.load_runs(folder)
    rows = []
    for run in plan.runs:
        mine = runs[runs["spec_key"] == run.spec.key()] if not runs.empty else runs
        if mine.empty:
            continue
        ok = mine[mine["status"] == OK].sort_values("started_at", kind="stable")
        kept = ok if not ok.empty else mine.sort_values("started_at", kind="stable").iloc[-1:]
        rows += [record | {"roles": ",".join(run.roles)} for record in kept.to_dict("records")]
    return pd.DataFrame(rows)
