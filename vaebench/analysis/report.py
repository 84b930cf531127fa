"""A results folder summarized: one row per configuration, warnings, figures, verdicts.

A configuration is the set of run-spec values a row records, labelled by the fields that
vary across the folder ("threads=2,batch_size=256"). Grouping by the recorded values rather
than by `spec_key` alone keeps apart runs of one spec that resolved `data=auto` to different
sources. A folder filled by several machines (a sweep on a cluster) is grouped by machine as
well: each label ends in "@ <machine>" (`machine.machine_label`), a machines table lists the
hosts of each, and the per-machine results stand side by side.

Statistics are over successful repeats only: median and interquartile range from `stats`
(type 7 quartiles, numpy's default). Failed runs are counted per configuration and listed
with their reasons.

`report_text` renders a Report as report.md and `export` writes the report folder; neither is
imported here. The module never imports torch, so a report can be built on a machine without it.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from .. import stats, storage
from .._format import counted
from ..errors import UsageError
from ..machine import MACHINE_FIELDS, machine_label
from ..result import OK
from ..rules import NEIGHBOUR_LIMIT_PCT, contended
from ..spec import SPEC_FIELDS, RunSpec, parse_value
from ..stats import is_missing, number
from . import kernel, plots
from .attribution import Evidence, attribute
from .whatif import whatifs

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from matplotlib.typing import ColorType

SPREAD_LIMIT = 0.10  # IQR / median above this: the repeats disagree too much to trust a median
MIN_REPEATS = 3  # fewer successful repeats than this: no spread can be judged
FULL_NAME_FIELDS = 3  # a configuration's name lists at most this many fields in full (`common_setting`)
COMMON = "common setting"  # the name of the configuration that is the common setting
MAX_TIMELINE_RUNS = 6  # default runs in the GPU timeline: more lines than this are unreadable
SPREAD_METRICS = ("real_s", "samples_per_s")
MACHINE_COLUMNS = ("fp_cpu_model", "fp_gpu_name")

# (column, table header, format): what the summary table shows, in this order.
TABLE_METRICS: tuple[tuple[str, str, str], ...] = (
    ("real_s", "real s", "{:.2f}"),
    ("user_s", "user s", "{:.2f}"),
    ("sys_s", "sys s", "{:.2f}"),
    ("cpu_pct", "%CPU", "{:.0f}"),
    ("samples_per_s", "samples/s", "{:,.0f}"),
    ("epoch_s", "epoch s", "{:.2f}"),
    ("gpu_util_mean", "GPU util %", "{:.0f}"),
    ("gpu_mem_max_mb", "GPU mem MB", "{:,.0f}"),
    ("peak_rss_mb", "RSS MB", "{:,.0f}"),
    ("final_loss", "final loss", "{:.2f}"),
    ("allreduce_ms", "all-reduce ms", "{:.2f}"),
    ("scaling_efficiency", "scaling eff.", "{:.2f}"),
)
OTHER_METRICS = (
    "split_data_ms",
    "split_copy_ms",
    "split_compute_ms",
    "split_sync_ms",
    "split_device_copy_ms",
    "split_device_compute_ms",
    "model_flops_per_s",
    "peak_flops_per_s",
    "flops_frac",
    "neighbour_cpu_pct",
    "profile_busy_fraction",
    "profile_busy_ms_per_step",
    "step_median_ms",
    "profile_underfilled_share",
    "profile_kernels_per_step",
    "compile_s",
    "gpu_energy_per_sample_mj",
    "cpu_energy_per_sample_mj",
    "allreduce_share",
    *(name for name, _ in kernel.PER_STEP),
    *(name for name in kernel.INPUTS if name not in ("user_s", "sys_s")),
)
METRICS: tuple[str, ...] = tuple(name for name, _, _ in TABLE_METRICS) + OTHER_METRICS


class ReportError(UsageError):
    """The folder or the options cannot give a report; the message says why, in one line."""


@dataclass(frozen=True)
class ReportWarning:
    kind: str  # mixed-data, mixed-machine, failed, few-repeats, high-spread, contended or no-series
    message: str
    config: str = ""  # the configuration it is about; empty for the whole folder

    PROMINENT: ClassVar[tuple[str, ...]] = ("mixed-data", "mixed-machine", "contended")  # atop report.md

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Report:
    """A results folder summarized (`build_report`): the tables as DataFrames, the figures, the
    warnings and the verdicts; `export.write_report` writes them beside the runs."""

    folder: Path
    runs: pd.DataFrame  # every run, failed included, with its `config` label
    epochs: pd.DataFrame  # one row per successful run and epoch, with `config`
    summary: pd.DataFrame  # one row per configuration: n, failed, <metric>_median/_iqr, speedup
    varying: tuple[str, ...]  # the run fields that differ across the folder
    common: dict[str, Any] = field(default_factory=dict)  # names are relative to it (`common_setting`)
    warnings: list[ReportWarning] = field(default_factory=list)
    figures: dict[str, Figure] = field(default_factory=dict)
    samples: dict[str, Path] = field(default_factory=dict)  # config -> its digit grid PNG
    baseline: str | None = None
    bottlenecks: dict[str, str] = field(default_factory=dict)  # config -> what bounds it, with evidence
    machines: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per machine: hosts, CPU, GPU, runs
    kernel: dict[str, kernel.Verdict] = field(default_factory=dict)  # config -> where its sys time went (CPU runs)

    @property
    def failed(self) -> pd.DataFrame:
        bad = self.runs[self.runs["status"] != OK]
        return bad.reindex(columns=["run_id", "config", "repeat", "reason"]).reset_index(drop=True)


def build_report(
    folder: str | os.PathLike[str],
    baseline: str | None = None,
    runs: Sequence[str] | None = None,
    *,
    records: list[dict[str, Any]] | None = None,
) -> Report:
    """Read a results folder and summarize it. `baseline` (field=value pairs, as `report
    --baseline`) adds the speed-up columns; `runs` (run ids) picks the runs the GPU timeline draws,
    by default one per configuration; `records` are the folder's records where the caller has
    read them already (`storage.read_rows`), else they are read here, once for the runs and
    their epochs.

    Raises FileNotFoundError for a missing folder, storage.CorruptResults for a bad line and
    ReportError for an empty folder, a baseline matching no or several configurations, or an
    unknown run id.
    """
    folder = Path(folder)
    records = storage.read_rows(folder) if records is None else records
    table = storage.runs_table(records)
    if table.empty:
        raise ReportError(f"no runs in {folder}")
    table, varying, common = label_runs(table)
    summary = summarize(table)
    machines = machines_table(table)
    if baseline is not None:
        summary["speedup"] = speedups(summary, baseline)
        summary["steady_speedup"] = speedups(summary, baseline, metric="samples_per_s")
        summary["speedup_p"] = speedup_p(summary, table, baseline)
        summary["steady_speedup_p"] = speedup_p(summary, table, baseline, metric="samples_per_s")
    epochs = _epochs(records, table)
    chosen = _timeline_runs(table, runs)
    problems = find_warnings(table, summary)
    monitors = _monitors(folder, table, chosen, problems)
    return Report(
        folder=folder,
        runs=table,
        epochs=epochs,
        summary=summary,
        varying=varying,
        common=common,
        warnings=problems,
        figures=draw_figures(summary, table, epochs, monitors, baseline_configs(summary, baseline)),
        samples=_sample_images(folder, table),
        baseline=baseline,
        bottlenecks=bottlenecks(summary, table),
        machines=machines,
        kernel=kernel_causes(summary),
    )


def label_runs(runs: pd.DataFrame) -> tuple[pd.DataFrame, tuple[str, ...], dict[str, Any]]:
    """Add a `config` label (with "@ machine" where the folder holds several), the `setup` (the
    label without the machine) and the `machine` to every row; return it with the fields that vary
    and the `common_setting` the labels are relative to (empty: they list every varying field)."""
    records = runs.to_dict("records")
    specs = [RunSpec.from_dict(row) for row in records]
    varying = tuple(f for f in SPEC_FIELDS if len({getattr(s, f) for s in specs}) > 1)
    common = common_setting(specs, varying)
    labelled = runs.copy()
    labelled["setup"] = [(_name(s, varying, common) if varying else s.label()) or "default" for s in specs]
    labelled["machine"] = [machine_label(row) for row in records]
    several = labelled.loc[labelled["status"] == OK, "machine"].replace("", math.nan).nunique() > 1
    labelled["config"] = [
        f"{setup} @ {machine}" if several and machine else setup
        for setup, machine in zip(labelled["setup"], labelled["machine"], strict=True)
    ]
    per_step = pd.DataFrame([kernel.per_step_columns(row) for row in records], index=runs.index)
    labelled[list(per_step.columns)] = per_step
    for name in METRICS:
        if name not in labelled:
            labelled[name] = math.nan
    return labelled, varying, common


def common_setting(specs: Sequence[RunSpec], varying: tuple[str, ...]) -> dict[str, Any]:
    """The most common value of each varying field over the configurations, where the folder is
    no grid and names would list more than `FULL_NAME_FIELDS` fields (results pooled from several
    experiments): configurations are then named by how they differ from it. Empty otherwise."""
    distinct = list(dict.fromkeys(specs))
    values = {f: [getattr(s, f) for s in distinct] for f in varying}
    # A grid with a few points missing (combinations refused, an interrupted sweep) is still a grid.
    if len(varying) <= FULL_NAME_FIELDS or 2 * len(distinct) >= math.prod(len(set(v)) for v in values.values()):
        return {}
    return {f: Counter(v).most_common(1)[0][0] for f, v in values.items()}


def _name(spec: RunSpec, varying: tuple[str, ...], common: Mapping[str, Any]) -> str:
    """Every varying field, or, off a `common_setting`, the device where devices differ and the
    fields off it (`COMMON` for the common setting itself): two configurations never share a name."""
    if not common:
        return spec.label(varying)
    off = tuple(f for f in varying if f == "device" or getattr(spec, f) != common[f])
    return spec.label(off) if off else COMMON


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration of a `label_runs` table, in the order of its field values.

    Each column is read once and split by configuration (`_Columns`): masking the whole table
    and converting every metric afresh for each configuration made a folder of 1,000 of them
    take a quarter of a minute."""
    ok = (runs["status"] == OK).to_numpy(dtype=bool, na_value=False)
    columns = _Columns(runs, ok)
    groups = _groups(runs["config"])
    firsts = runs.iloc[[where[0] for _, where in groups]].to_dict("records")  # one row each, read at once
    rows = []
    for (config, where), head in zip(groups, firsts, strict=True):
        first, good = where[0], where[ok[where]]
        spec = RunSpec.from_dict(head)
        row: dict[str, Any] = {"config": config, "n": len(good), "failed": len(where) - len(good)}
        for name in METRICS:
            values = columns.numbers(name, good)
            row[f"{name}_median"] = stats.median(values) if values else math.nan
            row[f"{name}_iqr"] = stats.iqr(values) if len(values) > 1 else math.nan  # one run: spread unknown
        row.update(spec.to_dict())
        row.update(world_size=spec.world_size, global_batch=spec.global_batch)
        for column in ("spec_key", "setup", "machine"):
            row[column] = runs[column].iloc[first]
        for column in ("data_source", "data_digest"):  # several where the runs read different data (warned)
            found = columns.texts(column, config)
            row[column] = ", ".join(dict.fromkeys(found)) if found else None
        row["profile_busy_source"] = _usual(columns.texts("profile_busy_source", config))  # the runs' usual reading
        rows.append((spec, row))
    rows.sort(key=lambda pair: (_spec_order(pair[0]), pair[1]["machine"]))
    return pd.DataFrame([row for _, row in rows])


def _groups(labels: pd.Series) -> list[tuple[Any, np.ndarray]]:
    """(label, positions of its rows) in the order the labels first appear, as groupby(sort=False)."""
    found = labels.groupby(labels, sort=False).indices
    return sorted(found.items(), key=lambda item: int(item[1][0]))


def _usual(values: Sequence[str]) -> str:
    """The most common value, the least of those tied (Series.mode()[0]); "" for none."""
    counts = Counter(values)
    most = max(counts.values(), default=0)
    return min((value for value, count in counts.items() if count == most), default="")


class _Columns:
    """A `label_runs` table's columns as `summarize` reads them, each converted once for all
    configurations: a metric's numbers at given rows, and a text column's values of a
    configuration's successful runs (missing ones left out)."""

    def __init__(self, runs: pd.DataFrame, ok: np.ndarray) -> None:
        self._runs = runs
        # A column of numpy numbers converts to itself; any other (text, nullable) goes through pd.to_numeric.
        self._arrays = {name: runs[name].to_numpy() for name in METRICS
                        if isinstance(runs[name].dtype, np.dtype) and runs[name].dtype.kind in "biufc"}
        self._texts: dict[str, dict[Any, list[str]]] = {}
        for column in ("data_source", "data_digest", "profile_busy_source"):
            per_config: dict[Any, list[str]] = {}
            if column in runs:
                kept = ok & runs[column].notna().to_numpy()
                for config, text in zip(runs["config"][kept], runs[column][kept].astype(str), strict=True):
                    per_config.setdefault(config, []).append(text)
            self._texts[column] = per_config

    def numbers(self, name: str, where: np.ndarray) -> list[Any]:
        """The column's numbers at these rows, missing ones left out: pd.to_numeric(...).dropna().tolist()."""
        array = self._arrays.get(name)
        if array is None:
            return list(pd.to_numeric(self._runs[name].iloc[where], errors="coerce").dropna().tolist())
        values = array[where]
        if values.dtype.kind in "fc":
            values = values[~np.isnan(values)]
        return values.tolist()  # type: ignore[no-any-return]

    def texts(self, column: str, config: Any) -> list[str]:
        return self._texts[column].get(config, [])


def machines_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per machine of a `label_runs` table: its hosts, CPU and GPU, torch, and its runs."""
    rows = []
    for machine, group in runs[runs["machine"] != ""].groupby("machine", sort=False):
        first = group.iloc[0]
        row: dict[str, Any] = {"machine": machine}
        hosts = group["fp_hostname"].dropna().astype(str) if "fp_hostname" in group else pd.Series(dtype=str)
        row["hosts"] = ", ".join(sorted(set(hosts))) or "-"
        for name in (*MACHINE_FIELDS, "gpu_count", "torch"):
            value = first.get(f"fp_{name}")
            row[name] = "-" if is_missing(value) or value == "" else value
        row["runs"] = len(group)
        row["ok"] = int((group["status"] == OK).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def side_by_side(summary: pd.DataFrame, metric: str = "samples_per_s") -> pd.DataFrame:
    """Each setup's median `metric` on every machine, a column per machine (cells as text)."""
    data = summary[summary["machine"] != ""]
    table = data.pivot_table(index="setup", columns="machine", values=f"{metric}_median", aggfunc="first", sort=False)
    return table.map(lambda v: "-" if pd.isna(v) else f"{v:,.0f}").reset_index()


def bottlenecks(summary: pd.DataFrame, runs: pd.DataFrame | None = None) -> dict[str, str]:
    """What bounds each configuration: the attribution rules on its median step split,
    overruled by a measured what-if where the folder holds a sibling differing in one knob;
    with the `runs`, only by one whose runs differ from the configuration's beyond chance."""
    measured = whatifs(summary, runs=None if runs is None else run_values(runs, "samples_per_s"))
    found = {}
    for row in summary.to_dict("records"):
        evidence = Evidence.from_columns(_median_or_value(row), RunSpec.from_dict(row),
                                         whatifs=measured.get(row["config"], {}))
        if all(math.isfinite(v) for v in (evidence.split.data_ms, evidence.split.compute_ms)):
            found[row["config"]] = str(attribute(evidence))
    return found


def _median_or_value(row: Mapping[str, Any]) -> Callable[[str], Any]:
    """Reads a summary row by a record's column name: the configuration's median, or the
    column itself where it has no median (its text columns)."""
    return lambda name: row.get(f"{name}_median", row.get(name))


def kernel_causes(summary: pd.DataFrame) -> dict[str, kernel.Verdict]:
    """Where each CPU configuration's kernel time went: `analysis.kernel` on its median counters."""
    found = {}
    for row in summary.to_dict("records"):
        medians = {name: row.get(f"{name}_median", math.nan) for name in kernel.INPUTS}
        verdict = kernel.kernel_verdict({**row, **medians})
        if verdict is not None:
            found[row["config"]] = verdict
    return found


def parse_baseline(text: str) -> dict[str, Any]:
    """'device=cpu,threads=1' -> {'device': 'cpu', 'threads': 1}; raises ReportError."""
    wanted: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise ReportError(f"baseline {text!r}: expected field=value, got {part!r}")
        try:
            wanted[name.strip()] = parse_value(name.strip(), value)
        except ValueError as exc:
            raise ReportError(f"baseline {text!r}: {exc}") from None
    if not wanted:
        raise ReportError("baseline is empty: give field=value pairs like device=cpu,threads=1")
    return wanted


def speedups(summary: pd.DataFrame, baseline: str, metric: str = "real_s") -> pd.Series:
    """Each configuration against the baseline, above 1 faster: the baseline's median real time
    over its own (the whole process, start-up included), or with `metric` samples_per_s its
    steady-state samples/s over the baseline's (the loop alone: two runs of different lengths
    differ in the one and not the other). With several machines, each machine's configurations
    are set against that machine's baseline."""
    machines = summary["machine"] if "machine" in summary else pd.Series("", index=summary.index)
    matches = _matching(summary, baseline)
    if not matches:
        known = "; ".join(summary["config"])
        raise ReportError(f"baseline {baseline!r} matches no configuration; there are: {known}")
    result = pd.Series(math.nan, index=summary.index)
    for machine in dict.fromkeys(machines[matches]):
        mine = [i for i in matches if machines[i] == machine]
        if len(mine) > 1:
            found = "; ".join(summary.loc[mine, "config"])
            raise ReportError(f"baseline {baseline!r} is ambiguous, it matches: {found}; add fields")
        base = summary.loc[mine[0]]
        if base["n"] == 0:
            raise ReportError(f"baseline {base['config']!r} has no successful run to compare against")
        same = machines == machine
        ratio = summary.loc[same, f"{metric}_median"] / base[f"{metric}_median"]
        result[same] = 1 / ratio if metric == "real_s" else ratio
    return result


def speedup_p(summary: pd.DataFrame, runs: pd.DataFrame, baseline: str, metric: str = "real_s") -> pd.Series:
    """Each configuration's runs against its machine's baseline's on `metric`: the one-sided
    Mann-Whitney p in the direction they differ (as `compare` tests each direction); NaN for
    the baseline itself and where a side has no run."""
    values = run_values(runs, metric)
    base_of = {row["machine"]: row["config"] for _, row in summary.loc[_matching(summary, baseline)].iterrows()}
    result = pd.Series(math.nan, index=summary.index)
    for i, row in summary.iterrows():
        base = base_of.get(row["machine"], row["config"])
        mine, theirs = values.get(row["config"], []), values.get(base, [])
        if base != row["config"] and mine and theirs:
            result[i] = stats.mann_whitney(mine, theirs).p_either_way
    return result


def run_values(runs: pd.DataFrame, metric: str) -> dict[str, list[float]]:
    """Each configuration's successful runs' values of `metric`."""
    ok = runs[runs["status"] == OK]
    return {str(config): pd.to_numeric(group[metric], errors="coerce").dropna().tolist()
            for config, group in ok.groupby("config", sort=False)}


def baseline_configs(summary: pd.DataFrame, baseline: str | None) -> list[str]:
    """The configurations `baseline` names (one per machine), for the figures to keep in view."""
    return [] if baseline is None else [str(c) for c in summary.loc[_matching(summary, baseline), "config"]]


def _matching(summary: pd.DataFrame, baseline: str) -> list[Any]:
    """The index of every summary row whose run fields have the values `baseline` sets."""
    wanted = parse_baseline(baseline)
    return [i for i, row in summary.iterrows()
            if all(getattr(RunSpec.from_dict(row.to_dict()), k) == v for k, v in wanted.items())]


def find_warnings(runs: pd.DataFrame, summary: pd.DataFrame) -> list[ReportWarning]:
    """What a reader must know before trusting the table; mixed sources and machines first."""
    found = _mixed(runs)
    failed = runs[runs["status"] != OK]
    if len(failed):
        text = f"{len(failed)} of {len(runs)} runs failed; their reasons are in the failed-runs table"
        found.append(ReportWarning("failed", text))
    found.extend(_few_repeats(summary))
    for _, row in summary.iterrows():
        found.extend(_spread_warnings(row))
    found.extend(_contended(runs))
    return found


def _few_repeats(summary: pd.DataFrame) -> list[ReportWarning]:
    """One warning per count of successful runs below MIN_REPEATS, naming its configurations:
    a sweep of 20 single runs reads as one line, not 20."""
    found = []
    few = summary[summary["n"] < MIN_REPEATS]
    for n, group in few.groupby("n", sort=True):
        configs = [str(c) for c in group["config"]]
        if n == 0:
            found += [ReportWarning("few-repeats", f"{config}: no successful run", config) for config in configs]
            continue
        advice = f"use {MIN_REPEATS} or more (sweep and ladder take --repeats {MIN_REPEATS})"
        runs = f"only {counted(int(n), 'successful run')}"
        if len(configs) == 1:
            found.append(ReportWarning("few-repeats", f"{configs[0]}: {runs}; {advice}", configs[0]))
        elif len(configs) == len(summary):
            found.append(ReportWarning("few-repeats", f"every configuration has {runs}; {advice}"))
        else:
            found.append(ReportWarning("few-repeats", f"{len(configs)} configurations have {runs} "
                                       f"({'; '.join(configs)}); {advice}"))
    return found


def _contended(runs: pd.DataFrame) -> list[ReportWarning]:
    """One warning for the runs measured beside a busy neighbour, naming their configurations."""
    busy = contended_runs(runs)
    if not busy:
        return []
    why = (f"beside a busy neighbour (processes outside them used up to {max(busy.values()):.0f}% of a core while "
           f"they trained, limit {NEIGHBOUR_LIMIT_PCT:.0f}%): their speed is not their own")
    per_config = busy_per_config(runs, busy)
    flagged = per_config[per_config["busy"] > 0]
    if len(flagged) == 1:
        config, row = str(flagged.index[0]), flagged.iloc[0]
        return [ReportWarning("contended", f"{config}: {row['busy']} of {row['runs']} runs ran {why}", config)]
    if len(busy) == per_config["runs"].sum():
        return [ReportWarning("contended", f"every run ran {why}")]
    named = "; ".join(f"{config} ({row['busy']} of {row['runs']})" for config, row in flagged.iterrows())
    return [ReportWarning("contended", f"{len(busy)} of {per_config['runs'].sum()} runs, in {len(flagged)} "
                          f"configurations, ran {why}: {named}")]


def contended_runs(runs: pd.DataFrame) -> dict[str, float]:
    """run_id -> the neighbours' CPU % of a core, for the successful runs measured beside a busy one."""
    if "neighbour_cpu_pct" not in runs:
        return {}
    ok = runs[runs["status"] == OK]
    return {str(r): float(v) for r, v in zip(ok["run_id"], ok["neighbour_cpu_pct"], strict=True) if contended(v)}


def busy_per_config(runs: pd.DataFrame, busy: Mapping[str, float]) -> pd.DataFrame:
    """Per configuration, in the folder's order: its successful `runs` and how many of them were `busy`
    (`contended_runs`)."""
    ok = runs[runs["status"] == OK]
    flags = ok.assign(busy=ok["run_id"].astype(str).isin(busy))
    return flags.groupby("config", sort=False)["busy"].agg(busy="sum", runs="size")


def _mixed(runs: pd.DataFrame) -> list[ReportWarning]:
    found = []
    checks: list[tuple[str, str, tuple[str, ...], str]] = [
        (
            "mixed-data",
            "MIXED DATA SOURCES",
            ("data",),
            "times on different data are not comparable",
        ),
        ("mixed-machine", "MIXED MACHINES", MACHINE_COLUMNS,
         "every configuration is reported per machine (see Machines)"),
    ]
    for kind, title, columns, advice in checks:
        for column in columns:
            if column not in runs:
                continue
            counts = runs[column].dropna().astype(str).value_counts()
            if len(counts) > 1:
                parts = ", ".join(f"{value} ({counted(count, 'run')})" for value, count in counts.items())
                found.append(ReportWarning(kind, f"{title}: {column} is {parts}; {advice}"))
    return found + _pooled_data(runs)


def _pooled_data(runs: pd.DataFrame) -> list[ReportWarning]:
    """One warning per configuration whose runs read different files under one data name (two
    MNIST folders, say): the table pools them, so the reader must know."""
    if "data_digest" not in runs or "spec_key" not in runs:
        return []
    found = []
    for _, rows in runs.dropna(subset=["data_digest"]).groupby("spec_key", sort=False):
        files = rows.groupby("data_digest", sort=False)
        if len(files) > 1:
            parts = ", ".join(f"{digest} from {group['data_path'].iloc[0] if 'data_path' in group else '?'} "
                              f"({counted(len(group), 'run')})" for digest, group in files)
            config = rows["config"].iloc[0] if "config" in rows else rows["spec_key"].iloc[0]
            found.append(ReportWarning("mixed-data", f"MIXED DATA SOURCES: {config} pooled runs on different "
                                       f"data files ({parts}); times and losses on different data are not "
                                       "comparable", str(config)))
    return found


def _spread_warnings(row: pd.Series) -> list[ReportWarning]:
    config, n = row["config"], int(row["n"])
    found = []
    for name in SPREAD_METRICS:
        median, spread = row[f"{name}_median"], row[f"{name}_iqr"]
        if n >= 2 and median and spread / median > SPREAD_LIMIT:
            header, fmt = next((h, f) for n, h, f in TABLE_METRICS if n == name)
            text = (
                f"{config}: {header} varies, IQR {fmt.format(spread)} is {spread / median:.0%} of the "
                f"median {fmt.format(median)} (limit {SPREAD_LIMIT:.0%})"
            )
            found.append(ReportWarning("high-spread", text, config))
    return found


def draw_figures(
    summary: pd.DataFrame,
    runs: pd.DataFrame,
    epochs: pd.DataFrame,
    monitors: dict[str, pd.DataFrame],
    baseline: Sequence[str] = (),
) -> dict[str, Figure]:
    """Every figure the data has the axes for, keyed by its file stem; a crowded one keeps the
    `baseline` configurations in view (`plots`). `monitors` maps a run id to its monitor samples.

    A configuration has one colour in every figure that draws a series per configuration (the
    loss curves, the GPU timeline's runs), assigned once over the configurations they draw."""
    measured = summary[summary["n"] > 0].reset_index(drop=True)
    config = runs.set_index("run_id")["config"]
    drawn_configs = (plots.loss_shown(epochs, measured, baseline).names, [config[r] for r in monitors])
    colors = plots.config_colors(_in_report_order(summary, *drawn_configs))
    drawn = {
        "times": plots.time_bars(measured, runs, baseline),
        "thread_scaling": plots.thread_scaling(measured, baseline),
        "batch_size": plots.batch_size_scaling(measured, baseline),
        "loss": plots.loss_curves(epochs, measured, baseline, colors),
        "gpu_timeline": _gpu_timeline(monitors, config, colors),
        "step_split": plots.step_split(measured, baseline),
        "flops": plots.flops_share(measured, baseline),
        "rank_scaling": plots.rank_scaling(measured, baseline),
        "kernel_time": plots.kernel_counters(measured, baseline),
    }
    return {name: figure for name, figure in drawn.items() if figure is not None}


def _in_report_order(summary: pd.DataFrame, *drawn: Iterable[str]) -> list[str]:
    """The configurations named in `drawn`, once each, in the summary's order. Only those that a
    figure draws take a colour: a crowded folder's 24 shown ones would otherwise share tab20's 20
    colours with the hundreds summary.csv holds besides."""
    wanted = {name for names in drawn for name in names}
    return [str(c) for c in summary["config"] if c in wanted]


def _gpu_timeline(monitors: dict[str, pd.DataFrame], config: pd.Series,
                  colors: Mapping[str, ColorType]) -> Figure | None:
    """The GPU timeline of the chosen runs, each labelled "<config> (<run id>)" and drawn in its
    configuration's colour; `config` maps a run id to its configuration."""
    labels = {run_id: f"{config[run_id]} ({run_id})" for run_id in monitors}
    return plots.gpu_timeline({labels[r]: samples for r, samples in monitors.items()},
                              {labels[r]: colors[config[r]] for r in monitors})


def _spec_order(spec: RunSpec) -> tuple[tuple[bool, Any], ...]:
    return tuple((getattr(spec, f) is None, getattr(spec, f) or 0) for f in SPEC_FIELDS)


def _epochs(records: list[dict[str, Any]], runs: pd.DataFrame) -> pd.DataFrame:
    epochs = storage.epochs_table(records)
    ok = runs[runs["status"] == OK].set_index("run_id")["config"]
    epochs = epochs[epochs["run_id"].isin(ok.index)].copy()
    epochs["config"] = epochs["run_id"].map(ok)
    return epochs.reset_index(drop=True)


def _timeline_runs(runs: pd.DataFrame, chosen: Sequence[str] | None) -> list[str]:
    if chosen:
        unknown = [r for r in chosen if r not in set(runs["run_id"])]
        if unknown:
            raise ReportError(f"unknown run id(s): {', '.join(unknown)}")
        return list(chosen)
    ok = runs[runs["status"] == OK]
    on_gpu = ok[ok["gpu_util_mean"].notna()]
    picked = on_gpu if len(on_gpu) else ok
    return list(picked.groupby("config", sort=False)["run_id"].first())[:MAX_TIMELINE_RUNS]


def _monitors(
    folder: Path, runs: pd.DataFrame, chosen: list[str], problems: list[ReportWarning]
) -> dict[str, pd.DataFrame]:
    """Monitor samples of the chosen runs, keyed by run id."""
    starts = runs.set_index("run_id")["train_start_unix"] if "train_start_unix" in runs else None
    found = {}
    for run_id in chosen:
        try:
            samples = storage.load_monitor(folder, run_id)
            start = number(starts[run_id]) if starts is not None else math.nan
            if "t_unix" in samples and math.isfinite(start):
                samples["t_train"] = samples["t_unix"] - start
            found[run_id] = samples
        except FileNotFoundError:
            text = f"run {run_id}: no series file, so it is left out of the GPU timeline"
            problems.append(ReportWarning("no-series", text))
        except storage.UnreadableResults as exc:
            problems.append(ReportWarning("no-series", f"run {run_id}: {exc}, so it is left out of the GPU timeline"))
    return found


def _sample_images(folder: Path, runs: pd.DataFrame) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for row in runs[runs["status"] == OK].itertuples():
        path = folder / storage.SAMPLES_DIR / f"{row.run_id}.png"
        if row.config not in found and path.exists():
            found[str(row.config)] = path
    return found
