"""The ladder: from the seed's idle GPU to a busy one, one knob per rung.

Every rung keeps the seed's hyperparameters (batch 128, Adam 1e-3, the same samples in the
same order) and adds one knob to the rung below it, so the step from one rung to the next is
what that knob is worth. Each rung runs twice: once for time (the full epochs, unprofiled) and
once, short and profiled, for the trace's busy fraction and kernels per step, since a profiler
window inside the timed run would cost the top rung more than its whole training.

Pure planning and tables here; running goes through `execution.run_points`. No torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._format import counted, fmt, markdown_table, text_table
from ..analysis.attribution import share_of_step
from ..errors import UsageError
from ..result import OK
from ..spec import DEFAULT, RunSpec, format_value
from .findings import rung_steps

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

PROFILE_STEPS = 20  # kernels per step and busy fraction over this many steps
PROFILED_RUN_STEPS = 60  # warm-up (10), the profiler window, and steps after it
LOSS_TOLERANCE = 0.01  # a rung's final loss may differ from the seed rung's by this share


@dataclass(frozen=True)
class Rung:
    name: str
    knob: str  # what a user adds on the command line to climb to this rung
    changes: tuple[tuple[str, Any], ...]  # run fields, cumulative from the seed configuration

    def spec(self, base: RunSpec) -> RunSpec:
        return dataclasses.replace(base, **dict(self.changes))


_DEVICE_EPOCH = (("loader", "device"), ("sync", "epoch"))
RUNGS: tuple[Rung, ...] = (
    Rung("seed", "(the seed: reference loader, loss.item() every step)", ()),
    Rung("pinned-tensor", "--loader tensor --pin-memory", (("loader", "tensor"), ("pin_memory", True))),
    Rung("device-loader", "--loader device", (("loader", "device"),)),
    Rung("sync-epoch", "--sync epoch", _DEVICE_EPOCH),
    Rung("cuda-graphs", "--cuda-graphs", (*_DEVICE_EPOCH, ("cuda_graphs", True))),
    Rung("compiled-adam", "--adam compiled", (*_DEVICE_EPOCH, ("cuda_graphs", True), ("adam", "compiled"))),
    Rung("reduce-overhead", "--compile reduce-overhead (instead of --cuda-graphs)",
         (*_DEVICE_EPOCH, ("compile", "reduce-overhead"))),
    Rung("max-autotune", "--compile max-autotune (instead of --cuda-graphs)",
         (*_DEVICE_EPOCH, ("compile", "max-autotune"))),
)
RUNG_NAMES = tuple(rung.name for rung in RUNGS)
# Asked for by name: on an H200, max-autotune searched for 197 s and its step was no faster than eager.
DEFAULT_RUNGS = tuple(name for name in RUNG_NAMES if name != "max-autotune")


def pick(names: Sequence[str] | None) -> list[Rung]:
    """The rungs named, in ladder order; UsageError names an unknown one."""
    if names is None:
        names = DEFAULT_RUNGS
    unknown = [n for n in names if n not in RUNG_NAMES]
    if unknown:
        raise UsageError(f"unknown rung {unknown[0]!r}; choose from {', '.join(RUNG_NAMES)}")
    return [rung for rung in RUNGS if rung.name in names]


@dataclass(frozen=True)
class LadderPlan:
    timed: tuple[tuple[Rung, RunSpec], ...]
    profiled: tuple[tuple[Rung, RunSpec], ...]

    def specs(self) -> list[RunSpec]:
        return [spec for _, spec in (*self.timed, *self.profiled)]


def make_plan(base: RunSpec, rungs: Sequence[Rung], *, profile: bool = True) -> LadderPlan:
    timed = tuple((rung, rung.spec(base)) for rung in rungs)
    profiled = tuple(
        (rung, dataclasses.replace(spec, profile=True, profile_steps=PROFILE_STEPS, steps=PROFILED_RUN_STEPS))
        for rung, spec in timed
    ) if profile else ()
    return LadderPlan(timed, profiled)


def seed_base(device: str, *, epochs: int = DEFAULT.epochs, **fields: Any) -> RunSpec:
    return dataclasses.replace(DEFAULT, device=device, epochs=epochs, **fields)


COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("train_s", "train s", "{:.2f}"),
    ("samples_per_s", "samples/s", "{:,.0f}"),
    ("speedup", "vs seed (train s)", "{:.1f}x"),
    ("gpu_util_mean", "NVML util %", "{:.0f}"),
    ("busy_fraction", "trace busy %", "{:.0f}"),
    ("busy_of_step", "busy % of step", "{:.0f}"),
    ("kernels_per_step", "kernels/step", "{:.0f}"),
    ("compile_s", "compile s", "{:.1f}"),
    ("train_less_compile_s", "train s w/o compile", "{:.2f}"),
    ("final_loss", "final loss", "{:.2f}"),
    ("loss_delta", "loss vs seed", "{:+.2%}"),
)


TRACE_COLUMNS = ("profile_busy_fraction", "profile_busy_ms_per_step", "profile_kernels_per_step")


def table(plan: LadderPlan, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per rung: the timed run's medians over its ok repeats, the profiled run's trace."""
    import pandas as pd

    ok = runs[runs["status"] == OK] if not runs.empty else runs
    profiled = {rung.name: spec for rung, spec in plan.profiled}
    rows = []
    for rung, spec in plan.timed:
        mine = ok[ok["spec_key"] == spec.key()] if not ok.empty else ok
        row: dict[str, Any] = {"rung": rung.name, "knob": rung.knob, "runs": len(mine)}
        for column in ("train_s", "samples_per_s", "gpu_util_mean", "compile_s", "final_loss", "real_s",
                       "step_median_ms", *TRACE_COLUMNS):
            row[column] = _median(mine, column)
        trace = ok[ok["spec_key"] == profiled[rung.name].key()] if rung.name in profiled and not ok.empty else None
        traced = {c: _median(trace, c) if trace is not None else row[c] for c in TRACE_COLUMNS}
        row["busy_fraction"] = 100 * traced["profile_busy_fraction"]
        row["busy_of_step"] = 100 * share_of_step(traced["profile_busy_ms_per_step"], row["step_median_ms"])
        row["kernels_per_step"] = _device_kernels(spec, traced["profile_kernels_per_step"])
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["train_less_compile_s"] = frame["train_s"] - frame["compile_s"].fillna(0.0)
    seed = frame.iloc[0]
    frame["speedup"] = seed["train_s"] / frame["train_s"]
    frame["loss_delta"] = frame["final_loss"] / seed["final_loss"] - 1
    return frame.drop(columns=[*TRACE_COLUMNS, "step_median_ms"])


def _device_kernels(spec: RunSpec, per_step: float) -> float:
    """The trace's kernels per step where the profiler recorded device kernels (CUDA); NaN
    elsewhere: a CPU run's record counts 0, which would read as a measured zero."""
    return per_step if spec.is_cuda else math.nan


def step_notes(plan: LadderPlan, runs: pd.DataFrame) -> list[str]:
    """What each rung took away from the step, from the timed runs' steady step and split."""
    ok = runs[runs["status"] == OK] if not runs.empty else runs
    rows = []
    for _, spec in plan.timed:
        mine = ok[ok["spec_key"] == spec.key()] if not ok.empty else ok
        if not mine.empty:
            rows.append(mine.sort_values("started_at").iloc[-1].to_dict())
    return [finding.text for finding in rung_steps(rows)]


def base_rung(frame: pd.DataFrame) -> str:
    """The rung the others are compared with: the seed, or the lowest one a partial ladder ran."""
    return str(frame["rung"].iloc[0]) if not frame.empty else "seed"


def loss_notes(frame: pd.DataFrame, tolerance: float = LOSS_TOLERANCE) -> list[str]:
    """Rungs whose final loss strays from the base rung's by more than the tolerance."""
    strays = frame[frame["loss_delta"].abs() > tolerance] if "loss_delta" in frame else frame.iloc[0:0]
    base = base_rung(frame)
    return [f"{row.rung}: final loss {row.final_loss:.2f} is {row.loss_delta:+.2%} from the {base} rung's, past the "
            f"{tolerance:.0%} tolerance: this knob changes the training, not only its speed"
            for row in strays.itertuples()]


def cells(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    base = base_rung(frame)
    headers = ["rung", "knob", *[header.replace("seed", base) for _, header, _ in COLUMNS]]
    rows = [[str(r["rung"]), str(r["knob"]), *[fmt(r.get(c), spec) for c, _, spec in COLUMNS]]
            for r in frame.to_dict("records")]
    return headers, rows


def render_text(frame: pd.DataFrame) -> str:
    return text_table(*cells(frame))


def render_markdown(frame: pd.DataFrame, *, device: str, length: str, profiled: bool, gpu_name: str,
                    notes: Sequence[str]) -> str:
    """`length`: how long every timed rung trained ("10 epoch(s)", "30 steps"); `profiled`: whether
    each rung also had its short profiled run."""
    trace = (f"`trace busy %` and `kernels/step` come from a separate profiled run of {PROFILED_RUN_STEPS} steps "
             "per rung; `busy % of step` sets that trace's device time per step beside the timed run's median "
             "step, since the profiler slows the host but not the kernels. " if profiled else
             "No rung had a profiled run here (--no-profile), so the trace columns are empty. ")
    base = base_rung(frame)
    lines = [
        f"# The ladder on {gpu_name or device}",
        "",
        f"Each rung adds one knob to the rung above it; every rung trains {length} with the seed's "
        "hyperparameters (batch 128, Adam 1e-3) on the same samples in the same order. `train s` is the training "
        "loop alone (no process start, no data preparation, no device warm-up; compile time included, and "
        "`train s w/o compile` less dynamo's and inductor's `compile s`), and "
        f"`vs {base} (train s)` is the {base} rung's `train s` over this rung's: a compiled rung can be slower by "
        "it and faster in samples/s, which are the steady state's. " + trace +
        "NVML's utilization is the share of time any kernel ran, averaged over the training window after its "
        "first step (which holds compilation and CUDA-graph capture).",
        "",
        markdown_table(*cells(frame)),
        "",
        "![samples/s and GPU utilization per rung](ladder.png)",
    ]
    if notes:
        lines += ["", "## Notes", "", *[f"- {note}" for note in notes]]
    return "\n".join(lines) + "\n"


def figure(frame: pd.DataFrame, where: str = "") -> Figure | None:
    """A staircase of samples/s per rung, NVML utilization and trace busy share on a second axis;
    a rung with no successful run (skipped, failed or not reached) says so in its place. `where`:
    the device and the run length."""
    from matplotlib.figure import Figure

    if frame.empty:
        return None
    fig = Figure(figsize=(max(6.0, 1.3 * len(frame) + 2), 4.5))
    ax = fig.subplots()
    x = list(range(len(frame)))
    rates = frame["samples_per_s"].astype(float)
    ax.bar(x, rates.fillna(0.0), color="C0", label="samples/s (steady state)")
    for position, rate in zip(x, rates, strict=True):
        if not math.isfinite(rate):
            ax.text(position, 0, "no successful\nrun here", ha="center", va="bottom", fontsize=8, color="grey")
    ax.set_ylabel("samples/s (steady state)")
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:,.0f}")
    ax.set_xticks(x, [str(r) for r in frame["rung"]], rotation=20, ha="right", fontsize=8)
    right = ax.twinx()
    shares = [(column, label, style) for column, label, style in (
        ("gpu_util_mean", "NVML utilization %", {"color": "C1", "marker": "o"}),
        ("busy_fraction", "trace busy %", {"color": "C2", "marker": "s", "linestyle": "--"}),
    ) if frame[column].notna().any()]
    for column, label, style in shares:
        right.plot(x, frame[column], label=label, **style)  # type: ignore[arg-type]
    right.set_ylim(0, 105)
    right.set_ylabel(" and ".join(label for _, label, _ in shares) or "%")
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(handles, [str(h.get_label()) for h in handles], loc="upper left", fontsize=8)
    ax.set_title(f"The ladder{f' ({where})' if where else ''}: each rung adds one knob")
    fig.tight_layout()
    return fig


def write(frame: pd.DataFrame, folder: Path, *, device: str, length: str, profiled: bool, gpu_name: str,
          notes: Sequence[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "ladder.csv", index=False)
    fig = figure(frame, f"{gpu_name or device}, {length} a rung")
    if fig is not None:
        fig.savefig(folder / "ladder.png", dpi=110, bbox_inches="tight")
    path = folder / "ladder.md"
    path.write_text(render_markdown(frame, device=device, length=length, profiled=profiled, gpu_name=gpu_name,
                                    notes=notes), encoding="utf-8")
    return path


FOLDER_SETTINGS = ("device", "epochs", "steps", "data", "samples")


def settings_of_folder(folder: Path, runs: pd.DataFrame) -> dict[str, Any]:
    """The device, epochs, steps, data and samples the ladder in `folder` (its `runs`, as
    `storage.load_runs` reads them) timed its rungs with (the most common value of each; None
    where unset), to rebuild its plan without running."""
    mine = runs[runs["sweep"] == "ladder"] if "sweep" in runs else runs
    if mine.empty:
        raise UsageError(f"{folder}: no ladder runs to report on")
    timed = mine[~mine["profile"].astype(bool)] if "profile" in mine else mine
    timed = mine if timed.empty else timed

    def most_common(name: str) -> Any:
        if name not in timed:
            return None
        values = timed[name].dropna().mode()
        return None if values.empty else values.iloc[0]

    found = {name: most_common(name) for name in FOLDER_SETTINGS}
    return {name: (int(value) if name in ("epochs", "steps", "samples") and value is not None else value)
            for name, value in found.items()}


def rungs_of_folder(base: RunSpec, runs: pd.DataFrame) -> list[Rung]:
    """The rungs, in ladder order, that a folder's `runs` hold timed runs of (failed ones too), on
    the ladder that `base` starts; the default rungs where they hold none."""
    keys = set(runs["spec_key"]) if "spec_key" in runs else set()
    found = [rung for rung in RUNGS if rung.spec(base).key() in keys]
    return found or pick(None)


def report_folder(base: RunSpec, rungs: Sequence[Rung], folder: Path, *, profile: bool, skipped: Sequence[str] = (),
                  records: list[dict[str, Any]] | None = None) -> tuple[str, Path]:
    """ladder.md, .csv and .png and the folder's report from the runs of this ladder in `folder`;
    returns the table and notes as text, and the Markdown's path. `records` are the folder's
    records where the caller has read them (`storage.read_rows`); else they are read here, once."""
    from .. import storage
    from ..analysis.export import write_report
    from ..analysis.report import build_report

    plan = make_plan(base, rungs, profile=profile)
    records = storage.read_rows(folder) if records is None else records
    runs = storage.runs_table(records)
    frame = table(plan, runs)
    notes = [*step_notes(plan, runs), *loss_notes(frame), *[f"skipped here: {r}" for r in dict.fromkeys(skipped)]]
    if not frame.empty and not frame["runs"].any():
        notes.append(f"no run in {folder} matches these rungs on {base.device} with epochs={base.epochs}, "
                     f"steps={format_value(base.steps)}, samples={base.samples}: give the settings the ladder ran with")
    gpu = str(runs["fp_gpu_name"].dropna().iloc[-1]) if "fp_gpu_name" in runs and base.is_cuda else ""
    length = f"{base.steps} steps" if base.steps is not None else counted(base.epochs, "epoch")
    path = write(frame, folder, device=base.device, length=length, profiled=bool(plan.profiled), gpu_name=gpu,
                 notes=notes)
    write_report(build_report(folder, records=records))
    return "\n".join([render_text(frame), *[f"note: {note}" for note in notes]]), path


def _median(frame: pd.DataFrame | None, column: str) -> float:
    if frame is None or frame.empty or column not in frame:
        return math.nan
    values = frame[column].dropna()
    return float(values.median()) if not values.empty else math.nan
