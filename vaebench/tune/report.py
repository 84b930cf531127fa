"""What a tune leaves behind: the trials table, two figures, `tune.md` and `tune.json`.

Figures follow plots.py's habit: a frame in, a matplotlib Figure out (None when the data
cannot show it), no pyplot state.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from .._format import fmt_auto, markdown_table
from ..rules import NVML_UTIL_PERIOD_S
from ..spec import format_value
from .driver import TuneResult
from .search import ALLOC_PEAK, DEVICE_MEM, REFERENCE_BATCH, RSS_PEAK, Quality, pipeline_label

SEARCH_STAGES = ("climb", "refine")
# Measured only on some devices or stages; a column that no trial filled is left out of tables.
MEASURES = ("gpu_util_pct", "alloc_peak_mb", "device_mem_mb", "rss_peak_mb")
MEMORY_COLUMNS = {
    "alloc_peak_mb": f"the {ALLOC_PEAK} (tensors only; the screen's trials)",
    "device_mem_mb": f"the {DEVICE_MEM} (isolated CUDA runs)",
    "rss_peak_mb": f"the process's {RSS_PEAK} (isolated runs)",
}
UTIL_NOTE = ("NVML utilization.gpu, mean over each trial's training steps: the share of time any kernel ran, "
             "not how much of the GPU the kernels used; `-` where a trial trained for less than "
             f"{NVML_UTIL_PERIOD_S:g} s, shorter than the period NVML averages over.")
FIGURES = {"tune_throughput.png": "throughput", "tune_loss.png": "loss"}


TRIAL_COLUMNS = (
    "stage", "batch", "loader", "threads", "workers", "pin", "compile", "amp", "adam", "allocator", "wait_policy",
    "pipeline", "lr", "samples_per_s", "gpu_util_pct", "alloc_peak_mb", "device_mem_mb", "rss_peak_mb",
    "loss_at_budget", "time_to_target_s", "status", "run_id",
)


def trials_frame(result: TuneResult) -> pd.DataFrame:
    """One row per trial, `TRIAL_COLUMNS`; a tune with no trial (its search process died before
    the first) gives the columns with no row."""
    target = result.settings.target_loss
    rows = []
    for t in result.trials:
        rows.append({
            "stage": t.stage,
            "batch": t.batch,
            "loader": t.spec.loader,
            "threads": format_value(t.spec.threads),
            "workers": t.spec.workers,
            "pin": format_value(t.spec.pin_memory),
            "compile": t.spec.compile,
            "amp": t.spec.amp,
            "adam": t.spec.adam,
            "allocator": t.spec.allocator,
            "wait_policy": t.spec.omp_wait_policy,
            "pipeline": pipeline_label(t.spec),
            "lr": t.spec.lr,
            "samples_per_s": t.samples_per_s,
            "gpu_util_pct": t.gpu_util,
            "alloc_peak_mb": t.alloc_peak_mb,
            "device_mem_mb": t.device_mem_mb,
            "rss_peak_mb": t.rss_peak_mb,
            # Only the quality runs train to the sample budget: another stage's loss is at its own length.
            "loss_at_budget": t.final_loss if t.stage == "quality" else math.nan,
            "time_to_target_s": Quality(t, target).time_to_target_s if t.stage == "quality" else math.nan,
            "status": t.status if t.ok else f"failed: {t.reason}",
            "run_id": t.run_id,
        })
    return pd.DataFrame(rows, columns=list(TRIAL_COLUMNS))


def throughput_figure(frame: pd.DataFrame, first_oom: int | None) -> Figure | None:
    """Samples/s (and GPU utilization, when measured) against batch size, the memory boundary drawn."""
    ok = frame[frame["samples_per_s"].notna()]
    if ok.empty:
        return None
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    ax = figure.subplots()
    search = ok[ok["stage"].isin(SEARCH_STAGES)].sort_values("batch")
    ax.plot(search["batch"], search["samples_per_s"], "o-", label=f"batch search (short trials, {_pipelines(search)})")
    for color, (stage, marker) in enumerate((("confirm", "s"), ("knob", "^"), ("quality", "D")), start=1):
        part = ok[ok["stage"] == stage]
        if not part.empty:
            what = "one knob changed each" if stage == "knob" else _pipelines(part)
            ax.scatter(part["batch"], part["samples_per_s"], marker=marker, color=f"C{color}",
                       label=f"{stage} (isolated runs, {what})", zorder=3)
    if first_oom is not None:
        ax.axvline(first_oom, color="C3", linestyle="--", label=f"out of memory at {first_oom}")
        ax.axvspan(first_oom, max(first_oom * 2, frame["batch"].max()), color="C3", alpha=0.1)
    ax.set_xscale("log", base=2)
    sizes = sorted({int(b) for b in ok["batch"]})
    ax.set_xticks(sizes, [str(b) for b in sizes])
    ax.set_xlabel("batch size")
    ax.set_ylabel("samples/s (steady state)")
    ax.set_title("Throughput against batch size")
    if ok["gpu_util_pct"].notna().any():
        util = ok[ok["gpu_util_pct"].notna()].sort_values("batch")
        twin = ax.twinx()
        twin.plot(util["batch"], util["gpu_util_pct"], "x:", color="C7", label="GPU utilization (NVML)")
        twin.set_ylabel("GPU utilization (%)")
        twin.set_ylim(0, 105)
        twin.legend(loc="lower right")
    ax.legend(loc="upper left")
    return figure


def _pipelines(part: pd.DataFrame) -> str:
    """The pipelines a set of trials ran, for a legend: the points differ in them as well as in batch."""
    return "; ".join(dict.fromkeys(str(p) for p in part["pipeline"]))


def loss_figure(frame: pd.DataFrame, tolerance: float) -> Figure | None:
    """Loss at the sample budget against batch size, with the guard's tolerance band."""
    quality = frame[(frame["stage"] == "quality") & frame["loss_at_budget"].notna()].sort_values("batch")
    if quality.empty:
        return None
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    ax = figure.subplots()
    ax.plot(quality["batch"], quality["loss_at_budget"], "D-")
    reference = quality[quality["batch"] == REFERENCE_BATCH]
    if not reference.empty:
        loss = float(reference["loss_at_budget"].iloc[0])
        ax.axhline(loss, color="C2", label=f"batch {REFERENCE_BATCH}")
        ax.axhspan(loss, loss * (1 + tolerance), color="C2", alpha=0.15, label=f"within {tolerance:.0%}")
        ax.legend()
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("loss at the sample budget (last epoch's mean)")
    ax.set_title("Quality at an equal number of samples")
    return figure


def write(result: TuneResult, out: Path) -> Path:
    """Figures, tune.json and tune.md into `out`; returns tune.md's path."""
    out.mkdir(parents=True, exist_ok=True)
    frame = trials_frame(result)
    figures = {
        "tune_throughput.png": throughput_figure(frame, result.search.first_oom),
        "tune_loss.png": loss_figure(frame, result.settings.tolerance),
    }
    drawn = []
    for name, figure in figures.items():
        if figure is not None:
            figure.savefig(out / name, dpi=110)
            drawn.append(name)
    (out / "tune.json").write_text(json.dumps(_json(result), indent=2) + "\n")
    path = out / "tune.md"
    path.write_text(render_markdown(result, frame, drawn), encoding="utf-8")
    return path


def render_markdown(result: TuneResult, frame: pd.DataFrame, figures: list[str]) -> str:
    s, rec = result.settings, result.recommendation
    lines = ["# vaebench tune", ""]
    lines.append(f"Device {s.base.device}, data {s.base.data} ({s.base.samples} samples/epoch), "
                 f"budget {s.budget_s:g} s (took {result.wall_s:.0f} s), lr scaling {s.lr_scaling}, "
                 f"quality budget {s.quality_budget} samples, tolerance {s.tolerance:.0%}"
                 + (f", target loss {s.target_loss:g}" if s.target_loss is not None else "") + ".")
    lines += ["", "## Recommendation", ""]
    if rec.trial is not None:
        t = rec.trial
        lines.append(f"**batch {t.batch}, {pipeline_label(t.spec)}, lr {t.spec.lr:g}**: {rec.reason}.")
    else:
        lines.append(f"No recommendation: {rec.reason}.")
    lines += [f"- rejected: {why}" for why in rec.rejected]
    lines += ["", f"- batch search: {result.search.stop_reason}", f"- memory: {result.search.memory_note()}"]
    lines += [f"- note: {note}" for note in result.notes]
    if s.base.is_cuda:
        lines += ["", "## GPU utilization per batch size", "", *_utilization(result)]
    shown, shared = shown_trials(frame)
    lines += ["", "## Trials", ""]
    if shared:
        lines += ["Every trial: " + ", ".join(f"{k} {_cell(v)}" for k, v in shared.items()) + ".", ""]
    lines += [_markdown(shown), "", *_memory_legend(shown)]
    lines += [f"![{name}]({name})" for name in figures]
    return "\n".join(lines) + "\n"


def _utilization(result: TuneResult) -> list[str]:
    ok = sorted((t for t in result.trials if t.ok), key=lambda t: (t.batch, t.stage))
    if all(math.isnan(t.gpu_util) for t in ok):
        return ["NVML gave no utilization for any trial (no NVML, or not inside this sandbox)."]
    rows = pd.DataFrame([{"batch": t.batch, "stage": t.stage, "pipeline": pipeline_label(t.spec),
                          "samples_per_s": t.samples_per_s, "gpu_util_pct": t.gpu_util} for t in ok])
    return [_markdown(rows), "", UTIL_NOTE]


def _memory_legend(frame: pd.DataFrame) -> list[str]:
    present = [f"{column} is {what}" for column, what in MEMORY_COLUMNS.items() if column in frame]
    if not present:
        return []
    if len(present) == 1:
        return [f"Memory: {present[0]}.", ""]
    return ["Memory columns measure different things and are not comparable: " + "; ".join(present) + ".", ""]


def _measured(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` without the measure columns that no trial filled (GPU ones on a CPU tune)."""
    empty = [c for c in MEASURES if c in frame and frame[c].isna().all()]
    return frame.drop(columns=empty)


DIGITS = (("samples_per_s", 0), ("gpu_util_pct", 0), ("alloc_peak_mb", 0), ("device_mem_mb", 0),
          ("rss_peak_mb", 0), ("loss_at_budget", 2), ("time_to_target_s", 1))
SHARED_KNOBS = ("lr", "workers", "pin", "compile", "amp", "adam")


def shown_trials(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, object]]:
    """The trials as both tables show them, numbers formatted one way per column, and the knobs
    every trial shares (which say nothing in a column), by value."""
    shared = {c: frame[c].iloc[0] for c in SHARED_KNOBS if c in frame and len(frame) and frame[c].nunique() <= 1}
    shown = _measured(frame).drop(columns=["run_id", "pipeline", *shared], errors="ignore").copy()
    for column, digits in DIGITS:
        if column in shown:
            shown[column] = shown[column].map(lambda v, d=digits: "-" if pd.isna(v) else f"{v:,.{d}f}")
    return shown, shared


def format_table(frame: pd.DataFrame) -> str:
    """The trials table for the terminal."""
    return str(shown_trials(frame)[0].to_string(index=False)) if len(frame) else "no trial finished"


def _markdown(frame: pd.DataFrame) -> str:
    columns = [c for c in frame.columns if c != "run_id"]
    return markdown_table(columns, [[_cell(v) for v in row] for row in frame[columns].itertuples(index=False)])


def _cell(value: object) -> str:
    return fmt_auto(value, missing="-") if isinstance(value, float) else str(value)


def _json(result: TuneResult) -> dict[str, object]:
    rec = result.recommendation
    return {
        "recommendation": rec.trial.to_dict() if rec.trial else None,
        "reason": rec.reason,
        "rejected": list(rec.rejected),
        "stop_reason": result.search.stop_reason,
        "memory": result.search.memory_note(),
        "largest_safe_batch": result.search.largest_safe,
        "first_oom_batch": result.search.first_oom,
        "notes": result.notes,
        "wall_s": result.wall_s,
        "trials": [t.to_dict() for t in result.trials],
    }
