"""Figures of a report, one function each: DataFrames in, a matplotlib Figure out, no file I/O.

Every function returns None when the data lacks the figure's axis (thread scaling with one
thread count, a GPU timeline of CPU runs), so callers draw only what the data can show.
Figures are built on `matplotlib.figure.Figure` directly, which renders through Agg and
leaves pyplot's global state and backend alone.

`summary` is `report.summarize`'s frame: one row per configuration with `config`, the run
fields, and `<metric>_median` / `<metric>_iqr` columns. A figure shows at most `MAX_SHOWN`
configurations (or curves, or runs' legend entries): past it, the fastest and slowest
(`shown.shown`), with `keep` (the baseline's configuration names) among them, and says in its
title how many more summary.csv holds.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogFormatter, MaxNLocator

from ..result import OK
from ..spec import SPEC_FIELDS, format_value
from .kernel import PER_STEP
from .shown import MAX_SHOWN, Shown, shown

if TYPE_CHECKING:
    from matplotlib.typing import ColorType

TIME_PARTS = (
    ("real_s", "real (wall clock)"),
    ("user_s", "user (CPU in user mode)"),
    ("sys_s", "sys (CPU in kernel)"),
)
SPLIT_PARTS = (
    ("split_data_ms", "data wait"),
    ("split_copy_ms", "host-to-device copy"),
    ("split_compute_ms", "compute"),
    ("split_sync_ms", "sync (waiting for the device)"),
)
GPU_PANELS = (
    ("gpu_util", "NVML utilization.gpu (%)\n(share of time any kernel ran)"),
    ("gpu_power_w", "power (W)"),
    ("gpu_mem_mb", "memory used (MB)"),
    ("gpu_sm_clock_mhz", "SM clock (MHz)"),
)
CHAR_IN = 0.08  # the width of one character of a small tick label, in inches
MAX_WIDTH_IN = 20.0  # wider than this, a figure is unreadable on a screen or a page
LOG_SPREAD = 30.0  # bars further apart than this share a log axis: a CPU's beside a GPU's
MARKERS = ("h", "s", "^", "D", "v", "P", "X", "*")  # one per configuration, in turn; "o" open marks a cut epoch
VISIBLE_SHARE = 0.01  # a step part under this share of the tallest bar cannot be seen in it
LOSS_SPAN = 0.02  # a loss axis spans at least 2 % of the loss: the seed-to-seed band is about 1 %
UTIL_NOTE = "NVML utilization.gpu is the share of time any kernel ran, not compute efficiency"
KERNEL_PANELS = (*PER_STEP, ("samples_per_s", "samples/s (steady state)"))
MAX_LOSS_RUNS = 100  # runs the loss figure draws a line each; past this, a median line per configuration
RUN_STYLES = ("-", "--", ":", "-.")  # a timeline's runs of one configuration share its colour: one style each


def time_bars(summary: pd.DataFrame, runs: pd.DataFrame | None = None, keep: Collection[str] = ()) -> Figure | None:
    """Median real, user and sys time per configuration: the seed's `time` view. Dots are runs."""
    if not _has(summary, "real_s_median"):
        return None
    summary, picked = _crowd(summary, keep)
    x = np.arange(len(summary))
    width = 0.27
    figure, ax = _figure(len(summary))
    for i, (column, name) in enumerate(TIME_PARTS):
        offset = (i - 1) * width
        ax.bar(x + offset, summary[f"{column}_median"], width, label=name, color=f"C{i}")
        if runs is not None and column in runs:
            _dots(ax, runs, summary, column, x + offset)
    ax.set_ylabel("seconds (median over repeats)")
    ax.set_title("Real, user and sys time per configuration (dots: single runs)")
    _config_ticks(ax, x, summary)
    ax.set_ylim(top=ax.get_ylim()[1] * 1.25)  # headroom: the legend sits above the bars, not on them
    ax.legend(loc="upper center", ncols=len(TIME_PARTS), fontsize="small")
    _say_left_out(figure, picked)
    return figure


def thread_scaling(summary: pd.DataFrame, keep: Collection[str] = ()) -> Figure | None:
    """Speed-up and parallel efficiency against intra-op threads, with the ideal lines.

    Speed-up is the median steady-state samples/s at each count over that at the fewest threads
    (the training alone, as the what-ifs read it; real time where no run has it, whose start-up
    dilutes a short run's speed-up), within each group of the other fields that vary;
    efficiency is speed-up over the thread ratio. Torch's default threads stand at the count they
    ran with (`ran_threads`).
    """
    if "threads" not in summary:
        return None
    rate = "samples_per_s_median" in summary and summary["samples_per_s_median"].notna().any()
    measure = "samples_per_s_median" if rate else "real_s_median"
    data = ran_threads(summary).dropna(subset=["threads", measure])
    # A group measured at one thread count is a point, not a curve, and its own baseline: leave it out.
    curves = [(name, _curve(g)) for name, g in _groups(data, "threads") if g["threads"].nunique() > 1]
    if not curves:
        return None
    curves, picked = _fewer_curves(curves, keep)
    data = pd.concat([g for _, g in curves])
    figure = Figure(figsize=(11, 4.5), layout="constrained")
    speed_ax, eff_ax = figure.subplots(1, 2)
    least = int(data["threads"].min())
    for name, group in curves:
        ratio = group["threads"] / group["threads"].iloc[0]
        speedup = (group[measure] / group[measure].iloc[0]) if rate else (group[measure].iloc[0] / group[measure])
        speed_ax.plot(group["threads"], speedup, marker="o", label=name)
        eff_ax.plot(group["threads"], speedup / ratio, marker="o", label=name)
    counts = np.sort(data["threads"].unique())
    speed_ax.plot(counts, counts / least, "k--", label="ideal")
    eff_ax.axhline(1.0, color="k", linestyle="--", label="ideal")
    basis = "steady-state samples/s" if rate else "real time"
    speed_ax.set_ylabel(f"speed-up over {least} thread{'s' if least > 1 else ''} ({basis})")
    eff_ax.set_ylabel("parallel efficiency (speed-up / thread ratio)")
    eff_ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    eff_ax.set_ylim(bottom=0)
    speed_ax.set_title("Speed-up against threads")
    eff_ax.set_title("Parallel efficiency against threads")
    for ax in (speed_ax, eff_ax):
        ax.set_xlabel("intra-op threads")
        _thread_ticks(ax, data)
        ax.grid(alpha=0.3)
    _legend_below(figure, (speed_ax, eff_ax), ncols=2)
    _say_left_out(figure, picked)
    return figure


def kernel_counters(summary: pd.DataFrame, keep: Collection[str] = ()) -> Figure | None:
    """sys/user and each kernel-time counter per step against intra-op threads, one line per
    group of the other fields that vary (wait policy, allocator, ...), log-scaled where the
    counters span decades; the usable cores are marked, oversubscription lies to their right."""
    if "threads" not in summary or not _has(summary, "sys_user_median"):
        return None
    data = ran_threads(summary).dropna(subset=["threads", "sys_user_median"])
    if data["threads"].nunique() < 2:
        return None
    curves, picked = _fewer_curves(_groups(data, "threads"), keep)
    data = pd.concat([g for _, g in curves])
    figure = Figure(figsize=(14, 7.5), layout="constrained")
    axes = figure.subplots(2, 3).ravel()
    cores = pd.to_numeric(data.get("fp_usable_cores_median", pd.Series(dtype=float)), errors="coerce").dropna()
    for ax, (column, label) in zip(axes, KERNEL_PANELS, strict=True):
        for name, group in curves:
            group = _curve(group)
            ax.plot(group["threads"], group[f"{column}_median"], marker="o", label=name)
        if len(cores):
            ax.axvline(float(cores.max()), color="grey", linestyle=":", label="usable cores")
        ax.set_xscale("log", base=2)
        _thread_ticks(ax, data)
        ax.set_xlabel("intra-op threads")
        ax.set_title(label, fontsize="medium")
        ax.grid(alpha=0.3)
        if column in ("voluntary_per_step", "runqueue_ms_per_step") and (data[f"{column}_median"] > 0).all():
            ax.set_yscale("log")  # these span decades from one thread to many
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)), fontsize="small")
    figure.suptitle("Where the kernel time goes: counters per step of the training window against threads")
    _say_left_out(figure, picked)
    return figure


def batch_size_scaling(summary: pd.DataFrame, keep: Collection[str] = ()) -> Figure | None:
    """Throughput, GPU utilization (where measured) and final loss against the batch size."""
    if "batch_size" not in summary:
        return None
    data = summary.dropna(subset=["batch_size", "samples_per_s_median"])
    # A group measured at one batch size is a point, not a curve: leave it out.
    curves = [(name, g) for name, g in _groups(data, "batch_size") if g["batch_size"].nunique() > 1]
    if not curves:
        return None
    curves, picked = _fewer_curves(curves, keep)
    data = pd.concat([g for _, g in curves])
    panels = [("samples_per_s_median", "samples/s (steady state)", "Throughput")]
    if _has(data, "gpu_util_mean_median"):
        panels.append(("gpu_util_mean_median", "NVML utilization.gpu (%)", "GPU utilization"))
    panels.append(("final_loss_median", "final training loss", "Final loss"))
    figure = Figure(figsize=(5 * len(panels), 4.5), layout="constrained")
    axes = figure.subplots(1, len(panels))
    sizes = np.sort(data["batch_size"].unique())
    for ax, (column, ylabel, title) in zip(axes, panels, strict=True):
        for name, group in curves:
            group = group.sort_values("batch_size")
            ax.plot(group["batch_size"], group[column], marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(int(s)) for s in sizes])
        ax.set_xlabel("batch size (samples per step)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title} against batch size")
        ax.grid(alpha=0.3)
        if column == "final_loss_median":
            _at_least_span(ax, LOSS_SPAN)
            stepped = "steps" in data and data["steps"].notna().any()
            ax.set_title(f"{title} against batch size\n" + ("(at equal --steps: a larger batch saw more samples)"
                         if stepped else "(at equal epochs: a larger batch took fewer steps)"), fontsize="medium")
    handles, labels = axes[0].get_legend_handles_labels()  # below the panels: inside, it hides the curves
    figure.legend(handles, labels, loc="outside lower center", ncols=min(2, len(labels)), fontsize="small")
    _say_left_out(figure, picked)
    return figure


def _at_least_span(ax: Axes, share: float) -> None:
    """Widen the y-axis to at least `share` of its middle value: autoscale would stretch a
    difference of a few hundredths of a percent over the whole panel."""
    low, high = ax.get_ylim()
    middle = (low + high) / 2
    span = share * abs(middle)
    if high - low < span:
        ax.set_ylim(middle - span / 2, middle + span / 2)


def loss_curves(epochs: pd.DataFrame, summary: pd.DataFrame | None = None,
                keep: Collection[str] = (), colors: Mapping[str, ColorType] | None = None) -> Figure | None:
    """Loss per epoch, and loss against training wall clock (time to quality); a line per run,
    or past `MAX_LOSS_RUNS` runs a line per configuration through its runs' medians.

    `epochs` is `storage.load_epochs`'s frame with a `config` column; runs of one
    configuration share a colour. An epoch that `--steps` cut short (`partial`) has a loss
    over only the steps it ran: it is drawn as an open circle, and the title says so. With
    `summary`, a crowded figure shows the configurations `shown` picks; without, all of them,
    and no legend past `MAX_SHOWN`. `colors` (`config_colors`) gives each configuration the
    colour it has in the report's other figures; without, they are taken in turn.
    """
    if epochs.empty or not _has(epochs, "loss"):
        return None
    picked = loss_shown(epochs, summary, keep)
    configs = list(picked.names)
    if picked.left_out:
        epochs = epochs[epochs["config"].isin(configs)]
    medians = epochs["run_id"].nunique() > MAX_LOSS_RUNS
    if medians:
        epochs = _median_runs(epochs)
    last = int(epochs["epoch"].max())
    # One epoch a run puts every run at x = 1 of a per-epoch panel: only the clock tells them apart.
    # A crowded figure's legend of MAX_SHOWN entries and its note take two inches off the panels.
    figure = Figure(figsize=(11 if last > 1 else 6.5, 6.5 if picked.left_out else 4.5), layout="constrained")
    epoch_ax: Axes | None = None
    if last > 1:
        epoch_ax, time_ax = figure.subplots(1, 2)
    else:
        time_ax = figure.subplots()
    colors = config_colors(configs) if colors is None else colors
    markers = {c: MARKERS[i % len(MARKERS)] for i, c in enumerate(configs)}  # curves that coincide stay apart
    cut = epochs["partial"].fillna(False).astype(bool) if "partial" in epochs else pd.Series(False, epochs.index)
    drawn = [(ax, x) for ax, x in ((epoch_ax, "epoch"), (time_ax, "elapsed_s")) if ax is not None]
    for _, run in epochs.groupby("config" if medians else "run_id", sort=False):
        config = run["config"].iloc[0]
        short = run[cut[run.index]]
        for ax, x in drawn:
            ax.plot(run[x], run["loss"], marker=markers[config], markersize=4, color=colors[config], alpha=0.8)
            if len(short):
                ax.plot(short[x], short["loss"], linestyle="", marker="o", markerfacecolor="none",
                        color=colors[config])
    partial_note = " (open circle: an epoch cut short by --steps)" if cut.any() else ""
    if epoch_ax is not None:
        epoch_ax.set_xlabel("epoch")
        epoch_ax.set_xlim(0.5, last + 0.5)
        if last <= 20:
            epoch_ax.set_xticks(range(1, last + 1))
        else:
            epoch_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        epoch_ax.set_title(f"Loss per epoch{partial_note}")
    time_ax.set_xscale("log")
    for axis_formatter in (time_ax.xaxis.set_major_formatter, time_ax.xaxis.set_minor_formatter):
        axis_formatter(LogFormatter(minor_thresholds=(1, 0.4)))  # 2, 5, 20, not 2x10^0 run together
    time_ax.set_xlabel("training wall clock (s, sum of epoch times; log scale)")
    one = f": one epoch a run{partial_note}" if epoch_ax is None else ""
    time_ax.set_title(f"Time to quality: loss against wall clock{one}")
    for ax, _ in drawn:
        ax.set_ylabel("training loss (epoch mean)")
        ax.grid(alpha=0.3)
        _at_least_span(ax, LOSS_SPAN)
    if len(configs) <= MAX_SHOWN:
        handles = [Line2D([], [], color=colors[c], marker=markers[c], markersize=4, label=c) for c in configs]
        figure.legend(handles=handles, loc="outside lower center", ncols=min(3 if last > 1 else 2, len(configs)),
                      fontsize="small")
    if medians:
        figure.suptitle(f"A line per configuration: the median loss and clock at each epoch over its runs "
                        f"({epochs['runs'].max():.0f} at most)", fontsize="medium")
    _say_left_out(figure, picked)
    return figure


def loss_shown(epochs: pd.DataFrame, summary: pd.DataFrame | None = None, keep: Collection[str] = ()) -> Shown:
    """The configurations `loss_curves` draws, in its order: those of `epochs`, or where they
    are more than `MAX_SHOWN`, those `shown` picks from `summary`."""
    configs = tuple(dict.fromkeys(epochs["config"]))
    if summary is not None:
        picked = shown(summary[summary["config"].isin(configs)], MAX_SHOWN, keep)
        if picked.left_out:
            return picked
    return Shown(configs, len(configs))


def _median_runs(epochs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration and epoch: the median loss and clock over its runs, `partial`
    where any run's epoch was cut short, and how many `runs` there were."""
    cut = epochs["partial"].fillna(False).astype(bool) if "partial" in epochs else pd.Series(False, epochs.index)
    medians = epochs.assign(partial=cut).groupby(["config", "epoch"], sort=False).agg(
        loss=("loss", "median"), elapsed_s=("elapsed_s", "median"), partial=("partial", "any"),
        runs=("run_id", "nunique"))
    return medians.reset_index()


def gpu_timeline(monitors: dict[str, pd.DataFrame], colors: Mapping[str, ColorType] | None = None
                 ) -> Figure | None:
    """GPU utilization, power, memory and clock over time, one line per run; None without GPU data.

    `monitors` maps a legend label to a run's monitor samples (`storage.load_monitor`); `colors`
    maps it to its configuration's colour (`config_colors`), and runs of one configuration then
    differ in line style. Without, each run takes the next colour.
    """
    panels = [(k, label) for k, label in GPU_PANELS if any(_has(m, k) for m in monitors.values())]
    if not any(k == "gpu_util" for k, _ in panels):
        return None
    # Runs line up at the start of training where every series knows it; before it, start-up.
    aligned = all("t_train" in samples for samples in monitors.values())
    clock = "t_train" if aligned else "t"
    figure = Figure(figsize=(11, 2.4 * len(panels) + 1.2), layout="constrained")
    axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    styles = _run_styles(list(monitors), colors)
    for ax, (key, label) in zip(axes, panels, strict=True):
        for name, samples in monitors.items():
            if _has(samples, key) and clock in samples:
                ax.plot(samples[clock], samples[key], label=name, linewidth=1, **styles[name])
        if aligned:
            ax.axvline(0.0, color="black", linewidth=0.8, linestyle=":")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(0, 105)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=2, fontsize="small")
    axes[-1].set_xlabel("time since training started (s; before the dotted line: start-up)" if aligned
                        else "time since the run started (s)")
    figure.suptitle(f"GPU over time\n({UTIL_NOTE})")
    return figure


def _run_styles(names: list[str], colors: Mapping[str, ColorType] | None) -> dict[str, dict[str, Any]]:
    """Each run's line colour and style: its configuration's colour, and a style of its own
    among the runs that share it; no keywords where no colours were given (the next in turn)."""
    if colors is None:
        return {name: {} for name in names}
    earlier: dict[ColorType, int] = {}  # runs already given each colour
    styles: dict[str, dict[str, Any]] = {}
    for name in names:
        color = colors[name]
        styles[name] = {"color": color, "linestyle": RUN_STYLES[earlier.get(color, 0) % len(RUN_STYLES)]}
        earlier[color] = earlier.get(color, 0) + 1
    return styles


def step_split(summary: pd.DataFrame, keep: Collection[str] = ()) -> Figure | None:
    """Where a training step's time goes: data wait, copy, compute, sync, stacked per config."""
    columns = [f"{c}_median" for c, _ in SPLIT_PARTS]
    if not any(_has(summary, c) for c in columns):
        return None
    summary, picked = _crowd(summary, keep)
    x = np.arange(len(summary))
    figure, ax = _figure(len(summary))
    bottom = np.zeros(len(summary))
    parts = {column: summary[f"{column}_median"].fillna(0.0).to_numpy(dtype=float) for column, _ in SPLIT_PARTS}
    tallest = max(sum(parts.values()).max(initial=0.0), 1e-12)
    for i, (column, name) in enumerate(SPLIT_PARTS):
        values = parts[column]
        # A part too thin to see in any bar (a CPU run's copy) is drawn but kept out of the legend.
        shown = name if values.max(initial=0.0) >= VISIBLE_SHARE * tallest else f"_{name}"
        ax.bar(x, values, 0.6, bottom=bottom, label=shown, color=f"C{i}")
        bottom += values
    ax.set_ylabel("ms per step")
    ax.set_title("Where the step time goes (the mean of a run's steps, the median over runs)")
    _config_ticks(ax, x, summary)
    _legend_below(figure, (ax,), ncols=2)
    _say_left_out(figure, picked)
    return figure


def flops_share(summary: pd.DataFrame, keep: Collection[str] = ()) -> Figure | None:
    """Achieved model FLOP/s, a bar per configuration, each with its own measured peak (a device
    or a thread count of its own) as a tick above it and its share of that peak as the label."""
    if not _has(summary, "flops_frac_median"):
        return None
    summary, picked = _crowd(summary, keep)
    x = np.arange(len(summary))
    figure, ax = _figure(len(summary))
    nan = pd.Series(math.nan, index=summary.index)
    achieved = summary.get("model_flops_per_s_median", nan).astype(float) / 1e9
    peak = summary.get("peak_flops_per_s_median", nan).astype(float) / 1e9
    bars = ax.bar(x, achieved.fillna(0.0), 0.6, color="C4", label="achieved")
    ax.hlines(peak, x - 0.35, x + 0.35, colors="black", linewidth=2, label="measured peak")
    shares = [_percent(f) for f in summary["flops_frac_median"].astype(float)]
    ax.bar_label(bars, labels=shares, fontsize="small")
    heights = pd.concat([achieved, peak]).dropna()
    heights = heights[heights > 0]
    if len(heights) and heights.max() / heights.min() > LOG_SPREAD:
        ax.set_yscale("log")
        ax.set_ylabel("GFLOP/s (log scale)")
    else:
        ax.set_ylabel("GFLOP/s")
        ax.margins(y=0.15)
    ax.set_title("Model FLOP/s achieved, against each configuration's measured peak (labels: share of it)")
    _config_ticks(ax, x, summary)
    _legend_below(figure, (ax,), ncols=2)
    _say_left_out(figure, picked)
    return figure


def rank_scaling(summary: pd.DataFrame, keep: Collection[str] = ()) -> Figure | None:
    """Data-parallel runs: samples/s and scaling efficiency against the world size (ranks), with the
    ideal lines. Efficiency is samples/s at N ranks over N x samples/s of one rank at the same
    per-rank batch: from the folder's one-rank row where it has one, else as each run recorded it."""
    if "world_size" not in summary:
        return None
    data = summary.dropna(subset=["world_size", "samples_per_s_median"])
    if data["world_size"].nunique() < 2 and not _has(data, "scaling_efficiency_median"):
        return None
    if data["world_size"].max() < 2:
        return None
    curves, picked = _fewer_curves(_groups(data, "world_size", exclude=("nproc_per_node", "nnodes")), keep)
    figure = Figure(figsize=(11, 4.5), layout="constrained")
    rate_ax, eff_ax = figure.subplots(1, 2)
    for name, group in curves:
        group = group.sort_values("world_size")
        ranks = group["world_size"].astype(float)
        one = group.loc[group["world_size"] == 1, "samples_per_s_median"]
        if len(one):
            efficiency = group["samples_per_s_median"] / (ranks * float(one.iloc[0]))
            rate_ax.plot(ranks, ranks * float(one.iloc[0]), ":", color="grey")
        else:
            efficiency = group.get("scaling_efficiency_median", pd.Series(math.nan, index=group.index))
        rate_ax.plot(ranks, group["samples_per_s_median"], marker="o", label=name)
        eff_ax.plot(ranks, efficiency, marker="o", label=name)
    eff_ax.axhline(1.0, color="k", linestyle="--", label="ideal (100%)")
    rate_ax.set_ylabel("samples/s, all ranks (dotted: N x one rank)")
    eff_ax.set_ylabel("scaling efficiency")
    eff_ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    eff_ax.set_ylim(bottom=0)
    counts = np.sort(data["world_size"].unique())
    for ax, title in ((rate_ax, "Throughput against ranks"), (eff_ax, "Scaling efficiency against ranks")):
        ax.set_xlabel("ranks (world size; per-rank batch fixed)")
        ax.set_xticks(counts, [str(int(c)) for c in counts])
        ax.set_title(title)
        ax.grid(alpha=0.3)
    _legend_below(figure, (rate_ax, eff_ax), ncols=2)
    _say_left_out(figure, picked)
    return figure


def ran_threads(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary with `threads` the intra-op threads each configuration ran with: where it left
    them to torch (threads unset), the count its runs recorded (`fp_torch_threads`), flagged in
    `default_threads`."""
    data = summary.copy()
    asked = pd.to_numeric(data["threads"], errors="coerce")
    ran = pd.to_numeric(data.get("fp_torch_threads_median", pd.Series(math.nan, index=data.index)), errors="coerce")
    data["default_threads"] = asked.isna() & ran.notna()
    data["threads"] = asked.fillna(ran)
    return data


def _curve(group: pd.DataFrame) -> pd.DataFrame:
    """A group's points in thread order, one per count: torch's default ran at a count also set
    by hand is the same point, and the one set by hand is kept."""
    ordered = group.sort_values(["threads", "default_threads"], kind="stable")
    return ordered.drop_duplicates("threads")


def _thread_ticks(ax: Axes, data: pd.DataFrame) -> None:
    """A tick per thread count; a count that torch's default chose reads "2\n(default)"."""
    counts = np.sort(data["threads"].unique())
    chosen = set(data.loc[data["default_threads"], "threads"])
    ax.set_xticks(counts, [f"{int(c)}\n(default)" if c in chosen else str(int(c)) for c in counts])


def _legend_below(figure: Figure, axes: tuple[Axes, ...], ncols: int) -> None:
    """One legend for `axes`, under them: inside an axes it lies on whatever data is there."""
    named: dict[str, Artist] = {}
    for ax in axes:
        handles, labels = ax.get_legend_handles_labels()
        named.update((label, handle) for handle, label in zip(handles, labels, strict=True) if label not in named)
    figure.legend(list(named.values()), list(named), loc="outside lower center", ncols=min(ncols, len(named)),
                  fontsize="small")


def _figure(configs: int) -> tuple[Figure, Axes]:
    figure = Figure(figsize=(min(MAX_WIDTH_IN, max(6.0, 1.1 * configs + 2.5)), 4.8), layout="constrained")
    return figure, figure.subplots()


def _config_ticks(ax: Axes, x: np.ndarray, summary: pd.DataFrame) -> None:
    """Configuration names under their bars: a long one is wrapped at its commas and set upright
    (slanted, wrapped lines run into the next name), the figure widened until the lines fit."""
    names = [str(c) for c in summary["config"]]
    labels = [c.replace(",", ",\n") if len(c) > 24 else c for c in names]
    wrapped = any("\n" in label for label in labels)
    rotation = 30 if len(summary) > 3 and not wrapped else 0
    figure = ax.figure
    if wrapped and isinstance(figure, Figure):
        longest = max(len(line) for label in labels for line in label.splitlines())
        needed = len(labels) * longest * CHAR_IN + 2.5
        if needed > MAX_WIDTH_IN:  # too many to stand side by side: one line each, read sideways
            labels, rotation = names, 90
            figure.set_figheight(figure.get_figheight() + 0.75 * max(map(len, names)) * CHAR_IN)
        figure.set_figwidth(max(figure.get_figwidth(), min(needed, MAX_WIDTH_IN)))
    ax.set_xticks(x, labels, rotation=rotation, ha="right" if rotation == 30 else "center", fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _dots(ax: Axes, runs: pd.DataFrame, summary: pd.DataFrame, column: str, x: np.ndarray) -> None:
    ok = runs[runs["status"] == OK]
    values = pd.to_numeric(ok[column], errors="coerce").dropna()
    per_config = dict(list(values.groupby(ok.loc[values.index, "config"], sort=False)))
    for position, config in zip(x, summary["config"], strict=True):
        found = per_config.get(config, values.iloc[:0])
        ax.plot([position] * len(found), found, "k.", markersize=4)


def _crowd(summary: pd.DataFrame, keep: Collection[str]) -> tuple[pd.DataFrame, Shown]:
    """The rows a bar figure draws (`shown`), in its order."""
    picked = shown(summary, MAX_SHOWN, keep)
    if not picked.left_out:
        return summary, picked
    rows = summary.set_index(summary["config"].astype(str)).loc[list(picked.names)]
    return rows.reset_index(drop=True), picked


def _fewer_curves(curves: list[tuple[str, pd.DataFrame]], keep: Collection[str]
                  ) -> tuple[list[tuple[str, pd.DataFrame]], Shown]:
    """The curves a figure draws: each ranked by its fastest point (`shown`); a curve through a
    configuration in `keep` is kept."""
    best = pd.DataFrame({
        "config": [name for name, _ in curves],
        "samples_per_s_median": [_column(g, "samples_per_s_median").max() for _, g in curves],
        "real_s_median": [_column(g, "real_s_median").min() for _, g in curves],
    })
    kept = [name for name, g in curves if g["config"].astype(str).isin(keep).any()] if keep else []
    picked = shown(best, MAX_SHOWN, kept, what="curves")
    if not picked.left_out:
        return curves, picked
    named = dict(curves)
    return [(name, named[name]) for name in picked.names], picked


def _say_left_out(figure: Figure, picked: Shown) -> None:
    """Under the figure's title (or as it), what a crowded figure leaves out: '(... 176 more in summary.csv)'."""
    if not picked.left_out:
        return
    above = figure.get_suptitle()
    figure.suptitle(f"{above}\n({picked.note})" if above else f"({picked.note})",
                    fontsize="medium" if above else "small")


def _column(frame: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(frame.get(column, pd.Series(math.nan, index=frame.index)), errors="coerce")


def _groups(data: pd.DataFrame, axis: str, exclude: tuple[str, ...] = ()) -> list[tuple[str, pd.DataFrame]]:
    """Rows split by the other run fields (and the machine) that vary, each named by their values."""
    fields = (*SPEC_FIELDS, "machine")
    others = [f for f in fields if f != axis and f not in exclude and f in data and data[f].nunique(dropna=False) > 1]
    if not others:
        return [("measured", data)]
    groups = []
    for values, group in data.groupby(others, sort=False, dropna=False):
        name = ",".join(f"{f}={_show(v)}" for f, v in zip(others, values, strict=True))
        groups.append((name, group))
    return groups


def _show(value: object) -> str:
    """A field value as a label: NaN is torch's default, 2.0 read back from a table is 2."""
    if isinstance(value, float):
        return "default" if math.isnan(value) else format_value(int(value) if value.is_integer() else value)
    return format_value(value)


def config_colors(configs: Iterable[str]) -> dict[str, ColorType]:
    """A colour per configuration, in the order given: the default cycle, or tab20 where ten
    colours would repeat. A report assigns them once and passes them to every figure whose
    colours stand for configurations, so one keeps its colour from figure to figure."""
    names = list(dict.fromkeys(configs))
    if len(names) <= 10:
        return {name: f"C{i}" for i, name in enumerate(names)}
    return {name: colormaps["tab20"](i % 20) for i, name in enumerate(names)}


def _has(frame: pd.DataFrame, column: str) -> bool:
    return column in frame and bool(pd.to_numeric(frame[column], errors="coerce").notna().any())


def _percent(share: float) -> str:
    """0.5 -> 50%, 0.0031 -> 0.31%, 1.02 -> 102%: two significant digits below 10%, whole ones above."""
    if not math.isfinite(share):
        return ""
    return f"{100 * share:.2g}%" if share < 0.1 else f"{100 * share:.0f}%"
