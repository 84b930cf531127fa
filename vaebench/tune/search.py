"""The tuner's decisions, pure: which batch sizes to try, when to stop, which knobs, which winner.

Everything here is driven through an injected `measure(spec) -> Trial` and an injected
clock, so the same search runs in one warm process, as isolated runs, or against a fake
curve in the tests. Stdlib only.

The batch search climbs powers of two from a small start. It stops at the first
out-of-memory failure (the memory boundary), when two doublings in a row fail to beat the
best by a few percent (throughput has fallen or levelled off; one slow trial may be a busy
machine), at `max_batch`, or when the next trial would not fit the time left. It then
measures one geometric midpoint between the best and its better neighbour, because the peak
of a unimodal curve lies on that side.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import STOPS, UsageError, signal_of
from ..result import OK
from ..rules import WARMUP_STEPS
from ..spec import ALLOCATORS, DEFAULT, SPEED_KNOBS, WAIT_POLICIES, Capabilities, RunSpec, validate

TRIAL_SAMPLES = 16_384  # measured samples per throughput trial: small batches get more steps
MIN_MEASURED_STEPS = 5  # a median of fewer is too easily one slow step
MAX_MEASURED_STEPS = 50  # small batches: enough for a stable median, past that only start-up costs
START_BATCH = 16
REFERENCE_BATCH = 128  # the seed's batch size: the quality guard's yardstick
CLEAR_DROP = 0.10  # trials this far below the best are reported as a fall, not a plateau
PLATEAU_GAIN = 0.03  # a doubling that gains less than this did not pay (noise on a busy machine)
PLATEAU_PATIENCE = 2  # doublings in a row that did not pay before the climb stops
KNOB_GAIN = 0.03  # a knob is adopted when both its runs beat both of the current best's by this much
LR_SCALINGS = ("none", "linear", "sqrt")
INCLUDABLE = ("compile", "amp")
ALLOC_PEAK = "torch allocator peak"
DEVICE_MEM = "NVML device memory in use, CUDA context included"
RSS_PEAK = "peak RSS"


@dataclass(frozen=True)
class Trial:
    """One measurement: a throughput trial, a knob trial or a quality run."""

    spec: RunSpec
    status: str = OK
    reason: str = ""
    samples_per_s: float = math.nan  # steady state, warm-up dropped
    gpu_util: float = math.nan  # NVML utilization.gpu, mean over the training window, percent
    # Three memory measures that must not be compared with one another, hence three names:
    alloc_peak_mb: float = math.nan  # torch allocator peak, tensors only (screen trials on CUDA)
    device_mem_mb: float = math.nan  # NVML: whole device in use, CUDA context included (isolated CUDA runs)
    rss_peak_mb: float = math.nan  # the process's peak resident memory (isolated runs)
    wall_s: float = math.nan  # what the trial cost, start-up included
    stage: str = ""  # climb, refine, confirm, knob, quality
    run_id: str = ""  # the stored record, when the trial was an isolated run
    final_loss: float = math.nan
    epoch_losses: tuple[float, ...] = ()
    epoch_times_s: tuple[float, ...] = ()
    neighbour_cpu_pct: float = math.nan  # processes outside the run's tree, percent of a core (isolated runs)

    @property
    def ok(self) -> bool:
        return self.status == OK and not math.isnan(self.samples_per_s)

    @property
    def out_of_memory(self) -> bool:
        return self.status != OK and self.reason.lower().startswith("out of memory")

    @property
    def batch(self) -> int:
        return self.spec.batch_size

    @property
    def memory(self) -> tuple[float, str]:
        """This trial's memory figure and what it measures: one of three measures that are not
        comparable with one another, the first one filled."""
        for value, what in ((self.alloc_peak_mb, ALLOC_PEAK), (self.device_mem_mb, DEVICE_MEM),
                            (self.rss_peak_mb, RSS_PEAK)):
            if not math.isnan(value):
                return value, what
        return math.nan, ""

    def describe(self) -> str:
        """One line for the terminal."""
        where = f"batch {self.batch:>6} {pipeline_label(self.spec)}"
        if not self.ok:
            return f"{self.stage:>7} {where}: FAILED: {self.reason}"
        extra = f", GPU {self.gpu_util:.0f}%" if not math.isnan(self.gpu_util) else ""
        loss = f", loss {self.final_loss:.2f}" if not math.isnan(self.final_loss) else ""
        return f"{self.stage:>7} {where}: {self.samples_per_s:,.0f} samples/s{extra}{loss} ({self.wall_s:.1f} s)"

    def to_dict(self) -> dict[str, Any]:
        row = dataclasses.asdict(self)
        row["spec"] = self.spec.to_dict()
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Trial:
        values: dict[str, Any] = {k: math.nan if v is None else v for k, v in row.items() if k != "spec"}
        values["epoch_losses"] = tuple(values.get("epoch_losses", ()))
        values["epoch_times_s"] = tuple(values.get("epoch_times_s", ()))
        return cls(spec=RunSpec.from_dict(row["spec"]), **values)


def pipeline_label(spec: RunSpec) -> str:
    """The pipeline knobs that differ from the seed's, or 'seed pipeline'."""
    changed = tuple(f for f in SPEED_KNOBS if getattr(spec, f) != getattr(DEFAULT, f))
    return spec.label(changed) or "seed pipeline"


Measure = Callable[[RunSpec], Trial]
Clock = Callable[[], float]


def trial_steps(batch: int, samples: int = TRIAL_SAMPLES, warmup: int = WARMUP_STEPS) -> int:
    """Total steps of a throughput trial: the warm-up plus a measured tail of about
    `samples` samples, clamped so small batches still give a stable median and big ones
    stay short."""
    measured = min(MAX_MEASURED_STEPS, max(MIN_MEASURED_STEPS, -(-samples // batch)))
    return measured + min(warmup, measured)


def trial_spec(base: RunSpec, batch: int, warmup: int = WARMUP_STEPS) -> RunSpec:
    """`base` at `batch`, sized as a short throughput trial (epochs enough for its steps)."""
    steps = trial_steps(batch, warmup=warmup)
    per_epoch = -(-base.samples // batch)
    return dataclasses.replace(base, batch_size=batch, steps=steps, epochs=-(-steps // per_epoch))


@dataclass
class SearchResult:
    trials: list[Trial] = field(default_factory=list)
    stop_reason: str = ""
    budget_hit: bool = False
    reached_max: bool = False  # the climb stopped because the next doubling passed max_batch
    limit: str = ""  # what set max_batch, in words: "the epoch size (16384 samples)", "--max-batch 4096"
    device_total_mb: float = math.nan  # the device's memory, when the search measured it
    interrupted: int | None = None  # the signal that stopped the search (SIGINT, SIGTERM, SIGHUP), if one did

    @property
    def best(self) -> Trial | None:
        ok = [t for t in self.trials if t.ok]
        return max(ok, key=lambda t: t.samples_per_s) if ok else None

    @property
    def first_oom(self) -> int | None:
        sizes = [t.batch for t in self.trials if t.out_of_memory]
        return min(sizes) if sizes else None

    @property
    def largest_safe(self) -> int | None:
        """The largest batch that ran, below the first out-of-memory failure."""
        limit = self.first_oom or math.inf
        sizes = [t.batch for t in self.trials if t.ok and t.batch < limit]
        return max(sizes) if sizes else None

    def memory_note(self) -> str:
        """What bounded the batch size on the memory side, with the memory the largest ran batch
        used: an out-of-memory failure, or the cap the search stopped at, or neither."""
        oom, safe = self.first_oom, self.largest_safe
        if oom is not None:
            return (f"out of memory at batch {oom}; largest batch that ran: {safe}; with a safety margin "
                    f"against fragmentation and other tenants, stay at or below {oom // 2}")
        ran = [t for t in self.trials if t.ok]
        if not ran:
            return "no batch size ran, so nothing is known about memory"
        largest = max(ran, key=lambda t: t.batch)
        used = self._memory_used(largest)
        if self.reached_max:
            where = self.limit or "the largest batch allowed"
            return (f"no out-of-memory failure: the search stopped at {where}, not at a memory limit; "
                    f"the largest batch run ({largest.batch}) {used}")
        return (f"no out-of-memory failure up to batch {largest.batch}, which {used}; the search ended for "
                "another reason (see the batch search), not at a memory limit")

    def _memory_used(self, trial: Trial) -> str:
        value, what = trial.memory
        if math.isnan(value):  # a CPU search's trials share one process: its RSS is not one trial's
            return ("had no memory measure of its own (the search's trials share one process; the isolated "
                    "runs' rss_peak_mb is theirs)")
        of = f" of the device's {self.device_total_mb:,.0f} MB" if what != RSS_PEAK and self.device_total_mb > 0 else ""
        return f"peaked at {value:,.0f} MB{of} ({what})"

    def ranked(self) -> list[Trial]:
        """Successful trials, fastest first, one per batch size."""
        seen: dict[int, Trial] = {}
        for trial in sorted((t for t in self.trials if t.ok), key=lambda t: -t.samples_per_s):
            seen.setdefault(trial.batch, trial)
        return list(seen.values())


def search_batch(
    base: RunSpec,
    measure: Measure,
    *,
    max_batch: int,
    start: int = START_BATCH,
    clock: Clock | None = None,
    deadline: float = math.inf,
    report: Callable[[Trial], None] | None = None,
    warmup: int = WARMUP_STEPS,
) -> SearchResult:
    """Climb powers of two from `start`, then refine once around the best; see the module doc.
    `warmup` is the trials' warm-up steps: fewer suffice where one process runs them all."""
    result = SearchResult()
    now = clock or (lambda: 0.0)

    def run(batch: int, stage: str) -> Trial | None:
        last = result.trials[-1] if result.trials else None
        # The next trial doubles the work of the last one; do not start what cannot finish.
        expected = 2 * last.wall_s if last is not None and not math.isnan(last.wall_s) else 0.0
        if now() + expected > deadline:
            result.budget_hit = True
            result.stop_reason = f"time budget reached before batch {batch}; best so far kept"
            return None
        try:
            measured = measure(trial_spec(base, batch, warmup))
        except STOPS as stop:
            result.interrupted = signal_of(stop)
            result.stop_reason = f"interrupted before batch {batch} finished; best so far kept"
            return None
        trial = dataclasses.replace(measured, stage=stage)
        result.trials.append(trial)
        if report is not None:
            report(trial)
        return trial

    batch, flat = start, 0
    while True:
        if batch > max_batch:
            result.stop_reason = f"reached the largest batch allowed ({max_batch})"
            result.reached_max = True
            break
        best = result.best
        trial = run(batch, "climb")
        if trial is None:
            return result
        if trial.out_of_memory:
            result.stop_reason = f"out of memory at batch {batch}: the memory boundary"
            break
        if not trial.ok:
            result.stop_reason = f"batch {batch} failed ({trial.reason}); climb stopped there"
            break
        flat = 0 if best is None or trial.samples_per_s > best.samples_per_s * (1 + PLATEAU_GAIN) else flat + 1
        if flat >= PLATEAU_PATIENCE:
            # One slow trial on a busy machine is not a peak: the climb stops on a second one.
            tail = result.trials[-PLATEAU_PATIENCE:]
            if best is not None and all(t.samples_per_s < best.samples_per_s * (1 - CLEAR_DROP) for t in tail):
                result.stop_reason = (f"throughput fell more than {CLEAR_DROP:.0%} below the best "
                                      f"(batch {best.batch}) {PLATEAU_PATIENCE} doublings in a row")
            else:
                result.stop_reason = (f"{PLATEAU_PATIENCE} doublings in a row gained less than "
                                      f"{PLATEAU_GAIN:.0%}: throughput has levelled off")
            break
        batch *= 2
    midpoint = refine_point(result, max_batch)
    if midpoint is not None:
        run(midpoint, "refine")
    return result


def refine_point(result: SearchResult, max_batch: int) -> int | None:
    """The geometric midpoint between the best and its better measured neighbour, or None.

    An out-of-memory neighbour above still bounds the peak: the midpoint probes under it."""
    best = result.best
    if best is None:
        return None
    measured = {t.batch: t for t in result.trials}
    below, above = measured.get(best.batch // 2), measured.get(best.batch * 2)

    def rate(trial: Trial | None) -> float:
        return trial.samples_per_s if trial is not None and trial.ok else -1.0

    sides = [best.batch * 2, best.batch // 2]
    if below is not None and (above is None or rate(below) > rate(above)) and not (above and above.out_of_memory):
        sides.reverse()
    for partner in sides:
        if partner not in measured:
            continue
        point = round_batch(math.sqrt(best.batch * partner))
        if point not in measured and point <= max_batch and point not in (best.batch, partner):
            return point
    return None


def round_batch(value: float) -> int:
    """To a multiple of 8 (what tensor cores and vector units like) past 16; at least 1."""
    if value < 16:
        return max(1, round(value))
    return int(round(value / 8) * 8)


def scaled_lr(lr: float, batch: int, mode: str, reference: int = REFERENCE_BATCH) -> float:
    """The learning rate for `batch`: unchanged, or scaled linearly or by the square root of
    batch / reference (the seed's 128)."""
    if mode == "none":
        return lr
    if mode == "linear":
        return lr * batch / reference
    if mode == "sqrt":
        return lr * math.sqrt(batch / reference)
    raise UsageError(f"unknown lr scaling {mode!r}; choose from {', '.join(LR_SCALINGS)}")


def knob_groups(spec: RunSpec, caps: Capabilities, include: Sequence[str] = ()) -> list[tuple[str, list[RunSpec]]]:
    """The alternatives to try at the best batch, one group per knob, invalid ones dropped."""
    groups: list[tuple[str, list[RunSpec]]] = []

    def alternatives(name: str, changes: list[dict[str, Any]]) -> None:
        specs = [dataclasses.replace(spec, **c) for c in changes]
        specs = [s for s in specs if s != spec and not validate(s, caps)]
        if specs:
            groups.append((name, list(dict.fromkeys(specs))))

    loaders = ("reference", "tensor", "device")
    alternatives("loader", [{"loader": name, "workers": 0, "pin_memory": False} for name in loaders])
    if spec.is_cuda:
        alternatives("workers/pin memory", [
            {"loader": "reference", "workers": w, "pin_memory": p} for w in (0, 2, 4) for p in (False, True)
        ])
    else:
        counts = sorted({1, caps.logical_cores, *(2**k for k in range(1, 8) if 2**k < caps.logical_cores)})
        alternatives("threads", [{"threads": n} for n in counts])
        # The kernel-time knobs: validate drops the allocators this machine does not have.
        alternatives("allocator", [{"allocator": name} for name in ALLOCATORS])
        alternatives("wait policy", [{"omp_wait_policy": policy} for policy in WAIT_POLICIES])
    alternatives("adam", [{"adam": "fused"}])  # the same algorithm in one kernel: no compile to wait for
    if "compile" in include:
        alternatives("compile", [{"compile": "default"}])
    if "amp" in include:
        alternatives("amp", [{"amp": amp} for amp in (("bf16", "fp16") if spec.is_cuda else ("bf16",))])
    return groups


@dataclass(frozen=True)
class Quality:
    """A candidate's quality run, read for the guard."""

    trial: Trial
    target: float | None = None

    @property
    def loss(self) -> float:
        return self.trial.final_loss

    @property
    def time_to_target_s(self) -> float:
        """Training seconds until an epoch's mean loss first reached the target; NaN if never."""
        if self.target is None:
            return math.nan
        elapsed = 0.0
        for loss, seconds in zip(self.trial.epoch_losses, self.trial.epoch_times_s, strict=False):
            elapsed += seconds
            if loss <= self.target:
                return elapsed
        return math.nan


@dataclass(frozen=True)
class Recommendation:
    trial: Trial | None
    reason: str
    rejected: tuple[str, ...] = ()


def recommend(
    runs: Sequence[Trial],
    *,
    tolerance: float,
    target: float | None = None,
    reference_batch: int = REFERENCE_BATCH,
    max_batch: int | None = None,
) -> Recommendation:
    """The fastest candidate whose loss at the sample budget is within `tolerance` of the
    reference batch's; with a target loss, the one that reaches it soonest. Every faster
    candidate passed over is named with the reason. The reference batch is the yardstick even
    above `max_batch`, but no candidate is."""
    finished = [t for t in runs if t.ok and not math.isnan(t.final_loss)]
    reference = next((t for t in finished if t.batch == reference_batch), None)
    done = [t for t in finished if max_batch is None or t.batch <= max_batch]
    if not done:
        return Recommendation(None, "no quality run at or below the largest batch allowed finished; "
                              "nothing can be recommended")
    if target is not None:
        reached = [(Quality(t, target).time_to_target_s, t) for t in done]
        reached = [(s, t) for s, t in reached if not math.isnan(s)]
        if reached:
            seconds, best = min(reached, key=lambda pair: (pair[0], -pair[1].samples_per_s))
            missed = tuple(f"batch {t.batch} never reached loss {target:g} within the sample budget"
                           for t in done if all(t is not r for _, r in reached))
            return Recommendation(best, f"batch {best.batch} reached loss {target:g} first, "
                                  f"after {seconds:.1f} s of training", missed)
    if reference is None:
        fastest = max(done, key=lambda t: t.samples_per_s)
        return Recommendation(None, f"batch {fastest.batch} is the fastest "
                              f"({fastest.samples_per_s:.0f} samples/s), but the reference batch {reference_batch} "
                              "did not finish its quality run, so no candidate's loss can be checked")
    bound = reference.final_loss * (1 + tolerance)
    rejected: list[str] = []
    for trial in sorted(done, key=lambda t: -t.samples_per_s):
        if trial.final_loss <= bound:
            reason = _kept(trial, reference, tolerance, passed_over=len(rejected))
            if target is not None:
                reason += f"; no candidate reached the target loss {target:g}"
            return Recommendation(trial, reason, tuple(rejected))
        worse = trial.final_loss / reference.final_loss - 1
        rejected.append(f"batch {trial.batch} was faster ({trial.samples_per_s:.0f} samples/s) but its loss at "
                        f"the budget ({trial.final_loss:.2f}) is {worse:.1%} worse than batch {reference_batch}'s")
    # Only where the reference is above max_batch: it is within its own tolerance otherwise.
    return Recommendation(None, f"no batch up to {max_batch} has a loss at the budget within {tolerance:.0%} of "
                          f"batch {reference_batch}'s ({reference.final_loss:.2f})", tuple(rejected))


def _kept(trial: Trial, reference: Trial, tolerance: float, passed_over: int) -> str:
    """Why `trial` is recommended: its loss kept within `tolerance` of the reference's."""
    rate = f"{trial.samples_per_s:.0f} samples/s"
    if trial is not reference:
        return (f"batch {trial.batch} is the fastest candidate ({rate}) whose loss at the sample budget "
                f"({trial.final_loss:.2f}) is within {tolerance:.0%} of batch {reference.batch}'s "
                f"({reference.final_loss:.2f})")
    if passed_over:
        return (f"batch {trial.batch}, the reference ({rate}): each faster candidate's loss at the sample budget "
                f"is more than {tolerance:.0%} worse than its {trial.final_loss:.2f}")
    return f"batch {trial.batch}, the reference, is the fastest candidate ({rate})"


def parse_budget(text: str) -> float:
    """'120s', '2m', '1h' or a bare number of seconds; raises UsageError."""
    raw = text.strip().lower()
    scale = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(raw[-1:], None) if raw else None
    number = raw[:-1] if scale is not None else raw
    try:
        seconds = float(number) * (scale or 1.0)
    except ValueError:
        raise UsageError(f"not a duration: {text!r}; write e.g. 120s, 10m or 1h") from None
    if not seconds > 0 or math.isinf(seconds):
        raise UsageError(f"the budget must be a positive duration, got {text!r}")
    return seconds


def parse_include(text: str | None) -> tuple[str, ...]:
    """'compile,amp' as a tuple; raises UsageError naming an unknown item."""
    items = tuple(item.strip() for item in (text or "").split(",") if item.strip())
    unknown = [item for item in items if item not in INCLUDABLE]
    if unknown:
        raise UsageError(f"unknown --include item {unknown[0]!r}; choose from {', '.join(INCLUDABLE)}")
    return items
