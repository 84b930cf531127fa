"""The ladder's plan and table, from fake records: no training."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import signal
from pathlib import Path

import pandas as pd
import pytest

from vaebench import storage
from vaebench.cli import main
from vaebench.errors import Interrupted, UsageError
from vaebench.measure.run import RunOptions, new_run_id
from vaebench.reproduce import ladder
from vaebench.result import FAILED, DataInfo, RunRecord
from vaebench.spec import Capabilities, RunSpec, validate


def test_each_rung_adds_one_knob_to_the_seed_configuration() -> None:
    base = ladder.seed_base("cuda")
    specs = {rung.name: rung.spec(base) for rung in ladder.RUNGS}
    assert specs["seed"] == base and base.batch_size == 128 and base.epochs == 10 and base.lr == 1e-3
    assert (specs["pinned-tensor"].loader, specs["pinned-tensor"].pin_memory) == ("tensor", True)
    assert (specs["sync-epoch"].loader, specs["sync-epoch"].sync) == ("device", "epoch")
    assert specs["cuda-graphs"].cuda_graphs and specs["cuda-graphs"].sync == "epoch"
    assert specs["reduce-overhead"].compile == "reduce-overhead" and not specs["reduce-overhead"].cuda_graphs
    top = specs["compiled-adam"]
    assert top == dataclasses.replace(specs["cuda-graphs"], adam="compiled") and top.compile == "off"
    assert all(validate(spec, Capabilities(cuda_devices=1)) == [] for spec in specs.values())


def test_pick_keeps_ladder_order_and_names_unknown_rungs() -> None:
    assert [r.name for r in ladder.pick(["cuda-graphs", "seed"])] == ["seed", "cuda-graphs"]
    defaults = [r.name for r in ladder.pick(None)]
    assert "max-autotune" not in defaults and defaults[-3:] == ["cuda-graphs", "compiled-adam", "reduce-overhead"]
    with pytest.raises(ValueError, match="unknown rung 'turbo'"):
        ladder.pick(["turbo"])


def test_plan_adds_a_short_profiled_run_per_rung() -> None:
    plan = ladder.make_plan(ladder.seed_base("cuda"), ladder.pick(["seed", "device-loader"]))
    assert len(plan.timed) == len(plan.profiled) == 2
    profiled = plan.profiled[1][1]
    assert profiled.profile and profiled.steps == ladder.PROFILED_RUN_STEPS and profiled.loader == "device"
    assert not ladder.make_plan(ladder.seed_base("cuda"), ladder.pick(["seed"]), profile=False).profiled


def record(spec, **values: float) -> dict:  # type: ignore[no-untyped-def]
    return {"status": "ok", "spec_key": spec.key(), **values}


def test_table_takes_time_from_the_timed_runs_and_the_trace_from_the_profiled_ones() -> None:
    plan = ladder.make_plan(ladder.seed_base("cuda"), ladder.pick(["seed", "cuda-graphs"]))
    (seed, seed_spec), (top, top_spec) = plan.timed
    runs = pd.DataFrame([
        record(seed_spec, train_s=40.0, samples_per_s=15_000.0, gpu_util_mean=8.0, final_loss=105.0,
               step_median_ms=8.0),
        record(top_spec, train_s=1.0, samples_per_s=600_000.0, gpu_util_mean=90.0, final_loss=106.5,
               step_median_ms=0.3),
        record(top_spec, train_s=1.2, samples_per_s=500_000.0, gpu_util_mean=80.0, final_loss=106.5,
               step_median_ms=0.32),
        record(plan.profiled[0][1], profile_busy_fraction=0.06, profile_kernels_per_step=60.0, train_s=9.0),
        record(plan.profiled[1][1], profile_busy_fraction=0.5, profile_kernels_per_step=1.0, train_s=0.1,
               profile_busy_ms_per_step=0.279),
        {"status": "failed", "spec_key": seed_spec.key(), "train_s": 1e-3},
    ])
    frame = ladder.table(plan, runs).set_index("rung")
    assert frame.loc["seed", "train_s"] == 40.0 and frame.loc["seed", "busy_fraction"] == pytest.approx(6.0)
    assert frame.loc["cuda-graphs", "train_s"] == pytest.approx(1.1)  # median of its two runs
    assert frame.loc["cuda-graphs", "speedup"] == pytest.approx(40 / 1.1)
    assert frame.loc["cuda-graphs", "kernels_per_step"] == 1.0
    # The profiled run's device time per step over the timed runs' median step (0.31 ms).
    assert frame.loc["cuda-graphs", "busy_fraction"] == pytest.approx(50.0)
    assert frame.loc["cuda-graphs", "busy_of_step"] == pytest.approx(90.0)
    assert math.isnan(frame.loc["seed", "busy_of_step"])  # an older record: no device time per step
    assert frame.loc["cuda-graphs", "loss_delta"] == pytest.approx(1.5 / 105)
    notes = ladder.loss_notes(frame.reset_index())
    assert len(notes) == 1 and notes[0].startswith("cuda-graphs: final loss 106.50")
    assert "36.4x" in ladder.render_text(frame.reset_index())


def test_a_cpu_rung_has_no_device_kernels_to_count() -> None:
    # A CPU trace has no device rows, so its record counts 0 kernels per step: not a measured zero.
    plan = ladder.make_plan(ladder.seed_base("cpu"), ladder.pick(["seed"]))
    runs = pd.DataFrame([record(plan.timed[0][1], train_s=40.0, final_loss=105.0, step_median_ms=8.0),
                         record(plan.profiled[0][1], profile_busy_fraction=0.9, profile_kernels_per_step=0.0)])
    frame = ladder.table(plan, runs)
    assert math.isnan(frame.loc[0, "kernels_per_step"]) and frame.loc[0, "busy_fraction"] == pytest.approx(90.0)
    headers, rows = ladder.cells(frame)
    assert rows[0][headers.index("kernels/step")] == "n/a"


def test_a_compiled_rung_shows_its_training_time_less_its_compile_time() -> None:
    # The H200's compiled-adam rung: 7.15 s of training, 5.86 s of it compiling.
    plan = ladder.make_plan(ladder.seed_base("cuda"), ladder.pick(["cuda-graphs", "compiled-adam"]), profile=False)
    (_, graphs), (_, compiled) = plan.timed
    runs = pd.DataFrame([record(graphs, train_s=1.41, final_loss=102.72),
                         record(compiled, train_s=7.15, compile_s=5.86, final_loss=102.64)])
    frame = ladder.table(plan, runs).set_index("rung")
    assert frame.loc["compiled-adam", "train_less_compile_s"] == pytest.approx(1.29)
    assert frame.loc["cuda-graphs", "train_less_compile_s"] == 1.41  # nothing compiled: all of it
    assert "train s w/o compile" in ladder.render_text(frame.reset_index()).splitlines()[0]


def test_a_rung_without_runs_shows_as_not_available() -> None:
    plan = ladder.make_plan(ladder.seed_base("cuda"), ladder.pick(["seed", "cuda-graphs"]), profile=False)
    runs = pd.DataFrame([record(plan.timed[0][1], train_s=40.0, samples_per_s=1.0, gpu_util_mean=8.0,
                                final_loss=105.0)])
    frame = ladder.table(plan, runs)
    assert math.isnan(frame.iloc[1]["train_s"])
    assert "n/a" in ladder.render_text(frame).splitlines()[-1]
    fig = ladder.figure(frame, "NVIDIA H200, 10 epochs a rung")
    assert fig is not None
    ax, right = fig.axes
    assert [t.get_text() for t in ax.texts] == ["no successful\nrun here"]  # over the rung that has no runs
    assert [line.get_label() for line in right.get_lines()] == ["NVML utilization %"]  # no trace busy: no line
    assert ax.get_title() == "The ladder (NVIDIA H200, 10 epochs a rung): each rung adds one knob"


def test_a_ladder_without_the_seed_compares_with_its_lowest_rung_and_says_so() -> None:
    plan = ladder.make_plan(ladder.seed_base("cuda"), ladder.pick(["sync-epoch", "cuda-graphs"]), profile=False)
    runs = pd.DataFrame([record(spec, train_s=t, samples_per_s=1.0, gpu_util_mean=8.0, final_loss=loss)
                         for (_, spec), t, loss in zip(plan.timed, (12.0, 1.5), (100.0, 110.0), strict=True)])
    frame = ladder.table(plan, runs)
    header = ladder.render_text(frame).splitlines()[0]
    assert "vs sync-epoch (train s)" in header and "loss vs sync-epoch" in header and "seed" not in header
    assert "from the sync-epoch rung's" in ladder.loss_notes(frame)[0]
    text = ladder.render_markdown(frame, device="cuda", length="10 epochs", profiled=False, gpu_name="", notes=[])
    assert "`vs sync-epoch (train s)` is the sync-epoch rung's `train s`" in text and "vs seed" not in text


def test_the_markdown_says_how_long_the_rungs_trained_and_whether_they_were_profiled() -> None:
    frame = ladder.table(ladder.make_plan(ladder.seed_base("cpu"), ladder.pick(None)), pd.DataFrame())
    rehearsal = ladder.render_markdown(frame, device="cpu", length="5 steps", profiled=False, gpu_name="", notes=[])
    assert "every rung trains 5 steps" in rehearsal and "--no-profile" in rehearsal
    assert "profiled run of" not in rehearsal and "epoch" not in rehearsal.split("|")[0]
    full = ladder.render_markdown(frame, device="cuda", length="10 epochs", profiled=True, gpu_name="H200", notes=[])
    assert "every rung trains 10 epochs" in full and "profiled run of 60 steps per rung" in full
    assert "`vs seed (train s)` is the seed rung's `train s` over this rung's" in full


H200 = Path(__file__).parents[2] / "docs/examples/nvidia-h200"


@pytest.mark.parametrize(("folder", "rungs"), [
    (".", ["seed", "pinned-tensor", "device-loader", "sync-epoch", "cuda-graphs", "reduce-overhead"]),
    ("lease-2", ["sync-epoch", "cuda-graphs"]),
    ("lease-4", ["cuda-graphs", "compiled-adam", "reduce-overhead", "max-autotune"]),
])
def test_report_only_rebuilds_the_ladder_a_folder_ran(tmp_path: Path, folder: str, rungs: list[str]) -> None:
    # Every lease ran on cuda:0, 10 epochs of 60,000 embedded samples; lease 2 only its top two rungs,
    # lease 4 the top and the compiled ones.
    copy = tmp_path / "ladder"
    shutil.copytree(H200 / folder, copy, ignore=shutil.ignore_patterns("lease-*", "traces", "series", "samples"))
    settings = ladder.settings_of_folder(copy, storage.load_runs(copy))
    assert settings == {"device": "cuda:0", "epochs": 10, "steps": None, "data": "embedded", "samples": 60000}
    base = ladder.seed_base(**settings)
    assert [rung.name for rung in ladder.rungs_of_folder(base, storage.load_runs(copy))] == rungs
    assert main(["ladder", "--report-only", "--out", str(copy)]) == 0
    rows = pd.read_csv(copy / "ladder.csv")
    assert rows["rung"].tolist() == rungs and rows["runs"].min() == 1
    # Settings it did not run with match nothing, and the report says so rather than show a blank table.
    assert main(["ladder", "--report-only", "--epochs", "3", "--out", str(copy)]) == 0
    assert "no run in" in (copy / "ladder.md").read_text() and "epochs=3" in (copy / "ladder.md").read_text()


def test_report_only_on_a_folder_without_a_ladder_is_refused(tmp_path: Path) -> None:
    lines = (H200 / "runs.jsonl").read_text().splitlines()
    others = [line for line in lines if json.loads(line)["sweep"] != "ladder"]
    (tmp_path / "runs.jsonl").write_text("".join(f"{line}\n" for line in others))
    with pytest.raises(UsageError, match="no ladder runs to report on"):
        ladder.settings_of_folder(tmp_path, storage.load_runs(tmp_path))
    assert main(["ladder", "--report-only", "--out", str(tmp_path)]) == 2


CPU_LADDER = ["ladder", "--device", "cpu", "--steps", "4", "--no-profile", "--data", "synthetic", "--samples", "256"]


def stopped_run(kept: int, stop: BaseException):  # type: ignore[no-untyped-def]
    """A runner that records `kept` (failed) runs, then meets the stop while the next one trains."""
    done: list[RunRecord] = []

    def run(spec: RunSpec, data: DataInfo, options: RunOptions) -> RunRecord:
        if len(done) == kept:
            raise stop
        done.append(RunRecord(spec=spec, run_id=new_run_id(), started_at="2026-01-01T00:00:00+00:00",
                              status=FAILED, reason="crashed", data=data, sweep=options.sweep))
        storage.append(options.out, done[-1])
        return done[-1]

    return run


@pytest.mark.parametrize(("stop", "status"), [(KeyboardInterrupt(), 130), (Interrupted(signal.SIGTERM), 143)])
def test_a_stop_before_any_rung_finished_exits_as_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], stop: BaseException,
    status: int,
) -> None:
    monkeypatch.setattr("vaebench.measure.execution.run_once", stopped_run(0, stop))
    out = tmp_path / "ladder"
    assert main([*CPU_LADDER, "--out", str(out)]) == status  # was 2, "no results at ...": the empty folder read
    err = capsys.readouterr().err
    assert f"interrupted before any run finished, so {out} holds nothing to report on" in err
    assert "no results" not in err and not (out / "ladder.md").exists()


def test_a_stop_after_a_rung_reports_it_then_exits_as_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("vaebench.measure.execution.run_once", stopped_run(1, KeyboardInterrupt()))
    out = tmp_path / "ladder"
    assert main([*CPU_LADDER, "--out", str(out)]) == 130
    assert "interrupted; what finished is kept: run the same command again to finish" in capsys.readouterr().err
    assert (out / "ladder.md").exists()
