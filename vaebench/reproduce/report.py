"""The comparison `vaebench reproduce` prints and writes: measured rows beside the published
ones, the claim's relations judged, the what-if and thread tables, and the findings.

`compare` is pure: measured rows in (a `reproduce.collect` frame, with `roles`), a
`Comparison` out. The rest renders it as text, Markdown, CSV and one figure. No torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .._format import fmt, markdown_table, text_table
from ..analysis import kernel
from ..result import OK
from ..rules import NEIGHBOUR_LIMIT_PCT, contended
from ..stats import is_missing, number
from . import findings as fnd
from .claim import AGREES, DISAGREES, FIGURE_FORMATS, Claim, Verdict, evaluate
from .findings import Finding, WhatIf

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MEASURED, PUBLISHED = "measured", "published"
UTIL_HEADER = "GPU util % (NVML utilization.gpu)"
# (column, header, format) of the comparison table, the blog's `time` output and more.
COLUMNS: tuple[tuple[str, str, str], ...] = tuple(
    (name, header, FIGURE_FORMATS[name]) for name, header in (
        ("real_s", "real s"), ("user_s", "user s"), ("sys_s", "sys s"), ("cpu_pct", "%CPU"),
        ("gpu_util_mean", UTIL_HEADER), ("final_loss", "final loss"))
)
GPU_EXAMPLE = "docs/examples/nvidia-h200/README.md"  # this command's GPU half, run on an H200
SOURCE_NAMES = {"embedded-5k": "embedded-5k (5,000 real MNIST digits, repeated)", "mnist": "mnist (full MNIST)",
                "synthetic": "synthetic (random pixels)"}


@dataclass(frozen=True)
class Comparison:
    claim: Claim
    table: pd.DataFrame  # one row per measured seed run, then one per published row
    verdicts: list[Verdict]
    whatifs: list[WhatIf]
    threads: pd.DataFrame  # the CPU thread sweep: threads, user_s, sys_s, sys_user, samples_per_s
    findings: list[Finding]
    notes: list[str] = field(default_factory=list)  # what to keep in mind when reading the table
    failed: list[str] = field(default_factory=list)
    short_epochs: int = 0  # the length of the what-if and thread-sweep runs
    succeeded: int = 0  # runs that finished
    quick: bool = False  # planned with --quick: no thread sweep


def compare(claim: Claim, measured: pd.DataFrame, *, quick: bool = False, cuda_devices: int = 0,
            epochs: int | None = None) -> Comparison:
    """Judge `claim` on the measured rows of a reproduction (`reproduce.collect`'s frame);
    `cuda_devices` is the number of GPUs the plan ran on. The seed rows are each configuration's
    latest run; the short runs set against each other (baselines, what-ifs, the thread sweep) are
    the medians of its repeats where the frame holds several (`findings.median_run`)."""
    configurations = _configurations(measured.to_dict("records") if not measured.empty else [])
    rows = [runs[-1] for runs in configurations]
    ok = [r for r in rows if r.get("status") == OK]
    short = [fnd.median_run(runs) for runs in configurations if runs[-1].get("status") == OK]
    seeds = [r for r in ok if _has_role(r, "seed")]
    baselines = {str(r["device"]): r for r in short if _has_role(r, "baseline")}
    whatifs = fnd.what_ifs([r for r in short if _has_role(r, "what-if")], baselines)
    sweep = sorted((r for r in short if _has_role(r, "sweep") and r.get("device") == "cpu"),
                   key=lambda r: fnd.thread_count(r) or 0)
    policies = sorted((r for r in short if _has_role(r, "wait-policy") and r.get("device") == "cpu"),
                      key=lambda r: (str(r.get("omp_wait_policy")), fnd.thread_count(r) or 0))
    by_id = {p.id: [dict(r, label=device_label(r)) for r in seeds if _kind(r) == p.device] for p in claim.published}
    verdicts = evaluate(claim, by_id)
    return Comparison(
        claim=claim,
        table=comparison_table(claim, seeds),
        verdicts=verdicts,
        whatifs=whatifs,
        threads=thread_table([*sweep, *policies]),
        findings=_findings(claim, short, seeds, (sweep, policies), whatifs, baselines, by_id, verdicts),
        notes=_notes(claim, ok, 1 if quick else epochs, cuda_devices) + _busy_seeds(seeds),
        failed=[f"{device_label(r)}, {fnd.change_label(r)} ({r.get('roles', '')}): {r.get('reason', '')}" for r in rows
                if r.get("status") != OK],
        short_epochs=int(min((number(r.get("epochs")) for r in baselines.values()), default=0)),
        succeeded=len(ok),
        quick=quick,
    )


def _configurations(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The rows grouped by configuration (`spec_key`; a row without one is its own), in the order
    the first of each came, each group in the frame's order: `collect` puts the latest last."""
    groups: dict[object, list[dict[str, Any]]] = {}
    for index, row in enumerate(rows):
        key = row.get("spec_key")
        groups.setdefault(index if is_missing(key) else key, []).append(row)
    return list(groups.values())


def _findings(claim: Claim, ok: list[dict[str, Any]], seeds: list[dict[str, Any]],
              sweeps: tuple[list[dict[str, Any]], list[dict[str, Any]]], whatifs: list[WhatIf],
              baselines: dict[str, dict[str, Any]], by_id: Mapping[str, list[dict[str, Any]]], verdicts: list[Verdict]
              ) -> list[Finding]:
    sweep, policies = sweeps
    busy = fnd.contention(ok)  # first: it qualifies every number after it
    found = [busy] if busy is not None else []
    found += [f for r in seeds if (f := fnd.step_split(r)) is not None]
    scaling = fnd.thread_scaling(sweep)
    if scaling is not None:
        found.append(scaling)
    else:
        found += [f for r in seeds if r.get("device") == "cpu" and (f := fnd.cpu_time_balance(r)) is not None]
    found += [f for f in (fnd.kernel_anatomy(sweep), fnd.wait_policy_effect(sweep, policies)) if f is not None]
    found += fnd.allocator_effect([r for r in ok if _has_role(r, "what-if")], baselines)
    found += _sys_claim(claim, verdicts, sweep, by_id)
    gpu_real = next((p.figures["real_s"] for p in claim.published if p.device == "cuda"), math.nan)
    found += fnd.pipeline_share(whatifs, baselines, gpu_real)
    for device, base in baselines.items():
        if device.startswith("cuda"):
            rungs = [r for r in ok if r.get("device") == device and _has_role(r, "what-if")]
            found += fnd.rung_steps([base, *rungs])
    for p in claim.published if ok else ():
        finding = fnd.machine_finding(f"{p.label} (published)", p.machine, (by_id[p.id] or ok)[0], claim.data)
        found += [finding] if finding is not None else []
    return found


def _sys_claim(claim: Claim, verdicts: list[Verdict], sweep: list[dict[str, Any]],
               by_id: Mapping[str, list[dict[str, Any]]]) -> list[Finding]:
    """The claim's sys-above-user relations (`X.sys_s > X.user_s`), each explained from the counters."""
    found = []
    for v in verdicts:
        left, right = v.relation.left, v.relation.right
        if (left.figure, right.figure, v.relation.op) != ("sys_s", "user_s", ">") or left.row != right.row:
            continue
        here = by_id.get(left.row) or []
        if not here:
            continue
        row = claim.row(left.row)
        finding = fnd.sys_claim(v.outcome, v.published, sweep, row.machine, here[0])
        found += [finding] if finding is not None else []
    return found


def comparison_table(claim: Claim, seeds: list[dict[str, Any]]) -> pd.DataFrame:
    """Measured seed runs, then the published rows; numbers stay numbers (NaN where unknown)."""
    run_epochs = claim.run.get("epochs", 10)
    rows = []
    for r in seeds:
        rows.append({"source": MEASURED, "device": device_label(r), "data": r.get("data_source", ""),
                     "epochs": r.get("epochs"), **{c: number(r.get(c)) for c, _, _ in COLUMNS}})
    for p in claim.published:
        rows.append({"source": PUBLISHED, "device": p.label, "data": claim.data, "epochs": run_epochs,
                     **{c: p.figures.get(c, math.nan) for c, _, _ in COLUMNS}})
    return pd.DataFrame(rows, columns=["source", "device", "data", "epochs", *(c for c, _, _ in COLUMNS)])


THREAD_COLUMNS = ("threads", "wait_policy", "user_s", "sys_s", "sys_user", "samples_per_s", "ctx_involuntary",
                  "train_sys_user", "faults_per_step", "voluntary_per_step", "involuntary_per_step",
                  "runqueue_ms_per_step", "kernel_cause", "neighbour_cpu_pct")


def thread_table(sweep: list[dict[str, Any]]) -> pd.DataFrame:
    """The CPU thread sweep, one row per run: whole-process times, then the training window's
    kernel-time counters per step (`train_sys_user` is its sys/user) and the cause they name."""
    rows = []
    for r in sweep:
        verdict = kernel.kernel_verdict(r)
        per_step = kernel.per_step_columns(r)
        per_step["train_sys_user"] = per_step.pop("sys_user")
        rows.append({"threads": fnd.thread_count(r), "wait_policy": str(r.get("omp_wait_policy") or "default"),
                     "user_s": number(r.get("user_s")), "sys_s": number(r.get("sys_s")),
                     "sys_user": number(r.get("sys_s")) / number(r.get("user_s")),
                     "samples_per_s": number(r.get("samples_per_s")),
                     "ctx_involuntary": number(r.get("ctx_involuntary")), **per_step,
                     "kernel_cause": verdict.label if verdict is not None else "",
                     "neighbour_cpu_pct": fnd.neighbours(r)})
    return pd.DataFrame(rows, columns=list(THREAD_COLUMNS))


def device_label(row: Mapping[str, Any]) -> str:
    """`cuda:0 (NVIDIA H100)` or `cpu (2 cores, 2 threads)`, from the record's fingerprint."""
    device = str(row.get("device", "?"))
    if device.startswith("cuda"):
        names = str(row.get("fp_gpu_name") or "").split(";")
        index = int(device.split(":")[1]) if ":" in device else 0
        return f"{device} ({names[index]})" if index < len(names) and names[index] else device
    threads = fnd.thread_count(row)
    cores = number(row.get("fp_logical_cores"))
    parts = [f"{cores:.0f} cores" if not math.isnan(cores) else "", f"{threads} threads" if threads else ""]
    inside = ", ".join(p for p in parts if p)
    return f"{device} ({inside})" if inside else device


def _notes(claim: Claim, ok: list[dict[str, Any]], epochs: int | None, cuda_devices: int) -> list[str]:
    notes = []
    sources = sorted({str(r.get("data_source")) for r in ok if r.get("data_source")})
    if sources and sources != [claim.data]:
        counts = (number(r.get("data_samples")) for r in ok)
        samples = sorted({int(n) for n in counts if not math.isnan(n)})
        notes.append(
            f"Measured on {', '.join(SOURCE_NAMES.get(s, s) for s in sources)} at "
            f"{', '.join(f'{n:,}' for n in samples)} samples per epoch; the published rows ran on "
            f"{SOURCE_NAMES.get(claim.data, claim.data)}. Times per epoch compare; final losses do not."
        )
    published_epochs = int(claim.run.get("epochs", 10))
    if epochs is not None and epochs != published_epochs:
        notes.append(f"{epochs} epoch{'' if epochs == 1 else 's'} instead of {published_epochs} (sized to fit): the "
                     f"measured rows are {epochs}-epoch runs beside the published {published_epochs}-epoch ones, so "
                     f"their times are about {epochs}/{published_epochs} of what a {published_epochs}-epoch run here "
                     "would take, plus a larger share of start-up; compare ratios, not seconds.")
    if cuda_devices == 0:
        gpus = ", ".join(p.label for p in claim.published if p.device == "cuda")
        if gpus:
            notes.append(f"No CUDA GPU measured here: the GPU side is not measured; the published {gpus} row is "
                         "shown as published and its relations are not testable here. What this command measures "
                         f"on a GPU: an NVIDIA H200's run in {GPU_EXAMPLE} (in vaebench's repository).")
    notes.append("Single runs on a shared machine: timings are noisy by several percent.")
    return notes


def _busy_seeds(seeds: list[dict[str, Any]]) -> list[str]:
    """A note per measured seed row beside a busy neighbour: the relations are judged on it."""
    return [f"The {device_label(r)} seed run trained beside other processes using {fnd.neighbours(r):.0f}% of a core "
            f"(past {NEIGHBOUR_LIMIT_PCT:.0f}%): its times are inflated, and so are the relations judged on them."
            for r in seeds if contended(fnd.neighbours(r))]


def _has_role(row: Mapping[str, Any], role: str) -> bool:
    return role in str(row.get("roles", "")).split(",")


def _kind(row: Mapping[str, Any]) -> str:
    return str(row.get("device", "")).split(":")[0]


# Rendering -----------------------------------------------------------------------------------


def _cells(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    headers = ["source", "device", "data", "epochs", *(h for _, h, _ in COLUMNS)]
    rows = []
    for r in frame.to_dict("records"):
        cells = [r["source"], r["device"], str(r["data"]), fmt(r["epochs"], "{:.0f}", missing="-")]
        for column, _, spec in COLUMNS:
            cell = fmt(r[column], spec, missing="-")
            if column == "gpu_util_mean" and r["source"] == PUBLISHED and cell != "-":
                cell = f"~{cell}"
            cells.append(cell)
        rows.append(cells)
    return headers, rows


def _verdict_lines(comparison: Comparison) -> list[str]:
    lines = []
    for v in comparison.verdicts:
        outcome = v.outcome.upper() if v.outcome in (AGREES, DISAGREES) else v.outcome
        detail = v.detail[0].upper() + v.detail[1:]
        if math.isnan(v.measured) and not math.isnan(v.published):
            detail += f" (published: {v.relation.left} / {v.relation.right} = {v.published:.2f}x)"
        lines.append(f"{v.relation.id}: {outcome}. Claim: {v.relation.says}. {detail}.")
    return lines


def _whatif_cells(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    headers = ["device", "change", "epoch s", "speed-up (epoch)", "samples/s", "speed-up (steady state)",
               "neighbours % of a core (this run / seed config.)"]
    rows = [[w.device, w.change, fmt(w.epoch_s, "{:.2f}", missing="-"), fmt(w.speedup, "{:.2f}x", missing="-"),
             fmt(w.samples_per_s, "{:,.0f}", missing="-"), fmt(w.steady_speedup, "{:.2f}x", missing="-"),
             neighbour_cell(w.neighbour_cpu_pct, w.base_neighbour_cpu_pct)]
            for w in comparison.whatifs]
    return headers, rows


BUSY = "busy"
BUSY_NOTE = (f"{BUSY}: processes outside the run used more than {NEIGHBOUR_LIMIT_PCT:.0f}% of a core while it (or the "
             "run it is set against) trained, so its figures are not the change's alone.")


def neighbour_cell(*pcts: float) -> str:
    """`35 / 119 busy`: what processes outside each run used while it trained, in percent of a
    core, marked where any passes `rules.contended`; `-` where none was recorded."""
    if all(math.isnan(p) for p in pcts):
        return "-"
    cell = " / ".join(fmt(p, "{:.0f}", missing="-") for p in pcts)
    return f"{cell} {BUSY}" if any(contended(p) for p in pcts) else cell


def _busy_rows(comparison: Comparison) -> bool:
    sides = [p for w in comparison.whatifs for p in (w.neighbour_cpu_pct, w.base_neighbour_cpu_pct)]
    return any(contended(number(p)) for p in [*sides, *comparison.threads["neighbour_cpu_pct"]])


THREAD_CELLS = (("user_s", "{:.2f}"), ("sys_s", "{:.2f}"), ("sys_user", "{:.3f}"), ("samples_per_s", "{:,.0f}"),
                ("train_sys_user", "{:.3f}"), ("faults_per_step", "{:,.0f}"), ("voluntary_per_step", "{:,.0f}"),
                ("involuntary_per_step", "{:,.0f}"), ("runqueue_ms_per_step", "{:.1f}"))


def _thread_cells(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    headers = ["threads", "wait policy", "user s", "sys s", "sys/user", "samples/s", "sys/user (train)",
               "faults/step", "vol. sw/step", "invol. sw/step", "run-queue ms/step", "kernel time goes to",
               "neighbours % of a core"]
    rows = [[str(r["threads"]), r["wait_policy"], *(fmt(r[name], spec, missing="-") for name, spec in THREAD_CELLS),
             r["kernel_cause"] or "-", neighbour_cell(r["neighbour_cpu_pct"])]
            for r in comparison.threads.to_dict("records")]
    return headers, rows


def render_text(comparison: Comparison) -> str:
    claim = comparison.claim
    out = [f"Claim {claim.name}: {claim.says}.", f"Source: {claim.source}" if claim.source else "", ""]
    out += [f"note: {n}" for n in comparison.notes] + [""]
    out += [text_table(*_cells(comparison.table)), ""]
    out += [f"failed: {f}" for f in comparison.failed]
    out += ["Relation by relation:", *(f"  {line}" for line in _verdict_lines(comparison)), ""]
    if comparison.whatifs:
        out += [f"What if (same device, {_short(comparison)}, against the seed configuration run the same way):",
                _indent(text_table(*_whatif_cells(comparison))), ""]
    if not comparison.threads.empty:
        out += [f"CPU threads ({_short(comparison)} each):", _indent(text_table(*_thread_cells(comparison))), ""]
    out += [f"  {BUSY_NOTE}", ""] if _busy_rows(comparison) else []
    out += ["Findings:", *(f"  - {f.text}" for f in comparison.findings)]
    out += [] if comparison.findings else [f"  {_no_findings(comparison)}"]
    return "\n".join(out)


def _no_findings(comparison: Comparison) -> str:
    if not comparison.succeeded:
        return "None: no run succeeded (the failures are listed above)."
    return "None: the runs that succeeded hold nothing to build one from."


def render_markdown(comparison: Comparison, report_link: str = "report.md") -> str:
    claim = comparison.claim
    out = [f"# Reproducing {claim.name}", "", f"**Claim:** {claim.says}.", ""]
    out += [f"**Source:** {claim.source}", ""] if claim.source else []
    out += [*(f"> {n}" for n in comparison.notes), ""]
    out += ["## Measured and published", "", markdown_table(*_cells(comparison.table)), "",
            "![real, user and sys per device](reproduce.png)", ""]
    out += [f"- failed: {f}" for f in comparison.failed]
    out += ["## Relation by relation", "", *(f"- {line}" for line in _verdict_lines(comparison)), ""]
    if comparison.whatifs:
        out += [f"## What if ({_short(comparison)} each)", "", markdown_table(*_whatif_cells(comparison)), ""]
    if not comparison.threads.empty:
        out += ["## CPU threads", "", markdown_table(*_thread_cells(comparison)), ""]
    elif comparison.quick:
        out += ["## CPU threads", "", "No thread sweep with --quick, so reproduce_threads.csv holds only its header; "
                "run without --quick for it.", ""]
    out += [BUSY_NOTE, ""] if _busy_rows(comparison) else []
    findings = [f"- {f.text}" for f in comparison.findings] or [_no_findings(comparison)]
    out += ["## Findings", "", *findings, ""]
    out += [f"The runs themselves: [{report_link}]({report_link}).", ""]
    return "\n".join(out)


def _short(comparison: Comparison) -> str:
    epochs = comparison.short_epochs
    return f"{epochs}-epoch runs" if epochs else "short runs"


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def figure(comparison: Comparison) -> Figure | None:
    """Real, user and sys per device: measured bars solid, published bars hatched, log scale
    (the blog's 1,529 s of sys would flatten every other bar)."""
    from matplotlib.figure import Figure

    table = comparison.table
    if table.empty:
        return None
    fig = Figure(figsize=(max(6.0, 1.6 * len(table) + 2), 4.5))
    ax = fig.subplots()
    width = 0.27
    for i, (column, name) in enumerate((("real_s", "real"), ("user_s", "user"), ("sys_s", "sys"))):
        for x, row in enumerate(table.to_dict("records")):
            published = row["source"] == PUBLISHED
            ax.bar(x + (i - 1) * width, row[column], width, color=f"C{i}", hatch="//" if published else None,
                   edgecolor="white" if published else None, alpha=0.6 if published else 1.0,
                   label=name if x == 0 else None)
    records = table.to_dict("records")
    labels = [f"{r['device']}\n({PUBLISHED if r['source'] == PUBLISHED else r['data']}, {_epochs(r['epochs'])})"
              for r in records]
    ax.set_xticks(range(len(table)), labels, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("seconds for the whole run (log scale)")
    lengths = {src: " and ".join(sorted({_epochs(r["epochs"]) for r in records if r["source"] == src}))
               for src in (MEASURED, PUBLISHED)}
    ax.set_title(f"real, user and sys per device: measured (solid, {lengths[MEASURED] or 'none'}) and "
                 f"published (hatched, {lengths[PUBLISHED]})", fontsize=10)
    ax.legend()
    fig.tight_layout()
    return fig


def _epochs(epochs: Any) -> str:
    count = number(epochs)
    return "? epochs" if math.isnan(count) else f"{count:.0f} epoch{'' if count == 1 else 's'}"


def whatif_frame(whatifs: list[WhatIf]) -> pd.DataFrame:
    """The what-if rows as reproduce_whatif.csv holds them: `knobs` comma-joined (`loader,pin_memory`).
    The file keeps its columns: how many runs a row is the median of, the findings say."""
    rows = [dataclasses.asdict(w) | {"knobs": ",".join(w.knobs)} for w in whatifs]
    return pd.DataFrame(rows, columns=[f.name for f in dataclasses.fields(WhatIf) if f.name != "runs"])


def write(comparison: Comparison, folder: str | Path) -> Path:
    """reproduce.md, reproduce.csv (the table), reproduce_whatif.csv, reproduce_threads.csv and
    reproduce.png into `folder`; return the Markdown's path."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    comparison.table.to_csv(out / "reproduce.csv", index=False)
    whatif_frame(comparison.whatifs).to_csv(out / "reproduce_whatif.csv", index=False)
    comparison.threads.to_csv(out / "reproduce_threads.csv", index=False)
    fig = figure(comparison)
    if fig is not None:
        fig.savefig(out / "reproduce.png", dpi=110, bbox_inches="tight")
    path = out / "reproduce.md"
    path.write_text(render_markdown(comparison), encoding="utf-8")
    return path
