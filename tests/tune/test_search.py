from __future__ import annotations

import dataclasses
import json
import math
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from vaebench.cli import main
from vaebench.errors import Interrupted
from vaebench.measure.run import RunOptions
from vaebench.result import FAILED, DataInfo, MonitorSummary, ProcessUsage, RunRecord, StepSplit, TrainMetrics
from vaebench.spec import Capabilities, RunSpec
from vaebench.tune.driver import TuneResult, TuneSettings, trial_from_record, tune
from vaebench.tune.report import TRIAL_COLUMNS, format_table, render_markdown, trials_frame, write
from vaebench.tune.search import (
    Quality,
    SearchResult,
    Trial,
    knob_groups,
    parse_budget,
    parse_include,
    recommend,
    refine_point,
    round_batch,
    scaled_lr,
    search_batch,
    trial_steps,
)

BASE = RunSpec(data="synthetic", samples=65_536)


def peaked(peak: float, top: float = 10_000.0, oom_at: int | None = None):
    """A throughput curve that rises to `peak` and falls after it, log-symmetric."""

    def rate(batch: int) -> float:
        return top / (1 + 0.3 * abs(math.log2(batch / peak)))

    calls: list[int] = []

    def measure(spec: RunSpec) -> Trial:
        calls.append(spec.batch_size)
        if oom_at is not None and spec.batch_size >= oom_at:
            return Trial(spec, status=FAILED, reason="out of memory: CUDA out of memory", wall_s=1.0)
        return Trial(spec, samples_per_s=rate(spec.batch_size), wall_s=1.0)

    return measure, calls


def test_climb_finds_a_power_of_two_peak_and_stops_when_throughput_falls() -> None:
    measure, calls = peaked(256)
    result = search_batch(BASE, measure, max_batch=65_536)
    assert result.best is not None and result.best.batch == 256
    assert max(calls) <= 1024, "the climb should stop soon after the peak"
    assert "fell" in result.stop_reason or "levelled" in result.stop_reason


def test_out_of_memory_bounds_the_search_and_the_safe_batch_has_a_margin() -> None:
    measure, calls = peaked(100_000, oom_at=4096)
    result = search_batch(BASE, measure, max_batch=65_536)
    assert result.first_oom == 4096
    assert 8192 not in calls
    assert "out of memory at batch 4096" in result.stop_reason
    # The refinement probes between the best and the boundary: 2896 ran, so it is the largest safe.
    assert [b for b in calls if b & (b - 1)] == [2896]
    assert result.largest_safe == 2896
    assert "largest batch that ran: 2896" in result.memory_note() and "or below 2048" in result.memory_note()


def test_the_first_out_of_memory_failure_bounds_the_safe_batch_whatever_ran_after_it() -> None:
    def trial(batch: int, rate: float = math.nan, reason: str = "") -> Trial:
        return Trial(RunSpec(batch_size=batch), status=FAILED if reason else "ok", reason=reason, samples_per_s=rate)

    # 128 ran out of memory (another tenant's, say) and 256 then ran: 128 is still the boundary.
    result = SearchResult([trial(64, 900.0), trial(96, reason="killed by signal 9"),
                           trial(128, reason="out of memory: CUDA out of memory"), trial(256, 1000.0),
                           trial(512, reason="out of memory: CUDA out of memory")])
    assert result.first_oom == 128
    assert result.largest_safe == 64  # not 96, which failed, nor 256, above the boundary
    assert "out of memory at batch 128; largest batch that ran: 64" in result.memory_note()


def test_refinement_finds_a_peak_between_powers_of_two() -> None:
    measure, calls = peaked(1448)
    result = search_batch(BASE, measure, max_batch=65_536)
    assert result.best is not None and result.best.batch == 1448
    assert result.best.stage == "refine"
    assert sum(1 for b in calls if b & (b - 1)) == 1, "one midpoint, on the better neighbour's side"


def test_refine_point_goes_towards_the_better_neighbour() -> None:
    def trial(batch: int, rate: float) -> Trial:
        return Trial(RunSpec(batch_size=batch), samples_per_s=rate)

    lower = SearchResult([trial(512, 90), trial(1024, 100), trial(2048, 50)])
    upper = SearchResult([trial(512, 50), trial(1024, 100), trial(2048, 90)])
    assert refine_point(lower, 65_536) == round_batch(math.sqrt(512 * 1024)) == 728
    assert refine_point(upper, 65_536) == 1448
    assert refine_point(upper, 1024) == 728, "never past --max-batch: the other side instead"


def test_round_batch_keeps_small_batches_whole_and_rounds_larger_ones_to_eights() -> None:
    assert round_batch(math.sqrt(8 * 16)) == round_batch(11.3) == 11  # between 8 and 16: not rounded to 8
    assert round_batch(0.4) == 1
    assert (round_batch(16.6), round_batch(21.0), round_batch(45.25)) == (16, 24, 48)  # past 16: eights
    lower = SearchResult([Trial(RunSpec(batch_size=b), samples_per_s=r) for b, r in ((4, 50), (8, 100), (16, 90))])
    assert refine_point(lower, 65_536) == 11


def test_plateau_stops_the_climb_well_before_max_batch() -> None:
    calls: list[int] = []

    def saturating(spec: RunSpec) -> Trial:
        calls.append(spec.batch_size)
        return Trial(spec, samples_per_s=10_000 * spec.batch_size / (spec.batch_size + 64), wall_s=1.0)

    result = search_batch(BASE, saturating, max_batch=65_536)
    assert "levelled off" in result.stop_reason
    assert max(calls) <= 8192, "two doublings past the knee, not up to 65536"
    assert result.best is not None and result.best.samples_per_s > 0.95 * 10_000 * 65_536 / (65_536 + 64)


def _curve(rates: dict[int, float]) -> Callable[[RunSpec], Trial]:
    def measure(spec: RunSpec) -> Trial:
        return Trial(spec, samples_per_s=rates[spec.batch_size], wall_s=1.0)

    return measure


def test_one_trial_that_fell_beside_one_that_held_is_a_plateau_not_a_fall() -> None:
    levelled = search_batch(BASE, _curve({16: 1000.0, 32: 1000.0, 64: 850.0, 24: 990.0}), max_batch=65_536)
    assert levelled.stop_reason == "2 doublings in a row gained less than 3%: throughput has levelled off"
    fell = search_batch(BASE, _curve({16: 1000.0, 32: 850.0, 64: 800.0, 24: 990.0}), max_batch=65_536)
    assert fell.stop_reason == "throughput fell more than 10% below the best (batch 16) 2 doublings in a row"


def test_budget_stops_cleanly_with_the_best_so_far() -> None:
    now = [0.0]

    def slow(spec: RunSpec) -> Trial:
        wall = spec.batch_size / 100  # a fake clock: bigger batches take longer
        now[0] += wall
        return Trial(spec, samples_per_s=float(spec.batch_size), wall_s=wall)

    result = search_batch(BASE, slow, max_batch=65_536, clock=lambda: now[0], deadline=10.0)
    assert result.budget_hit
    assert "budget" in result.stop_reason
    assert result.best is not None and result.best.batch == max(t.batch for t in result.trials)
    assert now[0] <= 10.0, "a trial that cannot finish in time is not started"


STOPS = [(KeyboardInterrupt(), signal.SIGINT), (Interrupted(signal.SIGTERM), signal.SIGTERM)]


@pytest.mark.parametrize(("stop", "signum"), STOPS)
def test_a_stop_mid_search_keeps_the_best_so_far(stop: BaseException, signum: int) -> None:
    measure, _ = peaked(1024)

    def stopped_at_64(spec: RunSpec) -> Trial:
        if spec.batch_size == 64:
            raise stop
        return measure(spec)

    result = search_batch(BASE, stopped_at_64, max_batch=65_536)
    assert result.interrupted == signum and [t.batch for t in result.trials] == [16, 32]
    assert result.stop_reason == "interrupted before batch 64 finished; best so far kept"
    assert result.best is not None and result.best.batch == 32


def test_trials_are_sized_so_warm_up_is_excluded_and_big_batches_stay_short() -> None:
    assert trial_steps(16) == 60  # 10 warm-up + 50 measured
    assert trial_steps(1024) == 26  # 10 warm-up + 16 measured
    assert trial_steps(65_536) == 10  # 5 warm-up + 5 measured: the loop drops half
    assert RunSpec().batch_size == 128


def _quality(batch: int, rate: float, loss: float, losses: tuple[float, ...] = ()) -> Trial:
    return Trial(RunSpec(batch_size=batch), samples_per_s=rate, final_loss=loss, stage="quality",
                 epoch_losses=losses or (loss,), epoch_times_s=(1.0,) * len(losses or (loss,)))


def test_quality_guard_rejects_the_fastest_when_its_loss_is_worse() -> None:
    runs = [_quality(128, 1000, 100.0), _quality(4096, 9000, 110.0), _quality(1024, 6000, 101.5)]
    rec = recommend(runs, tolerance=0.02)
    assert rec.trial is not None and rec.trial.batch == 1024
    assert len(rec.rejected) == 1 and "batch 4096" in rec.rejected[0] and "10.0% worse" in rec.rejected[0]
    assert "within 2%" in rec.reason


def test_the_reference_recommended_is_not_said_to_be_within_its_own_tolerance() -> None:
    passed_over = recommend([_quality(128, 1000, 100.0), _quality(4096, 9000, 110.0)], tolerance=0.02)
    assert passed_over.trial is not None and passed_over.trial.batch == 128
    assert "within" not in passed_over.reason and "each faster candidate" in passed_over.reason
    alone = recommend([_quality(128, 9000, 100.0), _quality(1024, 6000, 99.0)], tolerance=0.02)
    assert alone.reason == "batch 128, the reference, is the fastest candidate (9000 samples/s)"


def test_quality_guard_with_a_target_picks_the_first_to_reach_it() -> None:
    runs = [_quality(128, 1000, 100.0, (130, 110, 100)), _quality(512, 3000, 104.0, (111, 104)),
            _quality(4096, 9000, 120.0, (140, 120))]
    rec = recommend(runs, tolerance=0.02, target=111.0)
    assert rec.trial is not None and rec.trial.batch == 512  # reached 111 after 1 s; batch 128 after 2 s
    assert any("4096 never reached" in r for r in rec.rejected)


def test_an_epoch_loss_equal_to_the_target_reaches_it() -> None:
    assert Quality(_quality(512, 3000, 104.0, (111.0, 104.0)), target=111.0).time_to_target_s == 1.0
    assert Quality(_quality(512, 3000, 104.0, (111.5, 104.0)), target=111.0).time_to_target_s == 2.0


def test_of_two_that_reach_the_target_at_once_the_faster_is_recommended() -> None:
    runs = [_quality(128, 1000, 100.0, (112, 100)), _quality(512, 3000, 104.0, (110, 104)),
            _quality(1024, 5000, 104.0, (110, 104))]
    rec = recommend(runs, tolerance=0.02, target=111.0)
    assert rec.trial is not None and rec.trial.batch == 1024  # both after 1 s; 5,000 samples/s against 3,000


def test_with_no_tolerance_the_reference_and_an_equal_loss_are_kept() -> None:
    exact = recommend([_quality(128, 1000, 100.0), _quality(4096, 9000, 100.5)], tolerance=0.0)
    assert exact.trial is not None and exact.trial.batch == 128 and len(exact.rejected) == 1
    equal = recommend([_quality(128, 1000, 100.0), _quality(1024, 6000, 100.0)], tolerance=0.0)
    assert equal.trial is not None and equal.trial.batch == 1024


def test_no_batch_above_max_batch_is_recommended_though_the_reference_still_judges() -> None:
    # --max-batch 32: batch 128 runs as the yardstick only.
    runs = [_quality(128, 20_000, 180.0), _quality(32, 9_000, 131.0), _quality(16, 6_000, 121.0)]
    rec = recommend(runs, tolerance=0.02, max_batch=32)
    assert rec.trial is not None and rec.trial.batch == 32 and "of batch 128's (180.00)" in rec.reason
    assert recommend(runs, tolerance=0.02).trial.batch == 128  # type: ignore[union-attr]
    # Every candidate worse than the yardstick: nothing, and why.
    worse = recommend([_quality(128, 20_000, 100.0), _quality(32, 9_000, 131.0)], tolerance=0.02, max_batch=32)
    assert worse.trial is None and "no batch up to 32" in worse.reason and "batch 32 was faster" not in worse.reason
    assert recommend([_quality(128, 20_000, 100.0)], tolerance=0.02, max_batch=32).trial is None


def test_without_the_reference_nothing_is_recommended_but_the_fastest_is_named() -> None:
    rec = recommend([_quality(1024, 6000, 101.5)], tolerance=0.02)
    assert rec.trial is None, "an unchecked pick is not a recommendation"
    assert "batch 1024" in rec.reason and "batch 128 did not finish its quality run" in rec.reason
    assert recommend([], tolerance=0.02).trial is None


def test_lr_scaling() -> None:
    assert scaled_lr(1e-3, 512, "none") == 1e-3
    assert scaled_lr(1e-3, 512, "linear") == pytest.approx(4e-3)
    assert scaled_lr(1e-3, 512, "sqrt") == pytest.approx(2e-3)
    with pytest.raises(ValueError):
        scaled_lr(1e-3, 512, "cubic")


def test_knob_groups_skip_invalid_combinations() -> None:
    cpu = dict(knob_groups(RunSpec(), Capabilities(logical_cores=4), include=("amp",)))
    assert {s.loader for s in cpu["loader"]} == {"tensor", "device"}
    assert {s.threads for s in cpu["threads"]} == {1, 2, 4}
    assert [s.amp for s in cpu["amp"]] == ["bf16"]  # fp16 needs CUDA: skipped by validate
    assert "compile" not in cpu and "workers/pin memory" not in cpu
    gpu = dict(knob_groups(RunSpec(device="cuda"), Capabilities(cuda_devices=1, logical_cores=4)))
    assert any(s.pin_memory and s.workers == 4 for s in gpu["workers/pin memory"])
    assert [s.adam for s in gpu["adam"]] == [s.adam for s in cpu["adam"]] == ["fused"]
    assert "adam" not in dict(knob_groups(RunSpec(adam="fused"), Capabilities(logical_cores=4)))  # nothing to try


def test_the_knob_stage_tries_the_allocators_and_wait_policies_this_machine_has() -> None:
    bare = dict(knob_groups(RunSpec(), Capabilities(logical_cores=4)))
    assert "allocator" not in bare  # none found here: nothing to try, nothing to fail
    assert [s.omp_wait_policy for s in bare["wait policy"]] == ["active", "passive"]
    found = dict(knob_groups(RunSpec(), Capabilities(logical_cores=4, allocators=("jemalloc",))))
    assert [s.allocator for s in found["allocator"]] == ["jemalloc"]


def test_parsers() -> None:
    assert parse_budget("120s") == 120 and parse_budget("2m") == 120 and parse_budget("90") == 90
    for bad in ("abc", "-5s", "0", ""):
        with pytest.raises(ValueError):
            parse_budget(bad)
    assert parse_include("compile, amp") == ("compile", "amp")
    with pytest.raises(ValueError, match="unknown --include item 'fp8'"):
        parse_include("compile,fp8")


@pytest.mark.parametrize("argv, message", [
    (["--budget", "abc"], "not a duration"),
    (["--target-loss", "-3"], "--target-loss must be positive"),
    (["--include", "turbo"], "unknown --include item"),
    (["--max-batch", "0"], "--max-batch must be at least 16"),
    (["--max-batch", "3"], "--max-batch must be at least 16, got 3"),  # the search starts at 16
    (["--samples", "10"], "--samples must be at least 128, the seed's batch"),
    (["--target-loss", "inf"], "--target-loss must be a finite number"),
    (["--tolerance", "nan"], "must be a finite number"),
    (["--budget", "inf"], "positive duration"),
    (["--samples", "1000000000000"], "samples must be at most 1,000,000"),
    (["--quality-samples", "1000000000000"], "--quality-samples must be at most"),
    (["--threads", "99999"], "threads must be at most 1,024"),
    (["--out", ""], "--out must name a folder"),
    (["--max-batch", "x"], "see `vaebench tune --help`"),
])
def test_cli_rejects_bad_values_in_one_line(argv: list[str], message: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tune", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def _record(spec: RunSpec, options: RunOptions, rate: float, loss: float) -> RunRecord:
    epochs = spec.epochs if spec.steps is None else 1
    train = TrainMetrics(
        t_import_s=1, t_data_s=1, t_model_s=0, t_first_step_s=0.1, train_s=1, steps_done=10, samples_seen=100,
        warmup_steps=5, step_median_ms=1, step_iqr_ms=0.1, samples_per_s=rate, epoch_s=1, final_loss=loss,
        epoch_losses=[loss + 10 * (epochs - e - 1) for e in range(epochs)], epoch_times_s=[1.0] * epochs,
        split=StepSplit(), model_flops_per_s=1, peak_flops_per_s=math.nan, flops_frac=math.nan,
    )
    usage = ProcessUsage(real_s=2, user_s=2, sys_s=0, peak_rss_mb=500, ctx_voluntary=0, ctx_involuntary=0,
                         exit_code=0)
    return RunRecord(spec=spec, run_id=f"r{spec.batch_size}-{spec.loader}", started_at="now", sweep=options.sweep,
                     process=usage, train=train, monitor=MonitorSummary())


def test_tune_wires_search_knobs_and_guard_with_fakes(tmp_path: Path) -> None:
    """The whole tune without torch: a fake screen, a fake isolated runner, a fake clock."""
    measure, _ = peaked(1024)
    now = [0.0]
    ran: list[RunSpec] = []

    def screen(base: RunSpec, data: DataInfo, **kw: object) -> SearchResult:
        return search_batch(base, measure, max_batch=int(kw["max_batch"]))  # type: ignore[arg-type]

    def run(spec: RunSpec, data: DataInfo, options: RunOptions) -> RunRecord:
        ran.append(spec)
        now[0] += 1
        rate = measure(spec).samples_per_s * (1.5 if spec.loader == "tensor" else 1.0)
        # Big batches see fewer optimizer steps: a worse loss at the same number of samples.
        return _record(spec, options, rate, 100 + spec.batch_size / 200)

    settings = TuneSettings(base=BASE, budget_s=100, lr_scaling="sqrt", quality_samples=4 * BASE.samples)
    data = DataInfo("synthetic", BASE.samples, 1.0, "")
    result = tune(settings, data, RunOptions(out=tmp_path), Capabilities(logical_cores=2),
                  report=lambda line: None, clock=lambda: now[0], run=run, screen=screen)
    assert result.config is not None and result.config.loader == "tensor", "a clearly faster loader is adopted"
    quality = {t.batch: t for t in result.quality}
    assert 128 in quality and 1024 in quality
    assert quality[512].spec.lr == pytest.approx(1e-3 * 2)  # sqrt(512 / 128)
    assert all(t.spec.loader == "tensor" and t.spec.epochs == 4 for t in result.quality)
    rec = result.recommendation
    assert rec.trial is not None and rec.trial.batch < 1024 and rec.rejected
    path = write(result, tmp_path)
    text = path.read_text()
    assert "## Recommendation" in text and "tune_throughput.png" in text and (tmp_path / "tune_loss.png").exists()
    assert json.loads((tmp_path / "tune.json").read_text())["recommendation"]["spec"]["batch_size"] == rec.trial.batch
    frame = trials_frame(result)
    assert {"climb", "refine", "confirm", "knob", "quality"} <= set(frame["stage"])


def _tune_peaked_at_512(tmp_path: Path, settings: TuneSettings, *, tick_s: float,
                       gain: Callable[[RunSpec], float] = lambda spec: 1.0) -> TuneResult:
    """`tune` on a fake machine whose throughput peaks at batch 512; each isolated run advances
    the clock by `tick_s` and is `gain(spec)` times as fast as the search measured."""
    measure, _ = peaked(512)
    now = [0.0]

    def screen(base: RunSpec, data: DataInfo, **kw: object) -> SearchResult:
        return search_batch(base, measure, max_batch=int(kw["max_batch"]))  # type: ignore[arg-type]

    def run(spec: RunSpec, data: DataInfo, options: RunOptions) -> RunRecord:
        now[0] += tick_s
        return _record(spec, options, measure(spec).samples_per_s * gain(spec), 100.0)

    caps = Capabilities(logical_cores=2, allocators=("jemalloc", "tcmalloc"))
    return tune(settings, DataInfo("synthetic", BASE.samples, 1.0, ""), RunOptions(out=tmp_path), caps,
                report=lambda line: None, clock=lambda: now[0], run=run, screen=screen)


def test_a_budget_that_ends_in_the_knobs_names_every_knob_left_untried(tmp_path: Path) -> None:
    settings = TuneSettings(base=BASE, budget_s=1000, quality_samples=BASE.samples, include=("amp", "compile"))
    result = _tune_peaked_at_512(tmp_path, settings, tick_s=100)  # every run eats a tenth of the budget
    (note,) = [n for n in result.notes if n.startswith("time budget: ") and "a larger --budget" in n]
    assert "compile" in note and "amp" in note
    assert note.startswith("time budget: not tried: ") or " was tried in part; not tried: " in note


def test_a_knob_stopped_halfway_reads_as_tried_in_part() -> None:
    from vaebench.tune.driver import _untried

    assert _untried(["threads", "allocator"], part_tried=True) == (
        "time budget: threads was tried in part; not tried: allocator; a larger --budget tries them")
    assert _untried(["allocator"], part_tried=False) == (
        "time budget: not tried: allocator; a larger --budget tries them")


def test_a_faster_allocator_is_adopted_and_named_in_the_recommendation_with_its_gain(tmp_path: Path) -> None:
    settings = TuneSettings(base=BASE, budget_s=1000, quality_samples=BASE.samples)
    result = _tune_peaked_at_512(tmp_path, settings, tick_s=1,
                                 gain=lambda spec: 1.25 if spec.allocator == "jemalloc" else 1.0)
    assert result.config is not None and result.config.allocator == "jemalloc"
    assert {t.spec.allocator for t in result.knobs} >= {"jemalloc", "tcmalloc"}
    assert any(a.startswith("allocator: --allocator jemalloc measured") and
               "its slower run 1.25x the current's faster, at batch 512" in a
               for a in result.adopted)  # measured at the search's best batch, whichever is recommended
    assert "with allocator: --allocator jemalloc" in result.recommendation.reason
    assert set(trials_frame(result)["allocator"]) == {"system", "jemalloc", "tcmalloc"}


def test_the_quality_runs_are_planned_at_the_isolated_runs_speed_not_the_search_s(tmp_path: Path) -> None:
    """A search beside a neighbour (or in a cold process) can read far slower than the same
    batch runs alone: the confirm run scales the search's rates before they size the guard."""
    settings = TuneSettings(base=BASE, budget_s=100, quality_samples=10 * BASE.samples)
    result = _tune_peaked_at_512(tmp_path, settings, tick_s=1, gain=lambda spec: 10.0)
    assert {t.batch for t in result.quality} >= {128, 512}  # ~15 s each alone, not the search's ~110 s
    assert not [n for n in result.notes if n.startswith("time budget: no quality run")]


def test_runs_beside_a_busy_neighbour_are_named_first_in_the_notes(tmp_path: Path) -> None:
    measure, _ = peaked(512)

    def screen(base: RunSpec, data: DataInfo, **kw: object) -> SearchResult:
        return search_batch(base, measure, max_batch=int(kw["max_batch"]))  # type: ignore[arg-type]

    def run(spec: RunSpec, data: DataInfo, options: RunOptions) -> RunRecord:
        record = _record(spec, options, measure(spec).samples_per_s, 100.0)
        return dataclasses.replace(record, monitor=MonitorSummary(neighbour_cpu_pct=95.0))

    settings = TuneSettings(base=BASE, budget_s=1000, quality_samples=BASE.samples)
    result = tune(settings, DataInfo("synthetic", BASE.samples, 1.0, ""), RunOptions(out=tmp_path),
                  Capabilities(logical_cores=2), report=lambda line: None, clock=iter(range(10_000)).__next__,
                  run=run, screen=screen)
    assert result.notes[0].startswith(f"{len(result.knobs) + len(result.quality)} runs of this tune ran beside a "
                                      "busy neighbour (processes outside them used up to 95% of a core")


def test_a_knob_faster_in_one_run_only_is_not_adopted(tmp_path: Path) -> None:
    """A lucky first run (a quiet moment on a busy machine) must not adopt a knob: its second
    run and the current best's second run, A B B A, decide."""
    settings = TuneSettings(base=BASE, budget_s=1000, quality_samples=BASE.samples)
    jemalloc_runs = [0]

    def gain(spec: RunSpec) -> float:
        if spec.allocator != "jemalloc":
            return 1.0
        jemalloc_runs[0] += 1
        return 1.10 if jemalloc_runs[0] == 1 else 1.0

    result = _tune_peaked_at_512(tmp_path, settings, tick_s=1, gain=gain)
    assert result.config is not None and result.config.allocator == "system"
    assert jemalloc_runs[0] == 2 and not any(a.startswith("allocator") for a in result.adopted)
    (note,) = [n for n in result.notes if n.startswith("--allocator jemalloc: faster in its first run")]
    assert "not adopted" in note and "noise" in note and "adopting takes 1.03x" in note
    stages = [(t.stage, t.spec.allocator) for t in result.knobs]
    i = stages.index(("knob", "jemalloc"))
    assert stages[i:i + 3] == [("knob", "jemalloc"), ("knob", "jemalloc"), ("confirm", "system")]


def rising(memory_per_sample_mb: float = 0.05):
    """A throughput curve that keeps rising and memory that grows with the batch: no OOM."""

    def measure(spec: RunSpec) -> Trial:
        return Trial(spec, samples_per_s=float(spec.batch_size), wall_s=1.0,
                     alloc_peak_mb=200 + memory_per_sample_mb * spec.batch_size)

    return measure


def test_a_search_capped_by_the_epoch_says_so_not_that_memory_bounded_it() -> None:
    result = search_batch(BASE, rising(), max_batch=16_384)
    result.limit, result.device_total_mb = "the epoch size (16384 samples; a larger batch is meaningless)", 143_771.0
    assert result.reached_max and result.first_oom is None
    note = result.memory_note()
    assert "no out-of-memory failure: the search stopped at the epoch size (16384 samples" in note
    assert "not at a memory limit" in note and "within the range searched" not in note
    assert "largest batch run (16384) peaked at 1,019 MB of the device's 143,771 MB (torch allocator peak)" in note


def test_a_search_that_levelled_off_says_memory_did_not_bound_it() -> None:
    measure, _ = peaked(256)
    result = search_batch(BASE, measure, max_batch=65_536)
    note = result.memory_note()
    assert not result.reached_max
    assert "no out-of-memory failure up to batch 1024" in note and "had no memory measure" in note
    assert "ended for another reason (see the batch search), not at a memory limit" in note
    assert SearchResult().memory_note() == "no batch size ran, so nothing is known about memory"


def test_isolated_cuda_trials_carry_nvml_memory_and_training_window_utilization() -> None:
    spec = RunSpec(device="cuda", batch_size=512)
    record = _record(spec, RunOptions(out=Path(".")), 5000.0, 100.0)
    record = dataclasses.replace(record, monitor=MonitorSummary(gpu_util_mean=37.0, gpu_mem_max_mb=1500.0))
    trial = trial_from_record(record, "knob")
    assert trial.gpu_util == 37.0
    assert (trial.device_mem_mb, trial.rss_peak_mb) == (1500.0, 500.0) and math.isnan(trial.alloc_peak_mb)
    assert trial.memory == (1500.0, "NVML device memory in use, CUDA context included")
    cpu = trial_from_record(_record(RunSpec(), RunOptions(out=Path(".")), 5000.0, 100.0), "knob")
    assert math.isnan(cpu.device_mem_mb) and cpu.memory == (500.0, "peak RSS")
    assert Trial.from_dict(trial.to_dict()) == trial


def test_tune_md_shows_gpu_utilization_per_batch_and_keeps_memory_measures_apart() -> None:
    base = RunSpec(device="cuda", data="synthetic", samples=4096)
    search = SearchResult([
        Trial(dataclasses.replace(base, batch_size=b), samples_per_s=100.0 * b, gpu_util=u, alloc_peak_mb=m,
              stage="climb") for b, u, m in ((256, 11.0, 300.0), (512, 19.0, 500.0))
    ])
    confirm = Trial(dataclasses.replace(base, batch_size=512), samples_per_s=50_000, gpu_util=21.0,
                    device_mem_mb=1800.0, rss_peak_mb=900.0, stage="confirm")
    result = TuneResult(TuneSettings(base=base), search, knobs=[confirm], wall_s=5.0)
    frame = trials_frame(result)
    assert "memory_mb" not in frame and {"alloc_peak_mb", "device_mem_mb", "rss_peak_mb"} <= set(frame)
    text = render_markdown(result, frame, [])
    section = text.split("## GPU utilization per batch size")[1].split("## Trials")[0]
    assert "| 256 | climb | seed pipeline | 25,600 | 11.00 |" in section
    assert "| 512 | confirm | seed pipeline | 50,000 | 21.00 |" in section
    assert "share of time any kernel ran" in section
    assert "not comparable" in text and "torch allocator peak" in text
    assert "alloc_peak_mb" in format_table(frame)
    cpu_base = RunSpec(data="synthetic", samples=4096)
    cpu = TuneResult(TuneSettings(base=cpu_base), SearchResult([Trial(cpu_base, samples_per_s=10.0, stage="climb")]))
    cpu_text = render_markdown(cpu, trials_frame(cpu), [])
    assert "GPU utilization" not in cpu_text and "gpu_util_pct" not in cpu_text
    assert "alloc_peak_mb" not in format_table(trials_frame(cpu))


def test_a_tune_without_a_trial_still_writes_its_tables(tmp_path: Path) -> None:
    """A search process that died before its first trial (not interrupted) leaves no trial: the
    tables keep their columns, and tune.md says no recommendation, rather than a KeyError."""
    base = RunSpec(data="synthetic", samples=4096)
    empty = TuneResult(TuneSettings(base=base), SearchResult([]), wall_s=3.0)
    frame = trials_frame(empty)
    assert frame.empty and tuple(frame.columns) == TRIAL_COLUMNS
    one = TuneResult(TuneSettings(base=base), SearchResult([Trial(base, samples_per_s=10.0, stage="climb")]))
    assert tuple(trials_frame(one).columns) == TRIAL_COLUMNS
    assert format_table(frame) == "no trial finished"
    assert "No recommendation" in write(empty, tmp_path).read_text()


def test_the_trials_tables_show_every_knob_a_trial_changed() -> None:
    base = RunSpec(data="synthetic", samples=4096)
    search = SearchResult([Trial(base, samples_per_s=10_000.0, stage="climb")])
    fused = Trial(dataclasses.replace(base, adam="fused"), samples_per_s=8_000.0, stage="knob")
    result = TuneResult(TuneSettings(base=base), search, knobs=[fused])
    frame = trials_frame(result)
    assert frame["adam"].tolist() == ["auto", "fused"]
    table = format_table(frame)
    assert "adam" in table.splitlines()[0] and "fused" in table
    assert "compile" not in table.splitlines()[0]  # no trial changed it
    trials = render_markdown(result, frame, []).split("## Trials")[1]
    assert " adam |" in trials and "| fused |" in trials
    assert "Every trial: lr 0.001, workers 0, pin off, compile off, amp off." in trials  # not a column each
    assert "| compile |" not in trials and "| 10,000 |" in trials  # samples/s as the terminal shows it
    assert "not comparable" not in trials  # one memory column has nothing to be compared with


def test_tune_caps_the_search_at_the_epoch_and_names_that_cap(tmp_path: Path) -> None:
    base = RunSpec(data="synthetic", samples=1024)
    measure = rising()

    def screen(base: RunSpec, data: DataInfo, **kw: object) -> SearchResult:
        return search_batch(base, measure, max_batch=int(kw["max_batch"]))  # type: ignore[arg-type]

    def run(spec: RunSpec, data: DataInfo, options: RunOptions) -> RunRecord:
        return _record(spec, options, float(spec.batch_size), 100.0)

    result = tune(TuneSettings(base=base, budget_s=100), DataInfo("synthetic", 1024, 1.0, ""), RunOptions(out=tmp_path),
                  Capabilities(logical_cores=1), report=lambda line: None, clock=lambda: 0.0, run=run, screen=screen)
    assert max(t.batch for t in result.search.trials) == 1024
    assert "stopped at the epoch size (1024 samples" in result.search.memory_note()
    capped = tune(TuneSettings(base=base, budget_s=100, max_batch=256), DataInfo("synthetic", 1024, 1.0, ""),
                  RunOptions(out=tmp_path), Capabilities(logical_cores=1), report=lambda line: None,
                  clock=lambda: 0.0, run=run, screen=screen)
    assert "stopped at --max-batch 256" in capped.search.memory_note()


def test_real_tiny_tune_on_the_cpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tune"
    code = main(["tune", "--device", "cpu", "--data", "synthetic", "--samples", "1024", "--max-batch", "32",
                 "--budget", "60s", "--quality-samples", "1024", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "recommendation:" in printed
    assert (out / "tune.md").exists() and (out / "runs.jsonl").exists() and (out / "tune_throughput.png").exists()
    result = json.loads((out / "tune.json").read_text())
    stages = {t["stage"] for t in result["trials"]}
    assert {"climb", "confirm"} <= stages
    # A machine shared with other jobs may be too slow for 60 s: then no pick, and the budget it needs.
    if code == 0:
        assert result["recommendation"] is not None and "quality" in stages
    else:
        assert code == 1 and result["recommendation"] is None and "needs about --budget" in printed, printed
    assert dataclasses.asdict(DataInfo("a", 1, 1.0, ""))  # keeps the import honest


def test_a_budget_too_short_for_the_quality_guard_recommends_nothing_and_says_what_is_needed(
    tmp_path: Path,
) -> None:
    measure, _ = peaked(1024)
    now = [0.0]

    def screen(base: RunSpec, data: DataInfo, **kw: object) -> SearchResult:
        return search_batch(base, measure, max_batch=int(kw["max_batch"]))  # type: ignore[arg-type]

    def run(spec: RunSpec, data: DataInfo, options: RunOptions) -> RunRecord:
        now[0] += 25.0  # every isolated run takes 25 s of a 60 s budget
        return _record(spec, options, measure(spec).samples_per_s, 100.0)

    settings = TuneSettings(base=BASE, budget_s=60, quality_samples=4 * BASE.samples)
    result = tune(settings, DataInfo("synthetic", BASE.samples, 1.0, ""), RunOptions(out=tmp_path),
                  Capabilities(logical_cores=2), report=lambda line: None, clock=lambda: now[0], run=run,
                  screen=screen)
    rec = result.recommendation
    assert rec.trial is None and not result.quality
    assert "time budget ran out before the quality guard" in rec.reason and "--budget" in rec.reason
    needed = float(rec.reason.split("--budget ")[1].split("s")[0])
    assert needed > 60


def test_cli_refuses_a_budget_that_cannot_fit_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tune"
    assert main(["tune", "--budget", "5s", "--data", "synthetic", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--budget 5s cannot fit" in err and "at least" in err and err.count("\n") == 1
    assert not out.exists()


def test_cli_exits_1_when_the_budget_left_no_quality_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import vaebench.tune.driver as driver

    measure, _ = peaked(64)
    now = [0.0]

    def screen(base: RunSpec, data: DataInfo, **kw: object) -> SearchResult:
        return search_batch(base, measure, max_batch=int(kw["max_batch"]))  # type: ignore[arg-type]

    def run(spec: RunSpec, data: DataInfo, options: RunOptions) -> RunRecord:
        now[0] += 30.0
        return _record(spec, options, measure(spec).samples_per_s, 100.0)

    real = driver.tune
    monkeypatch.setattr(driver, "tune", lambda *args, **kwargs: real(*args, clock=lambda: now[0], run=run,
                                                                     screen=screen, **kwargs))
    code = main(["tune", "--budget", "60s", "--data", "synthetic", "--samples", "1024", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert code == 1, printed
    assert "recommendation: none: the time budget ran out" in printed and "--budget" in printed
    assert "NOT quality-checked" not in printed


def test_only_the_quality_runs_report_a_loss_at_the_budget_and_a_time_to_target() -> None:
    base = RunSpec(data="synthetic", samples=4096)
    quality = Trial(base, samples_per_s=100.0, final_loss=150.0, stage="quality", epoch_losses=(200.0, 150.0),
                    epoch_times_s=(1.0, 1.0))
    knob = Trial(base, samples_per_s=100.0, final_loss=120.0, stage="knob", epoch_losses=(200.0, 120.0),
                 epoch_times_s=(1.0, 1.0))  # trained longer than the budget: its loss is not at the budget
    frame = trials_frame(TuneResult(TuneSettings(base=base, target_loss=160.0), SearchResult([]), knobs=[knob],
                                    quality=[quality])).set_index("stage")
    assert frame.loc["quality", "loss_at_budget"] == 150.0 and frame.loc["quality", "time_to_target_s"] == 2.0
    assert math.isnan(frame.loc["knob", "loss_at_budget"]) and math.isnan(frame.loc["knob", "time_to_target_s"])


def test_the_throughput_figure_names_the_pipelines_its_points_ran() -> None:
    from vaebench.tune.report import throughput_figure

    base = RunSpec(data="synthetic", samples=4096)
    climb = [Trial(dataclasses.replace(base, batch_size=b), samples_per_s=100.0 * b, stage="climb") for b in (16, 32)]
    quality = [Trial(dataclasses.replace(base, batch_size=32, loader="tensor"), samples_per_s=9000.0,
                     final_loss=150.0, stage="quality")]
    figure = throughput_figure(trials_frame(TuneResult(TuneSettings(base=base), SearchResult(climb),
                                                      quality=quality)), None)
    assert figure is not None
    labels = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert labels == ["batch search (short trials, seed pipeline)", "quality (isolated runs, loader=tensor)"]
    assert [tick.get_text() for tick in figure.axes[0].get_xticklabels()] == ["16", "32"]


def _tune_stopped(monkeypatch: pytest.MonkeyPatch, stop: BaseException, *, isolated_runs: int,
                  screened: int | None = None) -> None:
    """`tune` from the command line on a fake machine, stopped by `stop` after `isolated_runs`
    isolated runs, or (with `screened`) in the search after that many screen trials."""
    import vaebench.tune.driver as driver

    measure, _ = peaked(64)
    ran: list[RunSpec] = []

    def screen(base: RunSpec, data: DataInfo, **kw: object) -> SearchResult:
        if screened is None:
            return search_batch(base, measure, max_batch=int(kw["max_batch"]))  # type: ignore[arg-type]
        trials = [measure(dataclasses.replace(base, batch_size=16 << n)) for n in range(screened)]
        return SearchResult(trials=trials, stop_reason="interrupted; trials finished before that are kept",
                            interrupted=signal.SIGINT)

    def run(spec: RunSpec, data: DataInfo, options: RunOptions) -> RunRecord:
        if len(ran) == isolated_runs:
            raise stop
        ran.append(spec)
        return _record(spec, options, measure(spec).samples_per_s, 100.0)

    real = driver.tune
    monkeypatch.setattr(driver, "tune", lambda *args, **kwargs: real(*args, run=run, screen=screen, **kwargs))


@pytest.mark.parametrize(("stop", "signum"), STOPS)
def test_an_interrupted_tune_writes_the_trials_that_finished_and_says_what_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], stop: BaseException,
    signum: int,
) -> None:
    _tune_stopped(monkeypatch, stop, isolated_runs=2)  # the confirm run and one knob's, then the next knob's stopped
    out = tmp_path / "tune"
    assert main(["tune", "--data", "synthetic", "--samples", "1024", "--out", str(out)]) == 128 + signum
    err = capsys.readouterr().err
    # Was: 'interrupted', with no tune.md and no word of what was kept.
    assert (f"interrupted; what finished is kept: the tune's trials so far in {out / 'tune.md'}, with no "
            f"recommendation, and its 2 isolated runs in {out / 'runs.jsonl'}, which `vaebench report {out}` "
            "reads; the same command starts the tune over") in err
    assert "No recommendation: interrupted during the pipeline knobs" in (out / "tune.md").read_text()
    tuned = json.loads((out / "tune.json").read_text())
    assert tuned["recommendation"] is None
    assert [t["stage"] for t in tuned["trials"] if t["stage"] not in ("climb", "refine")] == ["confirm", "knob"]


def test_a_tune_stopped_in_the_screen_writes_the_screened_trials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _tune_stopped(monkeypatch, KeyboardInterrupt(), isolated_runs=0, screened=2)
    out = tmp_path / "tune"
    assert main(["tune", "--data", "synthetic", "--samples", "1024", "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert f"the tune's trials so far in {out / 'tune.md'}, with no recommendation; the same command" in err
    assert "No recommendation: interrupted during the batch search" in (out / "tune.md").read_text()
    assert [t["spec"]["batch_size"] for t in json.loads((out / "tune.json").read_text())["trials"]] == [16, 32]


def test_a_tune_stopped_before_any_trial_finished_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _tune_stopped(monkeypatch, KeyboardInterrupt(), isolated_runs=0, screened=0)
    out = tmp_path / "tune"
    assert main(["tune", "--data", "synthetic", "--samples", "1024", "--out", str(out)]) == 130
    assert "interrupted before any trial finished, so there is nothing to report on" in capsys.readouterr().err
    assert not (out / "tune.md").exists()
