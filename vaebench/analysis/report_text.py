"""A Report as text: the summary and kernel-time tables as display strings, and report.md."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from .._format import counted, markdown_table
from .._format import fmt as show
from ..result import OK, SyscallCount, SyscallTable
from ..rules import ALPHA
from ..spec import format_value
from ..stats import number
from .attribution import utilization_note
from .report import COMMON, TABLE_METRICS, Report, ReportWarning, busy_per_config, contended_runs, side_by_side
from .shown import MAX_SHOWN
from .summary import seconds_note

TOP_SYSCALLS = 5  # rows of each configuration's syscall table: the calls that hold most of the time

# The kernel-time table of report.md: (column, header, format), medians per configuration.
KERNEL_TABLE: tuple[tuple[str, str, str], ...] = (
    ("sys_user", "sys/user", "{:.3f}"),
    ("faults_per_step", "minor faults/step", "{:,.0f}"),
    ("voluntary_per_step", "voluntary switches/step", "{:,.0f}"),
    ("involuntary_per_step", "involuntary switches/step", "{:,.0f}"),
    ("runqueue_ms_per_step", "run-queue ms/step (all threads)", "{:.1f}"),
    ("samples_per_s", "samples/s", "{:,.0f}"),
)


NOT_SIGNIFICANT = "(n.s.)"
NOT_SIGNIFICANT_NOTE = (
    f"A speed-up marked {NOT_SIGNIFICANT} is not significant: the configuration's runs and the baseline's "
    f"differ by no more than chance allows (one-sided Mann-Whitney, p > {ALPHA:g}), so it shows no measurable "
    "difference; three runs a side are the fewest that can show one."
)


def summary_table(report: Report) -> pd.DataFrame:
    """The summary as display strings: `median [IQR]` cells, columns with no data left out."""
    summary = report.summary
    table = pd.DataFrame({"config": summary["config"], "n": summary["n"], "failed": summary["failed"]})
    for name, header, fmt in TABLE_METRICS:
        if summary[f"{name}_median"].notna().any():
            table[header] = [
                _cell(m, q, fmt) for m, q in zip(summary[f"{name}_median"], summary[f"{name}_iqr"], strict=True)
            ]
    for column, header in (("speedup", "speed-up (real s)"), ("steady_speedup", "speed-up (samples/s)")):
        if column in summary and summary[column].notna().any():
            table[header] = [_cell(s, math.nan, "{:.2f}x") + (f" {NOT_SIGNIFICANT}" if p > ALPHA else "")
                             for s, p in zip(summary[column], summary[f"{column}_p"], strict=True)]
    busy = contended_runs(report.runs)
    if busy:
        counts = busy_per_config(report.runs, busy)["busy"]
        table["busy neighbour"] = [f"{counts.get(c, 0)} of {n}" for c, n in zip(summary["config"], summary["n"],
                                                                                 strict=True)]
    return table


def _cell(median: float, spread: float, fmt: str) -> str:
    if not isinstance(median, int | float) or math.isnan(median):
        return "-"
    text = fmt.format(median)
    return text if math.isnan(spread) else f"{text} [{fmt.format(spread)}]"


def render_markdown(report: Report, out: Path) -> str:
    """report.md: warnings first, the summary table, failed runs, figures, samples, exports."""
    ok = int((report.runs["status"] == OK).sum())
    lines = [f"# vaebench report: {report.folder}", ""]
    differ = ", ".join(report.varying) or "nothing (one configuration)"
    lines += [
        f"{counted(len(report.runs), 'run')} ({ok} ok, {len(report.runs) - ok} failed) in "
        f"{counted(len(report.summary), 'configuration')}; they differ in: {differ}.",
        "",
    ]
    if report.common:
        usual = ", ".join(f"{k}={format_value(v)}" for k, v in report.common.items())
        device = "its device and " if "device" in report.common else ""
        itself = f" (itself named `{COMMON}`)" if (report.summary["setup"] == COMMON).any() else ""
        lines += [f"A configuration is named by {device}what it sets off the most common setting{itself}: {usual}.",
                  ""]
    lines += _warnings_markdown(report.warnings)
    lines += _machines_markdown(report)
    lines += ["## Summary", "", "Cells read `median [IQR]` over successful repeats; a single run has no IQR."]
    if report.baseline is not None:
        lines.append(f"Speed-up (real s) is the median real time of `{report.baseline}` over each configuration's: the "
                     "whole process, so runs that do different work (another batch size at the same --steps) differ "
                     "by their work too. Speed-up (samples/s) is each configuration's steady-state samples/s over "
                     "the baseline's: the training loop's rate alone. " + NOT_SIGNIFICANT_NOTE)
    lines += ["", _markdown(summary_table(report)), ""]
    lines += _global_batch_markdown(report.summary)
    if len(report.failed):
        lines += ["## Failed runs", "", _markdown(report.failed.fillna("")), ""]
    lines += _bottlenecks_markdown(report)
    lines += _kernel_markdown(report)
    lines += _syscalls_markdown(report)
    lines += _figures_markdown(report)
    lines += _samples_markdown(report, out)
    lines += ["## Exports", "", "Every column is described in `docs/columns.md` of vaebench's source.", ""]
    lines += [f"- [{n}.csv]({n}.csv), [{n}.parquet]({n}.parquet)" for n in ("runs", "epochs", "summary")]
    return "\n".join(lines) + "\n"


def _global_batch_markdown(summary: pd.DataFrame) -> list[str]:
    """Where some configurations train on several ranks: the batch each update used."""
    ranks = pd.to_numeric(summary.get("world_size", pd.Series(dtype=float)), errors="coerce")
    if not (ranks > 1).any():
        return []
    batches = "; ".join(f"`{row.config}`: {int(row.global_batch):,}" for row in summary.itertuples()
                        if pd.notna(row.global_batch))
    return ["With several ranks, --batch-size is each rank's: an update averages the gradients of batch size x "
            "world size samples, so a loss compares with one rank's at that global batch (the scaling efficiency "
            f"compares samples/s at the same per-rank batch). Global batch per configuration: {batches}.", ""]


def _machines_markdown(report: Report) -> list[str]:
    """The machines table and, with several machines, each setup's samples/s on each side by side."""
    if len(report.machines) < 2:
        return []
    lines = ["## Machines", "", f"{len(report.machines)} machines ran this folder's runs; every configuration "
             "is summarized per machine.", "", _markdown(report.machines), ""]
    lines += ["### Per machine, side by side", "", "Median samples/s (steady state) of each setup on each machine.",
              "", _markdown(side_by_side(report.summary)), ""]
    return lines


def _bottlenecks_markdown(report: Report) -> list[str]:
    if not report.bottlenecks:
        return []
    lines = ["## What bounds each configuration", ""]
    lines += [f"- **{config}**: {text}" for config, text in report.bottlenecks.items()]
    utilization = report.summary.get("gpu_util_mean_median", pd.Series(dtype=float)).dropna()
    if len(utilization):
        lines += ["", f"> {utilization_note(float(utilization.max()))}"]
    return lines + [""]


def bottleneck_lines(report: Report, top: int = 3) -> list[str]:
    """What bounds each configuration, for a terminal: a line each up to `MAX_SHOWN`; past it a line
    per verdict's headline ('bound by input pipeline') with its count and `top` of its
    configurations. report.md has them all."""
    if len(report.bottlenecks) <= MAX_SHOWN:
        return [f"{config}: {verdict}" for config, verdict in report.bottlenecks.items()]
    lines = [f"what bounds {len(report.bottlenecks)} configurations (each one's evidence is in report.md):"]
    for headline, configs in _most_first((v.partition(":")[0], c) for c, v in report.bottlenecks.items()):
        lines.append(f"  {headline}: {counted(len(configs), 'configuration')}, e.g. {'; '.join(configs[:top])}")
    return lines


def _most_first(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """(group, configuration) pairs as each group's configurations, once each in their order,
    the largest group first: a terminal's line per verdict past `MAX_SHOWN` configurations."""
    groups: dict[str, list[str]] = {}
    for group, config in pairs:
        configs = groups.setdefault(group, [])
        configs += [] if config in configs else [config]
    return sorted(groups.items(), key=lambda pair: -len(pair[1]))


def warning_lines(report: Report, top: int = 3) -> list[str]:
    """The warnings for a terminal: the folder's each, and the configurations' each up to
    `MAX_SHOWN` of them; past it a line per kind with its count and `top` of its configurations.
    report.md has them all."""
    per_config = [w for w in report.warnings if w.config]
    if len(per_config) <= MAX_SHOWN:
        return [f"warning: {w}" for w in report.warnings]
    folder = [f"warning: {w}" for w in report.warnings if not w.config]
    return folder + [f"warning: {kind}: {counted(len(configs), 'configuration')}, e.g. {'; '.join(configs[:top])} "
                     "(each in report.md)" for kind, configs in _most_first((w.kind, w.config) for w in per_config)]


def kernel_table(report: Report) -> pd.DataFrame:
    """The CPU configurations' kernel-time counters (medians) with the cause each points to."""
    rows = report.summary[report.summary["config"].isin(list(report.kernel))]
    table = pd.DataFrame({"config": rows["config"]})
    for name, header, fmt in KERNEL_TABLE:
        table[header] = [_cell(value, math.nan, fmt) for value in rows[f"{name}_median"]]
    table["cause"] = [report.kernel[config].label for config in rows["config"]]
    table["its share of sys"] = [_cell(report.kernel[config].share, math.nan, "{:.0%}") for config in rows["config"]]
    return table.reset_index(drop=True)


def _kernel_markdown(report: Report) -> list[str]:
    if not report.kernel:
        return []
    lines = ["## Where the kernel (sys) time went", "",
             "Counters of the training process over its training window, per step (medians over repeats); each "
             "cause is costed in kernel time at a few microseconds per event (`vaebench.analysis.kernel`). "
             "\"its share of sys\" is how much of the measured sys time the named cause (with the one in "
             "parentheses, if any) is estimated to cost; each verdict below accounts for the rest: other causes, "
             "other processes' preemptions, and what the counters leave unexplained.",
             "",
             _markdown(kernel_table(report)), ""]
    lines += [f"- **{config}**: {verdict}" for config, verdict in report.kernel.items()]
    sandboxes = sorted(set(report.runs.get("fp_sandbox", pd.Series(dtype=str)).dropna().astype(str)) - {""})
    if sandboxes:
        lines += ["", f"Runs here ran on a sandboxed kernel ({', '.join(sandboxes)}): their sys time and context "
                  "switches are the sandbox's own accounting, not the host kernel's."]
    return lines + [""]


def kernel_lines(report: Report, top: int = 3) -> list[str]:
    """The kernel-time verdicts for a terminal: the table and a paragraph per configuration up to
    `MAX_SHOWN` of them; past it (a paragraph each is 1.9 MB at 1,000) a line per cause with how many
    configurations it names and the `top` with the most sys per step. report.md has them all."""
    if len(report.kernel) <= MAX_SHOWN:
        table = kernel_table(report).to_string(index=False)
        return [table, *(f"{config}: kernel time: {cause}" for config, cause in report.kernel.items())]
    lines = [f"kernel time of {len(report.kernel)} CPU configurations, by cause (each one's counters and "
             "verdict are in report.md):"]
    for cause, configs in _most_first((verdict.label, config) for config, verdict in report.kernel.items()):
        worst = sorted(configs, key=lambda c: -number(report.kernel[c].sys_ms))[:top]
        named = "; ".join(f"{c} ({show(report.kernel[c].sys_ms, '{:.2f}')} ms)" for c in worst)
        lines.append(f"  {cause}: {counted(len(configs), 'configuration')}; most sys per step: {named}")
    return lines


def syscall_tables(runs: pd.DataFrame) -> dict[str, SyscallTable]:
    """Each configuration's `--syscalls` table, from its last run that has one."""
    found: dict[str, SyscallTable] = {}
    if "syscalls" not in runs:
        return found
    for row in runs[runs["syscalls"].map(lambda v: isinstance(v, list))].to_dict("records"):
        counts = tuple(SyscallCount(str(c.get("syscall", "?")), int(number(c.get("calls"))),
                                    int(number(c.get("errors"))), number(c.get("seconds"))) for c in row["syscalls"])
        steps = number(row.get("syscall_steps"))
        found[str(row["config"])] = SyscallTable(str(row.get("syscall_tool") or "?"), counts,
                                                 int(steps) if math.isfinite(steps) else 0,
                                                 number(row.get("syscall_real_s")))
    return found


def _syscalls_markdown(report: Report) -> list[str]:
    tables = syscall_tables(report.runs)
    if not tables:
        return []
    notes = dict.fromkeys(seconds_note(t.tool) for t in tables.values())
    lines = ["## System calls (`--syscalls`)", "",
             "Each from a separate run of the configuration under a tracer, never the timed run (tracing slows "
             f"it), torch's import included: the top {TOP_SYSCALLS} calls by seconds"
             + "".join(f"; {note}" for note in notes if note) + ".", ""]
    timed_sys = report.summary.set_index("config")["sys_s_median"]
    for config, table in tables.items():
        calls, seconds = sum(c.calls for c in table.counts), sum(c.seconds for c in table.counts)
        lines += [f"**{config}**: {table.tool}, {counted(table.steps, 'step')} in {show(table.real_s, '{:.1f} s')}; "
                  f"{counted(calls, 'call')}, {seconds:.2f} s in all (the timed runs' sys: "
                  f"{show(timed_sys.get(config), '{:.2f} s')})", ""]
        rows = [[c.syscall, f"{c.calls:,}", f"{c.errors:,}", f"{c.seconds:.3f}"] for c in table.top(TOP_SYSCALLS)]
        lines += [markdown_table(["syscall", "calls", "errors", "seconds"], rows), ""]
    return lines


def _warnings_markdown(warnings: list[ReportWarning]) -> list[str]:
    # A blank line after each: consecutive `>` lines are one paragraph in CommonMark.
    prominent = [w for w in warnings if w.kind in ReportWarning.PROMINENT]
    lines = [line for w in prominent for line in (f"> **Warning: {w.message}**", "")]
    rest = [w for w in warnings if w.kind not in ReportWarning.PROMINENT]
    if rest:
        lines += ["## Warnings", "", *(f"- {w.message}" for w in rest), ""]
    return lines


FIGURE_TITLES = {
    "times": "Real, user and sys time per configuration",
    "thread_scaling": "Thread scaling",
    "batch_size": "Batch size",
    "loss": "Loss per epoch and time to quality",
    "gpu_timeline": "GPU over time",
    "step_split": "Where the step time goes",
    "flops": "Achieved FLOP/s against the measured peak",
    "rank_scaling": "Data-parallel scaling: samples/s and efficiency against ranks",
    "kernel_time": "Kernel time and its counters per step against threads",
}


def _figures_markdown(report: Report) -> list[str]:
    lines = ["## Figures", ""] if report.figures else []
    crowded = int((report.summary["n"] > 0).sum()) > MAX_SHOWN
    for name in report.figures:
        lines += [f"### {FIGURE_TITLES.get(name, name)}", "", f"![{name}]({name}.png)", ""]
        if crowded and name != "gpu_timeline":
            baseline = " and the baseline" if report.baseline is not None else ""
            lines += [f"With more than {MAX_SHOWN} configurations (or curves) the figure shows the fastest and "
                      f"slowest by steady-state samples/s{baseline}; its title says how many more are in "
                      "[summary.csv](summary.csv).", ""]
    return lines


def _samples_markdown(report: Report, out: Path) -> list[str]:
    if not report.samples:
        return []
    lines = [
        "## Samples",
        "",
        "64 digits sampled from the trained model of one run per configuration, each with how long it "
        "trained: a few hundred steps draw blurred digits, a few dozen only noise.",
        "",
    ]
    runs = report.runs.set_index("run_id") if "run_id" in report.runs else pd.DataFrame()
    for config, path in report.samples.items():
        link = Path(os.path.relpath(path, out)).as_posix()
        lines += [f"**{config}** ({path.stem}{_trained(runs, path.stem)})", "", f"![{config}]({link})", ""]
    return lines


def _trained(runs: pd.DataFrame, run_id: str) -> str:
    """', after 8 steps on synthetic data, final loss 547.36' for a samples caption; '' if unknown."""
    if run_id not in runs.index:
        return ""
    row = runs.loc[run_id]
    steps, loss = number(row.get("steps_done")), number(row.get("final_loss"))
    data = row.get("data_source") or row.get("data")
    how_long = " ".join(part for part in (f"after {counted(int(steps), 'step')}" if steps > 0 else "",
                                          f"on {data} data" if isinstance(data, str) and data else "") if part)
    phrases = [how_long, f"final loss {loss:.2f}" if math.isfinite(loss) else ""]
    return "".join(f", {phrase}" for phrase in phrases if phrase)


def _markdown(frame: pd.DataFrame) -> str:
    rows = [[format_value(v) for v in row] for row in frame.itertuples(index=False)]
    return markdown_table([str(c) for c in frame.columns], rows)
