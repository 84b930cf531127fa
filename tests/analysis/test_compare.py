from __future__ import annotations

import dataclasses
import json
import random
import statistics
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from vaebench import rules
from vaebench.analysis import compare as cmp
from vaebench.analysis.calibration import calibration_report, recommend
from vaebench.cli import main, parse_fraction
from vaebench.errors import UsageError
from vaebench.result import RunSeries
from vaebench.spec import RunSpec
from vaebench.storage import SERIES_DIR, append_row, write_json_atomic

SPEC = RunSpec(batch_size=128, epochs=1, data="embedded-5k")
OTHER = RunSpec(batch_size=256, epochs=1, data="embedded-5k")
MACHINE = {"fp_cpu_model": "Xeon 8480", "fp_gpu_name": "", "fp_torch": "2.5.1",
           "fp_threads_env": "OMP_NUM_THREADS=4", "fp_hostname": "ci-1"}


def rows(
    slowdown: float = 1.0,
    noise: float = 0.01,
    n: int = 5,
    seed: int = 0,
    spec: RunSpec = SPEC,
    loss: float = 100.0,
    **extra: Any,
) -> list[dict[str, Any]]:
    """n runs whose time-like metrics are `slowdown` times a base, with log-normal-ish noise."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        factor = slowdown * (1 + rng.gauss(0, noise))
        out.append({
            "schema_version": 1, "run_id": f"{spec.key()}-{seed}-{i}", "spec_key": spec.key(), "repeat": i,
            "status": "ok", **spec.to_dict(), "warmup_steps": 2,
            "samples_per_s": spec.batch_size * 1000 / (5.0 * factor), "epoch_s": 60.0 * factor,
            "real_s": 70.0 * factor, "user_s": 65.0 * factor, "sys_s": 2.0 * factor,
            "peak_rss_mb": 900.0, "final_loss": loss + rng.gauss(0, 0.05),
            **MACHINE, **extra,
        })
    return out


def frame(*groups: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([row for group in groups for row in group])


def verdicts(comparison: cmp.Comparison) -> dict[str, str]:
    return {c.metric: c.verdict for c in comparison.checks}


# --- the decision rule on synthetic samples with known effects -----------------------------


def again(table: pd.DataFrame) -> pd.DataFrame:
    """The same values under new run ids: other runs that measured exactly the same."""
    return table.assign(run_id=table["run_id"] + "-again")


def test_identical_samples_pass_as_unchanged():
    same = frame(rows(seed=1))
    result = cmp.compare(same, again(same))
    assert verdicts(result) == {"samples_per_s": cmp.UNCHANGED, "epoch_s": cmp.UNCHANGED}
    assert result.exit_code == 0
    assert all(c.ratio == pytest.approx(1.0) for c in result.checks)


def test_same_distribution_different_draws_is_not_a_regression():
    result = cmp.compare(frame(rows(seed=1)), frame(rows(seed=2)))
    assert not result.regressed
    assert set(verdicts(result).values()) == {cmp.UNCHANGED}


def test_planted_slowdown_with_low_noise_is_a_regression():
    result = cmp.compare(frame(rows(seed=1)), frame(rows(1.20, seed=2)))
    assert verdicts(result) == {"samples_per_s": cmp.REGRESSION, "epoch_s": cmp.REGRESSION}
    assert result.exit_code == 1
    throughput = next(c for c in result.checks if c.metric == "samples_per_s")
    assert throughput.ratio == pytest.approx(1 / 1.2, rel=0.03)  # samples/s fell
    assert throughput.change == pytest.approx(0.2, abs=0.03)  # the same slowdown as epoch time
    assert throughput.ci_high < 1 / 1.1
    assert throughput.p_value <= 0.05
    sentence = str(throughput)
    assert "slower" in sentence and "regression" in sentence and "samples/s" in sentence
    assert "Regression found" in str(result)


def test_ten_percent_slowdown_against_a_five_percent_threshold():
    result = cmp.compare(frame(rows(seed=1)), frame(rows(1.10, seed=2)), threshold=0.05)
    assert verdicts(result)["epoch_s"] == cmp.REGRESSION


def test_large_noise_is_inconclusive_not_a_regression():
    result = cmp.compare(frame(rows(noise=0.3, seed=1)), frame(rows(1.2, noise=0.3, seed=2)))
    assert not result.regressed
    # samples/s is the same change read the other way up: its interval, inverted into a cost,
    # must reach past the threshold as epoch time's does, not shrink into "unchanged".
    assert verdicts(result) == {"samples_per_s": cmp.INCONCLUSIVE, "epoch_s": cmp.INCONCLUSIVE}
    assert result.exit_code == 0


def test_significant_change_below_the_threshold_is_not_a_regression():
    check = cmp.check_metric("k", "c", "epoch_s", [60, 60.3, 59.8, 60.1, 59.9], [63, 63.2, 62.9, 63.1, 63.3])
    assert check.p_value <= 0.05
    assert check.verdict == cmp.UNCHANGED
    assert "significant" in check.reason


def test_a_change_of_exactly_the_threshold_counts_as_past_it():
    # "At least 1 + threshold" (module docstring): medians 10 and 11 are a cost of exactly 1.1,
    # and 5 untied runs a side, every candidate run slower, give p = 1/252.
    base, slower = [9.6, 9.8, 10.0, 10.2, 10.4], [10.8, 10.9, 11.0, 11.1, 11.2]
    regression = cmp.check_metric("k", "c", "epoch_s", base, slower, threshold=0.1)
    assert regression.change == pytest.approx(0.1) and regression.p_value <= 0.05
    assert regression.verdict == cmp.REGRESSION
    # The same numbers as samples/s are a cost of exactly 1 / 1.1: an improvement.
    improvement = cmp.check_metric("k", "c", "samples_per_s", base, slower, threshold=0.1)
    assert improvement.verdict == cmp.IMPROVEMENT


def test_three_runs_a_side_past_the_threshold_but_not_significant_ask_for_repeats():
    # 3 a side can reach p = 1/20 = alpha, so the reason is noise, not the run count.
    check = cmp.check_metric("k", "c", "epoch_s", [10.0, 10.5, 11.0], [9.9, 12.0, 13.0])
    assert check.change > 0.1 and check.verdict == cmp.INCONCLUSIVE
    assert check.reason == "past the 10% threshold but not significant; add repeats"


def test_speedup_is_reported_as_an_improvement():
    result = cmp.compare(frame(rows(seed=1)), frame(rows(0.75, seed=2)))
    assert verdicts(result) == {"samples_per_s": cmp.IMPROVEMENT, "epoch_s": cmp.IMPROVEMENT}
    assert result.exit_code == 0
    assert "faster" in str(result.checks[0])


def test_one_run_a_side_is_never_judged_unchanged():
    check = cmp.check_metric("k", "c", "epoch_s", [60.0], [60.0])
    assert check.verdict == cmp.INCONCLUSIVE
    slow = cmp.check_metric("k", "c", "epoch_s", [60.0], [90.0])
    assert slow.verdict == cmp.INCONCLUSIVE  # 50 % slower, but one run cannot be significant
    # One baseline run is too few however many candidate runs there are: 1 against 20 could
    # reach p = 1/21, but one run says nothing about the baseline's noise.
    many = cmp.check_metric("k", "c", "epoch_s", [60.0], [60.0 + 0.01 * i for i in range(20)])
    assert many.verdict == cmp.INCONCLUSIVE
    assert "too few runs" in many.reason


def test_two_runs_a_side_cannot_be_significant_and_the_comparison_says_so():
    # Half the throughput, 2 runs a side: the exact test's smallest p is 1/6, above alpha 0.05.
    result = cmp.compare(frame(rows(n=2, seed=1)), frame(rows(2.0, n=2, seed=2)))
    assert not result.regressed and verdicts(result)["samples_per_s"] == cmp.INCONCLUSIVE
    check = result.checks[0]
    assert check.p_floor == pytest.approx(1 / 6)
    assert "2 and 2 runs cannot reach p ≤ 0.05 (the smallest possible p is 0.167); it takes 3 a side" in check.reason
    warning = "cannot find a change of any size: with 2 and 2 runs the smallest possible p is 0.167"
    assert warning in result.to_text() and warning in result.to_markdown()
    assert warning in result.to_dict()["too_few_runs"]
    # Three a side can: the same change is then a regression, and nothing warns.
    enough = cmp.compare(frame(rows(n=3, seed=1)), frame(rows(2.0, n=3, seed=2)))
    assert enough.regressed and enough.too_few_runs == "" and "WARNING" not in enough.to_text()
    assert cmp.runs_for(0.05) == 3 and cmp.runs_for(0.01) == 5


def test_missing_metric_is_inconclusive():
    check = cmp.check_metric("k", "c", "peak_rss_mb", [], [900.0])
    assert check.verdict == cmp.INCONCLUSIVE
    assert "baseline" in check.reason


def test_a_zero_value_is_inconclusive_not_a_ratio():
    # A run can record 0.0 s of system time: a ratio of medians over it means nothing.
    check = cmp.check_metric("k", "c", "sys_s", [0.0, 0.1, 0.1, 0.1], [0.1] * 4)
    assert check.verdict == cmp.INCONCLUSIVE
    assert "at or below zero" in check.reason


def test_runs_cut_short_by_steps_say_why_their_epoch_time_is_not_judged():
    result = cmp.compare(frame(rows(seed=1, epoch_s=float("nan"))), frame(rows(seed=2, epoch_s=float("nan"))))
    assert verdicts(result)["epoch_s"] == cmp.INCONCLUSIVE
    why = "epoch time of epochs=1,data=embedded-5k: the baseline recorded no epoch time: no run finished a whole epoch"
    assert f"not judged: {why}" in result.to_text()
    assert f"- {why}" in result.to_markdown()
    assert "90% intervals" in str(result)


def _failed(run: dict[str, Any], run_id: str, **fields: Any) -> dict[str, Any]:
    """A failed record of `run`'s point, as a run that died writes it: no metrics, and no
    fingerprint fields it never reached."""
    keep = {k: v for k, v in run.items() if k in ("schema_version", "spec_key", "repeat") or k in SPEC.to_dict()}
    machine = {k: v for k, v in MACHINE.items() if k != "fp_threads_env"}
    return {**keep, **machine, "run_id": run_id, "status": "failed", "reason": "killed after the 2 s timeout",
            **fields}


def test_a_candidate_point_whose_runs_failed_fails_the_comparison_until_it_runs_again():
    candidate = rows(seed=2)
    lost = [_failed(candidate[0], "x1", repeat=5), _failed(candidate[0], "x2", repeat=6)]
    result = cmp.compare(frame(rows(seed=1)), frame(candidate, lost))
    assert not result.unpaired, "a failed record lacking the thread fields is the same machine's"
    assert result.failed == ("epochs=1,data=embedded-5k: 2 points without a successful run "
                             "(killed after the 2 s timeout)",)
    assert result.exit_code == 1 and str(result).startswith("Candidate runs failed")
    assert "failed: epochs=1" in result.to_text() and "**Candidate runs that failed**" in result.to_markdown()
    # The sweep resumed: both points ran again and succeeded.
    again = [{**candidate[0], "run_id": f"y{r}", "repeat": r} for r in (5, 6)]
    assert cmp.compare(frame(rows(seed=1)), frame(candidate, lost, again)).exit_code == 0


def test_a_configuration_missing_from_the_candidate_fails_under_strict():
    result = cmp.compare(frame(rows(seed=1), rows(seed=1, spec=OTHER)), frame(rows(seed=2)))
    assert len(result.unpaired) == 1 and result.exit_code == 0
    strict = dataclasses.replace(result, strict=True)
    assert strict.exit_code == 2 and "1 configuration could not be compared" in strict.unjudged


def test_two_runs_a_side_never_read_unchanged():
    result = cmp.compare(frame(rows(n=2, seed=1)), again(frame(rows(n=2, seed=1))))
    assert set(verdicts(result).values()) == {cmp.INCONCLUSIVE}
    assert "can neither find nor rule out a change" in result.checks[0].reason


def test_runs_compared_with_themselves_are_refused():
    same = frame(rows(seed=1))
    with pytest.raises(UsageError, match="hold the same runs"):
        cmp.compare(same, same.copy())


def test_requested_metrics_and_unknown_metric():
    result = cmp.compare(frame(rows(seed=1)), frame(rows(1.2, seed=2)), metrics=("real_s", "peak_rss_mb"))
    assert verdicts(result) == {"real_s": cmp.REGRESSION, "peak_rss_mb": cmp.UNCHANGED}
    with pytest.raises(ValueError, match="unknown metric"):
        cmp.compare(frame(rows()), frame(rows()), metrics=("bogus",))


def test_step_times_give_each_run_its_median_after_warm_up():
    base, cand = rows(seed=1, n=3), rows(seed=2, n=3)
    # The records claim equal speed; the step times say the candidate's steps take 30 % longer.
    # Warm-up steps (the first 2) are huge and must be ignored.
    base_steps = {r["run_id"]: RunSeries(step_ms=[500.0, 400.0] + [5.0, 5.1, 4.9] * 20) for r in base}
    cand_steps = {r["run_id"]: RunSeries(step_ms=[9.0, 9.0] + [6.5, 6.6, 6.4] * 20) for r in cand}
    result = cmp.compare(frame(base), frame(cand), metrics=("samples_per_s",),
                         baseline_series=base_steps, candidate_series=cand_steps)
    check = result.checks[0]
    assert check.baseline_median == pytest.approx(128 * 1000 / 5.0)
    assert check.candidate_median == pytest.approx(128 * 1000 / 6.5)
    assert check.verdict == cmp.REGRESSION
    # Step times are not pooled: 3 runs a side stay 3 values a side.
    assert len(check.baseline_values) == 3


def test_steady_state_from_series_is_the_loops_rule() -> None:
    # Was: compare dropped the warm-up only and counted every step as a full batch. The loop
    # also drops the profiled steps and counts each step's own samples; now both read alike.
    row = rows(seed=1, n=1)[0]
    steps = [50.0, 50.0] + [10.0] * 10 + [40.0] * 20  # a 20-step profiler window, 4x slower
    samples = [128] * 32
    series = {row["run_id"]: RunSeries(step_ms=steps, step_samples=samples, excluded_steps=list(range(12, 32)))}
    value = cmp.run_values(frame([row]), "samples_per_s", series)[0]
    assert value == pytest.approx(rules.steady_rate(steps, samples, 2, set(range(12, 32))))
    assert value == pytest.approx(12_800)
    old_rule = 128 * 1000 / statistics.median(steps[2:])  # the profiled steps were the majority
    assert old_rule == pytest.approx(3_200)


# --- final loss ---------------------------------------------------------------------------


def test_final_loss_guard_uses_the_seed_band():
    seeds = [rows(seed=s, spec=RunSpec(batch_size=128, epochs=1, data="embedded-5k", seed=s),
                  loss=100.0 + s) for s in range(3)]
    baseline = frame(*seeds)
    inside = frame(rows(seed=9, loss=101.5))  # seed 0's config, within 100..102 widened
    outside = frame(rows(seed=9, loss=106.0))
    ok = cmp.compare(baseline, inside, metrics=("final_loss",))
    assert verdicts(ok) == {"final_loss": cmp.UNCHANGED}
    check = ok.checks[0]
    assert check.band_low < 100.0 and check.band_high > 102.0
    bad = cmp.compare(baseline, outside, metrics=("final_loss",))
    assert verdicts(bad) == {"final_loss": cmp.REGRESSION}
    assert bad.exit_code == 1
    assert "seed-to-seed band" in str(bad.checks[0])


def test_each_configuration_is_held_to_its_own_seed_band():
    def seeds(batch: int, loss: float) -> list[list[dict[str, Any]]]:
        return [rows(seed=s, spec=RunSpec(batch_size=batch, epochs=1, data="embedded-5k", seed=s), loss=loss + s)
                for s in range(3)]

    baseline = frame(*seeds(128, 100.0), *seeds(256, 200.0))
    candidate = frame(rows(seed=9, loss=101.5), rows(seed=9, spec=OTHER, loss=101.5))
    result = cmp.compare(baseline, candidate, metrics=("final_loss",))
    bands = {c.spec_key: (c.verdict, len(c.baseline_values)) for c in result.checks}
    # Each family is its configuration's 3 seeds of 5 runs; 101.5 is inside batch 128's band only.
    assert bands == {SPEC.key(): (cmp.UNCHANGED, 15), OTHER.key(): (cmp.REGRESSION, 15)}


def test_final_loss_single_seed_tolerates_one_percent():
    assert cmp.check_final_loss("k", "c", [100.0, 100.0], [100.5]).verdict == cmp.UNCHANGED
    assert cmp.check_final_loss("k", "c", [100.0, 100.0], [98.0]).verdict == cmp.REGRESSION


# --- pairing and the fingerprint guard ----------------------------------------------------


def test_unpaired_configurations_are_listed():
    failed = [dict(r, status="failed", samples_per_s=None) for r in rows(seed=3, spec=OTHER, n=2)]
    baseline = frame(rows(seed=1), rows(seed=1, spec=OTHER))
    candidate = frame(rows(seed=2), failed, rows(seed=2, spec=RunSpec(batch_size=64)))
    result = cmp.compare(baseline, candidate)
    reasons = {u.spec_key: u.reason for u in result.unpaired}
    assert reasons[OTHER.key()] == "all 2 runs failed in the candidate"
    assert reasons[RunSpec(batch_size=64).key()] == "absent from the baseline"
    assert result.configs == 1
    assert "unpaired" in result.to_text()


def test_nothing_paired_raises():
    with pytest.raises(cmp.NothingPaired, match="absent from the candidate"):
        cmp.compare(frame(rows(spec=OTHER)), frame(rows()))


def test_fingerprint_guard_names_each_difference():
    other_machine = frame(rows(seed=2, fp_cpu_model="EPYC 9654", fp_threads_env="OMP_NUM_THREADS=8"))
    with pytest.raises(cmp.FingerprintMismatch) as caught:
        cmp.compare(frame(rows(seed=1)), other_machine)
    message = str(caught.value)
    assert "fp_cpu_model: baseline 'Xeon 8480', candidate 'EPYC 9654'" in message
    assert "fp_threads_env" in message and "OMP_NUM_THREADS=8" in message
    assert "--allow-different-machines" in message
    assert len(caught.value.differences) == 2


def test_fingerprint_guard_checks_torch_and_thread_counts_not_hostnames():
    differences = cmp.fingerprint_differences(
        frame(rows(fp_torch_threads=4)), frame(rows(fp_torch="2.6.0", fp_hostname="ci-2", fp_torch_threads=8))
    )
    assert [d.split(":")[0] for d in differences] == ["fp_torch", "fp_torch_threads"]
    # A column present on one side only is a difference too; ints read back as floats are not.
    assert cmp.fingerprint_differences(frame(rows(fp_logical_cores=16)), frame(rows(fp_logical_cores=16.0))) == []
    assert cmp.fingerprint_differences(frame(rows()), frame(rows(fp_gpu_name=None)))


def test_allowed_fingerprint_difference_becomes_a_warning():
    result = cmp.compare(frame(rows(seed=1)), frame(rows(seed=2, fp_cpu_model="EPYC")),
                         allow_different_machines=True)
    assert result.fingerprint_differences
    assert "warning: fp_cpu_model" in result.to_text()
    assert "Compared across different setups" in result.to_markdown()


# --- output formats -------------------------------------------------------------------------


def test_text_markdown_and_json_outputs():
    result = cmp.compare(frame(rows(seed=1), rows(seed=1, spec=OTHER)),
                         frame(rows(1.2, seed=2), rows(seed=2, spec=OTHER)))
    text = result.to_text()
    assert text.splitlines()[0].split()[:2] == ["configuration", "metric"]
    assert text.count("regression") >= 2
    markdown = result.to_markdown()
    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 4  # header and 2 configurations x 2 metrics
    assert ":x:" in markdown
    payload = json.loads(result.to_json())
    assert payload["exit_code"] == 1
    assert {c["verdict"] for c in payload["checks"]} == {"regression", "unchanged"}
    assert payload["checks"][0]["baseline_values"] and payload["checks"][0]["summary"]


# --- the command line ------------------------------------------------------------------------


def write_folder(folder: Path, groups: list[list[dict[str, Any]]], steps: dict[str, list[float]] | None = None) -> Path:
    for group in groups:
        for row in group:
            append_row(folder, row)
    for run_id, times in (steps or {}).items():
        write_json_atomic(folder / SERIES_DIR / f"{run_id}.json", {"step_ms": times, "monitor": []})
    return folder


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    base = write_folder(tmp_path / "base", [rows(seed=1)])
    same = write_folder(tmp_path / "same", [rows(seed=2)])
    slow = write_folder(tmp_path / "slow", [rows(1.25, seed=3)])
    return base, same, slow


def test_cli_exit_codes(folders: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    base, same, slow = folders
    assert main(["compare", str(base), str(same)]) == 0
    assert "No regression" in capsys.readouterr().out
    assert main(["compare", str(base), str(slow), "--threshold", "10%"]) == 1
    assert main(["compare", str(base), str(slow), "--threshold", "0.5"]) == 0  # 25 % < 50 %
    assert main(["compare", str(base), str(tmp_path / "missing")]) == 2
    assert "no such results folder" in capsys.readouterr().err


@pytest.mark.parametrize(("threshold", "words"), [("-5%", "must be positive"), ("inf%", "finite"),
                                                ("nan", "finite"), ("-inf", "finite"), ("abc", "not a fraction")])
def test_cli_refuses_a_bad_threshold_in_one_line(folders: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str],
                                                 threshold: str, words: str):
    base, same, _ = folders
    assert main(["compare", str(base), str(same), "--threshold", threshold]) == 2
    err = capsys.readouterr().err
    assert "argument --threshold" in err and words in err and err.count("\n") == 1, err


def test_cli_refuses_an_alpha_of_a_half_or_more(folders: tuple[Path, Path, Path],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    base, same, _ = folders
    assert main(["compare", str(base), str(same), "--alpha", "0.6"]) == 2
    assert "--alpha must lie in (0, 0.5), got 0.6" in capsys.readouterr().err


def test_compare_refuses_a_threshold_of_zero_and_an_alpha_of_a_half() -> None:
    # The Python API checks its arguments too, not only the command line's parser.
    base, cand = frame(rows(seed=1)), frame(rows(seed=2))
    with pytest.raises(UsageError, match="threshold must be positive"):
        cmp.compare(base, cand, threshold=0)
    for alpha in (0.5, 0.0):
        with pytest.raises(UsageError, match="alpha must lie in"):
            cmp.compare(base, cand, alpha=alpha)


def test_the_interval_matches_the_one_sided_test_level() -> None:
    """Each end of a 1 - 2 alpha interval is a one-sided bound at alpha, as the rank test is."""
    check = cmp.check_metric("k", "c", "epoch_s", [10.0, 10.1, 9.9, 10.05, 9.95], [12.0, 12.2, 11.9, 12.1, 11.8],
                         alpha=0.05)
    assert check.confidence == pytest.approx(0.90) and check.verdict == cmp.REGRESSION
    assert "90% CI" in str(check) and check.ci_low > 1.0


def test_cli_infrastructure_errors_exit_2(folders: tuple[Path, Path, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]):
    base, _, _ = folders
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "runs.jsonl").write_text(json.dumps(rows(seed=9)[0]) + '\n{not json\n')
    assert main(["compare", str(base), str(corrupt)]) == 2
    assert "runs.jsonl:2" in capsys.readouterr().err
    for line in ('{"run_id": "x1"}', json.dumps({**rows(seed=9)[0], "spec_key": None}),
                 json.dumps({**rows(seed=9)[0], "repeat": "abc"})):
        (corrupt / "runs.jsonl").write_text(line + "\n")
        assert main(["compare", str(base), str(corrupt)]) == 2
        err = capsys.readouterr().err
        assert "runs.jsonl:1:" in err and err.count("\n") == 1 and "Traceback" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["compare", str(base), str(empty)]) == 2  # no runs.jsonl
    other = write_folder(tmp_path / "other", [rows(spec=OTHER)])
    assert main(["compare", str(base), str(other)]) == 2
    assert "no configuration" in capsys.readouterr().err
    elsewhere = write_folder(tmp_path / "elsewhere", [rows(seed=2, fp_gpu_name="H100")])
    md, js = tmp_path / "summary.md", tmp_path / "compare.json"
    assert main(["compare", str(base), str(elsewhere), "--markdown", str(md), "--json", str(js)]) == 2
    assert "fp_gpu_name" in capsys.readouterr().err
    # The job's summary says why there is no comparison, instead of staying empty.
    assert ":x: Could not compare:" in md.read_text() and "fp_gpu_name" in md.read_text()
    assert json.loads(js.read_text())["exit_code"] == 2 and "fp_gpu_name" in json.loads(js.read_text())["error"]
    assert main(["compare", str(base), str(elsewhere), "--allow-different-machines"]) == 0
    series = rows(seed=4)
    bad_series = write_folder(tmp_path / "bad_series", [series])
    (bad_series / SERIES_DIR).mkdir()
    (bad_series / SERIES_DIR / f"{series[0]['run_id']}.json").write_text("{torn")
    assert main(["compare", str(base), str(bad_series)]) == 2


@pytest.mark.parametrize("payload", ["{torn", '{"step_ms": [5.0, "x"], "monitor": []}',
                                     '{"step_ms": [5.0, 5.0], "monitor": [3]}'])
def test_a_series_file_that_is_not_one_stops_the_comparison(tmp_path: Path, payload: str,
                                                            capsys: pytest.CaptureFixture[str]):
    # compare reads only the step times, but a file wrong anywhere, its monitor samples
    # included, is a corrupt folder (exit 2, the file named), as `storage.load_series` has it.
    base_rows, cand_rows = rows(seed=1), rows(seed=2)
    base = write_folder(tmp_path / "b", [base_rows])
    cand = write_folder(tmp_path / "c", [cand_rows], {r["run_id"]: [5.0] * 32 for r in cand_rows})
    (cand / SERIES_DIR / f"{cand_rows[0]['run_id']}.json").write_text(payload)
    assert main(["compare", str(base), str(cand)]) == 2
    assert f"series/{cand_rows[0]['run_id']}.json: " in capsys.readouterr().err


def test_cli_reads_step_times_and_writes_markdown_and_json(tmp_path: Path):
    base_rows, cand_rows = rows(seed=1, n=3), rows(seed=2, n=3)
    base = write_folder(tmp_path / "b", [base_rows], {r["run_id"]: [50.0, 50.0] + [5.0] * 30 for r in base_rows})
    cand = write_folder(tmp_path / "c", [cand_rows], {r["run_id"]: [50.0, 50.0] + [6.0] * 30 for r in cand_rows})
    md, js = tmp_path / "summary.md", tmp_path / "out" / "result.json"
    js.parent.mkdir()
    code = main(["compare", str(base), str(cand), "--metric", "samples_per_s", "final_loss",
                 "--markdown", str(md), "--json", str(js)])
    assert code == 1  # the records agree, the step times show a 20 % slowdown
    payload = json.loads(js.read_text())
    assert [c["metric"] for c in payload["checks"]] == ["samples_per_s", "final_loss"]
    assert payload["checks"][0]["verdict"] == "regression"
    table_rows = [line for line in md.read_text().splitlines() if line.startswith("| ")]
    assert len(table_rows) == 3 and "regression" in table_rows[1]
    # A comma list is the same list, as in every other list option.
    assert main(["compare", str(base), str(cand), "--metric", "samples_per_s,final_loss", "--json", str(js)]) == 1
    assert [c["metric"] for c in json.loads(js.read_text())["checks"]] == ["samples_per_s", "final_loss"]
    assert main(["compare", str(base), str(cand), "--metric", "samples_per_s,speed"]) == 2


def test_threshold_parsing():
    assert parse_fraction("10%") == pytest.approx(0.10)
    assert parse_fraction("0.1") == pytest.approx(0.10)
    assert parse_fraction(" 2.5% ") == pytest.approx(0.025)
    for bad in ("10", "ten", "0", "-5%"):
        with pytest.raises(Exception, match="ambiguous|not a fraction|positive"):
            parse_fraction(bad)
    assert main(["compare", "a", "b", "--threshold", "10"]) == 2  # one line, not SystemExit


def test_help_documents_exit_codes(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "0 no regression" in text and "1 at least one regression" in text and "2 usage" in text


# --- calibration ---------------------------------------------------------------------------


def test_calibration_report_measures_noise_and_detectable_slowdown():
    report = calibration_report(frame(rows(noise=0.02, n=12, seed=5)), repeats=(2, 3, 5, 10))
    epoch = next(m for m in report.metrics if m.metric == "epoch_s")
    assert epoch.runs == 12
    assert 0.01 < epoch.log_sd < 0.04
    assert epoch.cv == pytest.approx(epoch.log_sd, rel=0.1)
    detectable = dict(epoch.detectable)
    assert detectable[2] == float("inf")
    assert detectable[3] > detectable[5] > detectable[10] > 0
    assert epoch.repeats_for(detectable[5]) == 5
    rss = next(m for m in report.metrics if m.metric == "peak_rss_mb")
    assert rss.log_sd == 0 and dict(rss.detectable)[3] == 0
    text = report.to_text(threshold=0.05)
    assert "never" in text and "epoch time" in text and "n=10" in text
    assert "any: peak RSS did not vary at all" in text
    rss_row = next(line for line in text.splitlines() if line.startswith("peak RSS"))
    assert rss_row.split()[-4:] == ["never", "any", "any", "any"]
    advice = recommend(report, 2, source="the sweep file's")
    assert advice.startswith("recommendation: 2 runs a side (the sweep file's) can never be significant")
    assert advice.endswith("use 3 or more")  # the table's first column that can be: n=3


def test_calibration_needs_one_configuration():
    with pytest.raises(ValueError, match="exactly one"):
        calibration_report(frame(rows(), rows(spec=OTHER)))
    with pytest.raises(ValueError, match="at least 2"):
        calibration_report(frame(rows(n=1)))


def test_calibration_from_few_runs_says_so():
    text = calibration_report(frame(rows(noise=0.02, n=3, seed=5)), repeats=(3,)).to_text()
    assert "note: a noise level from 3 runs" in text


def test_folders_from_many_machines_pair_like_machine_with_like():
    a100 = {"fp_cpu_model": "EPYC 7763", "fp_gpu_name": "A100"}
    h100 = {"fp_cpu_model": "Xeon 8480", "fp_gpu_name": "H100"}
    l40 = {"fp_cpu_model": "Xeon 6430", "fp_gpu_name": "L40S"}
    baseline = frame(rows(seed=1, **a100), rows(seed=2, **h100), rows(seed=3, **l40))
    # The candidate is slower on the A100 only, and has no L40S runs.
    candidate = frame(rows(1.3, seed=4, **a100), rows(seed=5, **h100))
    result = cmp.compare(baseline, candidate, metrics=("samples_per_s",))
    by_config = {c.config: c.verdict for c in result.checks}
    label = SPEC.label()
    assert by_config == {f"{label} @ A100, EPYC 7763": "regression", f"{label} @ H100, Xeon 8480": "unchanged"}
    assert [u.config for u in result.unpaired] == [f"{label} @ L40S, Xeon 6430"]
    assert result.unpaired[0].reason == "absent from the candidate"
    assert not result.fingerprint_differences
    # Pooled across machines the A100's slowdown would drown in the H100's runs.
    with pytest.raises(cmp.FingerprintMismatch):
        cmp.compare(frame(rows(seed=1, **a100)), frame(rows(seed=2, **h100)))


def test_allowing_different_machines_pairs_by_configuration_alone():
    a100 = {"fp_cpu_model": "EPYC 7763", "fp_gpu_name": "A100"}
    h100 = {"fp_cpu_model": "Xeon 8480", "fp_gpu_name": "H100"}
    baseline = frame(rows(seed=1, **a100), rows(seed=2, **h100))
    candidate = frame(rows(seed=3, **a100), rows(seed=4, **h100))
    result = cmp.compare(baseline, candidate, metrics=("samples_per_s",), allow_different_machines=True)
    # One check over both machines' runs, named by its configuration only.
    assert [c.config for c in result.checks] == [SPEC.label()]
    assert len(result.checks[0].baseline_values) == len(result.checks[0].candidate_values) == 10


def test_a_failed_record_that_fits_two_machines_is_given_to_neither():
    # Two machines that differ only in their thread environment, which a failed record lacks:
    # it agrees with both, so it is not known to be either one's and stays on its own.
    eight = {"fp_threads_env": "OMP_NUM_THREADS=8"}
    candidate = rows(seed=3)
    lost = _failed(candidate[0], "x1", repeat=5)
    result = cmp.compare(frame(rows(seed=1), rows(seed=2, **eight)),
                         frame(candidate, rows(seed=4, **eight), [lost]), metrics=("samples_per_s",))
    assert len(result.checks) == 2  # the two machines' successful runs pair as before
    assert [u.reason for u in result.unpaired] == ["absent from the baseline; the 1 run failed in the candidate"]
    assert len(result.failed) == 1 and result.exit_code == 1


def test_samples_per_s_from_step_times_counts_the_samples_really_in_each_step():
    # Recorded before a batch above the epoch was refused: batch 100,000 over a 512-sample
    # epoch, so each step held the 512 samples there were, not 100,000 (bug 3 of issue 15).
    huge = RunSpec(batch_size=100_000, samples=512, epochs=40, data="synthetic")
    row = rows(spec=huge, n=1)[0]
    steps = {row["run_id"]: RunSeries(step_ms=[10.0, 10.0] + [4.0] * 30)}  # an older series: no step_samples
    assert cmp.run_values(frame([row]), "samples_per_s", steps) == [pytest.approx(512 * 1000 / 4.0)]
    # A ragged epoch: 600 samples in batches of 256 make steps of 256, 256 and 88 samples.
    ragged = RunSpec(batch_size=256, samples=600, epochs=10, data="synthetic")
    row = rows(spec=ragged, n=1)[0]
    times = RunSeries(step_ms=[10.0, 10.0, 0.5] + [2.0, 2.0, 0.5] * 10)
    assert cmp.run_values(frame([row]), "samples_per_s", {row["run_id"]: times}) == [pytest.approx(256 * 1000 / 2.0)]


def test_a_pair_with_contended_runs_is_inconclusive_not_a_regression(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]):
    busy = rows(1.25, seed=3)
    busy[1]["neighbour_cpu_pct"] = 95.0  # one candidate run shared the machine with a busy process
    result = cmp.compare(frame(rows(seed=1)), frame(busy), metrics=("samples_per_s", "epoch_s", "final_loss"))
    assert verdicts(result) == {"samples_per_s": "inconclusive", "epoch_s": "inconclusive", "final_loss": "unchanged"}
    assert not result.regressed and result.contended
    assert "busy neighbour" in result.checks[0].reason
    assert "WARNING: SPEED NOT JUDGED" in result.to_text() and "Speed not judged" in result.to_markdown()
    assert result.to_dict()["contended"]
    quiet = rows(1.25, seed=3, neighbour_cpu_pct=4.0)
    assert cmp.compare(frame(rows(seed=1)), frame(quiet)).regressed
    base = write_folder(tmp_path / "base", [rows(seed=1)])
    cand = write_folder(tmp_path / "cand", [busy])
    assert main(["compare", str(base), str(cand)]) == 0
    out = capsys.readouterr().out
    assert "WARNING" in out and "busy neighbour" in out
    md, js = tmp_path / "summary.md", tmp_path / "compare.json"
    assert main(["compare", str(base), str(cand), "--strict", "--markdown", str(md), "--json", str(js)]) == 2
    err = capsys.readouterr().err
    assert "--strict" in err and err.count("\n") == 1
    # The job's summary and its JSON say what its exit status says.
    assert md.read_text().splitlines()[2].startswith(":x: Not judged (--strict)")
    assert json.loads(js.read_text())["exit_code"] == 2


def test_strict_fails_a_check_that_too_few_runs_could_never_fail(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    base = write_folder(tmp_path / "base", [rows(n=2, seed=1)])
    cand = write_folder(tmp_path / "cand", [rows(1.2, n=2, seed=2)])
    assert main(["compare", str(base), str(cand)]) == 0
    assert "cannot find a change of any size" in capsys.readouterr().out
    assert main(["compare", str(base), str(cand), "--strict"]) == 2
    assert "it takes 3 runs a side; --strict makes a check that cannot fail an error" in capsys.readouterr().err
    enough = write_folder(tmp_path / "enough", [rows(n=3, seed=4)])
    again = write_folder(tmp_path / "again", [rows(n=3, seed=5)])
    assert main(["compare", str(enough), str(again), "--strict"]) == 0


def test_the_same_configuration_on_different_data_files_is_not_compared(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    base, cand = tmp_path / "base", tmp_path / "cand"
    for row in rows(n=3):
        append_row(base, row | {"data_digest": "aaaaaaaaaaaa"})
    for row in rows(n=3, seed=1):
        append_row(cand, row | {"data_digest": "bbbbbbbbbbbb"})
    assert main(["compare", str(base), str(cand)]) == 2
    err = capsys.readouterr().err
    assert "different data files" in err and "baseline aaaaaaaaaaaa, candidate bbbbbbbbbbbb" in err
    old = tmp_path / "old"  # recorded before the digest was kept: taken as the same data
    for row in rows(n=3, seed=2):
        append_row(old, row)
    assert main(["compare", str(old), str(cand)]) == 0


def test_an_empty_results_file_on_one_side_is_exit_2_not_a_crash(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    base, cand = tmp_path / "base", tmp_path / "cand"
    for row in rows(n=3):
        append_row(base, row)
    cand.mkdir()
    (cand / "runs.jsonl").write_text("\n")
    assert main(["compare", str(base), str(cand)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_cli_refuses_a_folder_compared_with_itself_and_a_file_named_as_a_folder(
    folders: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, same, _ = folders
    assert main(["compare", str(base), str(base / "runs.jsonl")]) == 2
    assert "hold the same runs" in capsys.readouterr().err
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes((same / "runs.jsonl").read_bytes())
    assert main(["compare", str(base), str(copy)]) == 2
    assert "a file, not a results folder" in capsys.readouterr().err


def test_a_summary_path_that_cannot_be_written_is_refused_before_comparing(
    folders: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, _, slow = folders
    assert main(["compare", str(base), str(slow), "--markdown", str(tmp_path / "no" / "x.md")]) == 2
    captured = capsys.readouterr()
    assert f"--markdown {tmp_path / 'no' / 'x.md'}: {tmp_path / 'no'} is not a writable folder" in captured.err
    assert captured.out == ""  # nothing compared, no verdict printed that the exit status contradicts


def test_the_summaries_are_written_before_stdout_so_a_closed_pipe_keeps_them(
    folders: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _, slow = folders
    summary = tmp_path / "summary.json"

    def closed(*args: object, **kwargs: object) -> None:
        raise BrokenPipeError

    monkeypatch.setattr("builtins.print", closed)
    assert main(["compare", str(base), str(slow), "--json", str(summary)]) == 141
    assert json.loads(summary.read_text())["exit_code"] == 1
