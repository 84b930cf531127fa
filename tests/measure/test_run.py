"""`vaebench run` end to end on tiny data, and every bad input refused with exit status 2."""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from pathlib import Path

import pytest

from vaebench import load_runs
from vaebench.cli import main
from vaebench.spec import RunSpec
from vaebench.storage import load_series

TINY = ["--device", "cpu", "--data", "embedded", "--samples", "512", "--batch-size", "64", "--epochs", "1"]


def run(tmp_path: Path, *extra: str) -> int:
    return main(["run", *TINY, "--out", str(tmp_path), *extra])


def test_run_prints_the_summary_and_appends_one_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path, "--threads", "1") == 0
    out = capsys.readouterr().out
    for part in ("real", "user", "sys", "%CPU", "samples/s", "loss", "data wait", "embedded-5k"):
        assert part in out
    frame = load_runs(str(tmp_path))
    assert len(frame) == 1
    row = frame.iloc[0]
    assert row["status"] == "ok" and row["threads"] == 1
    assert row["steps_done"] == 8 and row["samples_seen"] == 512
    assert 100 < row["final_loss"] < 600
    assert row["real_s"] > row["train_s"] > 0
    assert row["fp_threads_env"].startswith("OMP_NUM_THREADS=1")
    assert row["fp_torch_threads"] == 1
    assert (tmp_path / "samples" / f"{row['run_id']}.png").stat().st_size > 1000
    assert (tmp_path / "series" / f"{row['run_id']}.json").exists()


def test_same_seed_same_loss_curve_bit_for_bit(tmp_path: Path) -> None:
    for _ in range(2):
        assert run(tmp_path, "--threads", "1", "--seed", "3", "--loader", "tensor") == 0
    losses = load_runs(str(tmp_path))["epoch_losses"].tolist()
    assert losses[0] == losses[1]


def test_loaders_give_the_same_losses(tmp_path: Path) -> None:
    for loader in ("reference", "tensor", "device"):
        assert run(tmp_path, "--threads", "1", "--loader", loader) == 0
    losses = load_runs(str(tmp_path))["final_loss"].tolist()
    assert losses[0] == losses[1] == losses[2]


def test_workers_cpu_time_is_counted(tmp_path: Path) -> None:
    assert run(tmp_path, "--workers", "2", "--threads", "1") == 0
    row = load_runs(str(tmp_path)).iloc[0]
    # The tree's CPU time exceeds the training process's own by what its workers burned.
    assert row["user_s"] + row["sys_s"] > row["main_cpu_s"] + 0.2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "0"], "batch size must be at least 1"),
        (["--threads", "0"], "threads must be at least 1"),
        (["--device", "tpu"], "unknown device"),
        (["--device", "cuda"], "CUDA is not available"),
        (["--amp", "fp16"], "needs CUDA"),
        (["--loader", "tensor", "--workers", "2"], "reference loader only"),
        (["--timeout", "0"], "--timeout must be positive"),
        (["--omp-wait-policy", "sometimes"], "unknown OpenMP wait policy 'sometimes'"),
        (["--allocator", "foo"], "unknown allocator 'foo'"),
        (["--allocator", "jemalloc", "--allocator-path", "/nowhere/libjemalloc.so.2"], "no such file"),
        (["--timeout", "inf"], "--timeout must be a finite number"),
        (["--lr", "inf"], "learning rate (lr) must be a finite number"),
        (["--lr", "nan"], "learning rate (lr) must be a finite number"),
        (["--samples", "1000000000000"], "samples must be at most 1,000,000"),
        (["--batch-size", "1000000", "--samples", "512"], "above the 512 samples of an epoch"),
        (["--epochs", "1000000000"], "epochs must be at most 1,000"),
        (["--threads", "99999"], "threads must be at most 1,024"),
        (["--seed", "-1"], "seed must be 0 or more"),
        (["--sample-hz", "0"], "--sample-hz must be positive"),
        (["--sample-hz", "1000"], "--sample-hz must be at most 15 Hz"),
        (["--out", ""], "--out must name a folder"),
        (["--data-dir", ""], "--data-dir must name a folder"),
        (["--threads", "x"], "argument --threads: invalid int value: 'x' (see `vaebench run --help`)"),
        (["--bogus"], "unrecognized arguments: --bogus (see `vaebench run --help`)"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    pytest.importorskip("torch")
    if "cuda" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    assert run(tmp_path, *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs.jsonl").exists()


def test_a_missing_allocator_or_tracer_is_refused_naming_the_package(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from vaebench import machine
    from vaebench.measure import syscalls

    monkeypatch.setattr(machine, "_ldconfig_allocators", lambda: ())
    assert run(tmp_path, "--allocator", "jemalloc") == 2
    assert "apt-get install libjemalloc2" in capsys.readouterr().err
    monkeypatch.setattr(syscalls.shutil, "which", lambda name: None)
    assert run(tmp_path, "--syscalls") == 2
    assert "apt-get install strace" in capsys.readouterr().err
    assert not (tmp_path / "runs.jsonl").exists()


def test_an_allocator_path_no_run_would_preload_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    library = tmp_path / "libjemalloc.so.2"
    library.write_bytes(b"")
    out = tmp_path / "out"
    assert run(out, "--allocator-path", str(library)) == 2
    err = capsys.readouterr().err
    assert "is a jemalloc library, but the runs use --allocator system, which would ignore it" in err
    assert run(out, "--allocator", "tcmalloc", "--allocator-path", str(library)) == 2
    assert "give --allocator jemalloc" in capsys.readouterr().err
    sweep = ["sweep", *TINY, "--allocator", "system,tcmalloc", "--allocator-path", str(library), "--out", str(out)]
    assert main(sweep) == 2 and "--allocator system, tcmalloc" in capsys.readouterr().err
    assert not (out / "runs.jsonl").exists()


def test_sweep_refuses_a_bad_value_before_any_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sweep", *TINY, "--omp-wait-policy", "active,sometimes", "--out", str(tmp_path)])
    assert code == 2 and "unknown OpenMP wait policy 'sometimes'" in capsys.readouterr().err
    assert main(["sweep", *TINY, "--threads", "0,1", "--out", str(tmp_path)]) == 2
    assert not (tmp_path / "runs.jsonl").exists()


def test_kernel_counters_and_knobs_are_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An oversubscribed passive run: faults, switches, run-queue wait, the runtimes the child
    really loaded, and, where strace exists, the syscall table of a separate traced run."""
    import shutil

    from vaebench import machine

    cores = machine.usable_cores()
    extra = ["--allocator", "jemalloc"] if "jemalloc" in machine.allocator_libraries() else []
    traced = ["--syscalls"] if shutil.which("strace") else []
    # 32 steps, not TINY's 8: long enough that the monitor's 10 Hz samples catch threads runnable.
    assert run(tmp_path, "--threads", str(2 * cores), "--omp-wait-policy", "passive", "--bind", "--samples", "2048",
               *extra, *traced) == 0
    out = capsys.readouterr().out
    row = load_runs(str(tmp_path)).iloc[0]
    assert row["minor_faults"] > 10_000 and row["major_faults"] >= 0  # torch's import alone faults ~100k pages
    assert row["train_minor_faults"] < row["minor_faults"]
    assert row["oversubscribed"] is True or row["oversubscribed"] == 1
    assert "OMP_WAIT_POLICY=PASSIVE" in row["fp_threads_env"] and "OMP_PROC_BIND=close" in row["fp_threads_env"]
    assert row["os_threads_max"] >= 2 * cores and row["runnable_max"] >= 1
    if Path("/proc/self/schedstat").exists():
        assert row["runqueue_wait_s"] >= 0 and not row["sched_note"]
    assert row["fp_openmp_runtime"].startswith("libgomp")
    assert row["fp_allocator"] == ("jemalloc" if extra else "system")
    kernel = next(line for line in out.splitlines() if line.strip().startswith("kernel"))
    assert "sys/user" in kernel and "minor faults/step" in kernel and "(oversubscribed)" in kernel
    assert "cause: " in out
    if traced:
        assert row["syscall_tool"] == "strace -c -f" and row["syscall_steps"] == row["steps_done"]
        names = [entry["syscall"] for entry in row["syscalls"]]
        assert "futex" in names and "syscalls  strace -c -f" in out


def test_unwritable_data_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() == 0:
        target = "/proc/vaebench-data"  # even root cannot create folders here
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = str(locked / "data")
    assert run(tmp_path, "--data-dir", target) == 2
    assert "cannot be written" in capsys.readouterr().err


def test_mnist_missing_offline_names_the_alternatives(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision.datasets.mnist as mnist

    monkeypatch.setattr(mnist.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    code = main(["run", "--data", "mnist", "--data-dir", str(tmp_path / "d"), "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "--data embedded" in err and "--data synthetic" in err and "--data-dir" in err
    assert err.count("\n") == 1, err
    # The same input to sweep: exit 2 in one line, never "0 runs recorded" and exit 0.
    code = main(["sweep", "--data", "mnist", "--data-dir", str(tmp_path / "d"), "--out", str(tmp_path / "s")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--data embedded" in err and err.count("\n") == 1, err
    assert not (tmp_path / "s" / "runs.jsonl").exists()


@pytest.mark.parametrize(
    ("fault", "reason"),
    [("oom", "out of memory"), ("cpu-oom", "out of memory: [enforce fail"), ("crash", "SIGSEGV"), ("hang", "timeout")],
)
def test_failures_become_failed_records_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str, reason: str
) -> None:
    assert run(tmp_path, "--threads", "1") == 0
    before = (tmp_path / "runs.jsonl").read_text()
    monkeypatch.setenv("VAEBENCH_FAULT", fault)
    # Long enough for the child to start and take a step on a busy machine; a hang is cut off at it.
    assert run(tmp_path, "--threads", "1", "--timeout", "20") == 1
    frame = load_runs(str(tmp_path))
    assert (tmp_path / "runs.jsonl").read_text().startswith(before)
    assert frame["status"].tolist() == ["ok", "failed"]
    ok, failed = frame.to_dict("records")
    assert reason in failed["reason"]
    # A failed record keeps its whole configuration: the same spec, key and data as the run that worked.
    assert RunSpec.from_dict(failed) == RunSpec.from_dict(ok) and failed["spec_key"] == ok["spec_key"]
    assert all(failed[name] == ok[name] for name in ("data_source", "data_samples", "lr", "threads", "samples"))


def test_env_prints_the_fingerprint(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    for key in ("cpu_model", "logical_cores", "torch", "blas", "git_commit"):
        assert key in out


def test_profiled_run_writes_a_loadable_trace_and_tables(tmp_path: Path) -> None:
    import json

    assert run(tmp_path, "--threads", "1", "--profile", "--profile-steps", "3", "--samples", "1024") == 0
    row = load_runs(str(tmp_path)).iloc[0]
    trace = json.loads(Path(row["profile_trace"]).read_text())
    names = {event.get("name", "") for event in trace["traceEvents"]}
    assert any(name.startswith("ProfilerStep#") for name in names)
    assert "aten::addmm" in names
    assert 0 < row["profile_busy_fraction"] <= 1 and "CPU" in row["profile_busy_source"]
    assert 0 < row["profile_busy_ms_per_step"] <= 1.5 * row["step_median_ms"]
    assert Path(row["profile_trace"].replace(".json", "-ops.txt")).read_text().count("aten::") >= 5
    kinds = {"input pipeline", "host launch overhead", "compute", "synchronization"}
    assert row["bottleneck"] in kinds and "Knobs" in row["bottleneck_note"]


@pytest.mark.slow
def test_compiled_run_compiles_once_and_trains_the_ragged_last_batch_eagerly(tmp_path: Path) -> None:
    # 600 samples in batches of 128 leave a last batch of 88: it runs eagerly, with no recompile.
    args = ["run", "--data", "embedded", "--samples", "600", "--epochs", "2", "--threads", "1",
            "--out", str(tmp_path)]
    assert main(args) == 0
    assert main([*args, "--compile", "default"]) == 0
    eager, compiled = load_runs(str(tmp_path)).to_dict("records")
    assert compiled["compile_s"] > 0 and compiled["compile_graphs"] >= 1
    assert compiled["recompiles"] == 0, compiled["compile_warnings"]
    assert compiled["eager_step_ms"] > 0
    assert compiled["compile_cache"] in {"warm", "cold", "partly warm", "off"}
    steps = [load_series(tmp_path, r["run_id"]).step_samples for r in (eager, compiled)]
    assert steps[0] == steps[1] == [128, 128, 128, 128, 88] * 2
    # Inductor draws the sampling noise from its own generator: close to eager, not equal.
    assert compiled["epoch_losses"] == pytest.approx(eager["epoch_losses"], rel=2e-2)
    assert compiled["epoch_losses"][1] < compiled["epoch_losses"][0]


@pytest.mark.slow
def test_a_compiled_adam_trains_like_the_eager_one_and_reports_its_compile(tmp_path: Path) -> None:
    args = ["run", "--data", "embedded", "--samples", "600", "--epochs", "2", "--threads", "1", "--out", str(tmp_path)]
    for impl in ("fused", "compiled"):
        assert main([*args, "--adam", impl]) == 0
    fused, compiled = load_runs(str(tmp_path)).to_dict("records")
    assert compiled["adam"] == "compiled" and compiled["compile"] == "off"
    assert compiled["compile_s"] > 0 and compiled["compile_graphs"] >= 1
    assert compiled["recompiles"] == 0, compiled["compile_warnings"]
    assert compiled["eager_step_ms"] > 0 and math.isnan(fused["eager_step_ms"])  # nothing compiled there
    # The same algorithm: the model is eager in both, so only rounding in the update differs.
    assert compiled["epoch_losses"] == pytest.approx(fused["epoch_losses"], rel=1e-4)


def test_sync_epoch_reads_the_same_losses_as_sync_step(tmp_path: Path) -> None:
    for sync in ("step", "epoch"):
        assert run(tmp_path, "--threads", "1", "--epochs", "2", "--sync", sync) == 0
    step, epoch = load_runs(str(tmp_path)).to_dict("records")
    assert epoch["sync"] == "epoch" and step["sync"] == "step"
    assert [f"{v:.4f}" for v in epoch["epoch_losses"]] == [f"{v:.4f}" for v in step["epoch_losses"]]
    assert epoch["split_sync_ms"] == 0.0  # nothing is read inside an epoch


def test_cuda_graphs_on_the_cpu_is_refused_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path, "--cuda-graphs", "--sync", "epoch") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--cuda-graphs needs a CUDA device" in err
    assert not (tmp_path / "runs.jsonl").exists()


def test_throughput_counts_the_samples_in_each_step_not_the_batch_asked_for(tmp_path: Path) -> None:
    import statistics

    from vaebench.spec import samples_per_step
    from vaebench.storage import load_series
    from vaebench.train.model import train_flops_per_sample

    # 520 samples in batches of 512: each epoch is a step of 512 and a step of 8.
    args = ["run", "--device", "cpu", "--data", "synthetic", "--samples", "520", "--batch-size", "512",
            "--epochs", "12", "--threads", "1", "--out", str(tmp_path)]
    assert main(args) == 0
    row = load_runs(str(tmp_path)).iloc[0]
    steps = load_series(tmp_path, row["run_id"]).step_ms
    rates = [1000 * n / ms for n, ms in zip(samples_per_step(520, 512, len(steps)), steps, strict=True)]
    assert row["samples_seen"] == 12 * 520 and len(steps) == 24
    assert row["samples_per_s"] == pytest.approx(statistics.median(rates[row["warmup_steps"]:]))
    assert row["model_flops_per_s"] == pytest.approx(row["samples_per_s"] * train_flops_per_sample())
    assert row["flops_frac"] < 1 or row["flops_frac"] != row["flops_frac"]  # below the peak, or no peak here


def test_a_run_beside_a_busy_neighbour_is_flagged_in_its_record_and_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import subprocess
    import sys

    from vaebench.rules import NEIGHBOUR_LIMIT_PCT

    neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        args = ["run", "--device", "cpu", "--data", "synthetic", "--samples", "8192", "--batch-size", "64",
                "--steps", "400", "--threads", "1", "--out", str(tmp_path)]
        assert main(args) == 0
    finally:
        neighbour.kill()
        neighbour.wait()
    row = load_runs(str(tmp_path)).iloc[0]
    # The neighbour spins a whole core; what it gets of it depends on the machine's other load.
    assert row["neighbour_cpu_pct"] > NEIGHBOUR_LIMIT_PCT, row["neighbour_cpu_pct"]
    out = capsys.readouterr().out
    assert "WARNING   processes outside this run used" in out and "outside this run:" in out


def test_a_run_faster_than_the_cached_peak_has_the_peak_measured_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[float] = []

    def fake_peak(spec: RunSpec, *, at_least: float = 0.0, **_: object) -> float:
        asked.append(at_least)
        return 1.0 if not at_least else 1e15  # cached under load, then measured again

    monkeypatch.setattr("vaebench.measure.run.cached_peak", fake_peak)
    assert run(tmp_path, "--threads", "1") == 0
    row = load_runs(str(tmp_path)).iloc[0]
    assert asked == [0.0, pytest.approx(row["model_flops_per_s"])]
    assert row["peak_flops_per_s"] == 1e15 and row["flops_frac"] == pytest.approx(row["model_flops_per_s"] / 1e15)


@pytest.mark.parametrize(("spoil", "words"), [
    (lambda out: (out / "runs.jsonl").mkdir(parents=True), "runs.jsonl: Is a directory"),
    (lambda out: (out.mkdir(), (out / "series").write_text("")), "series: not a folder"),
])
def test_a_results_file_that_cannot_be_written_is_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spoil, words: str  # type: ignore[no-untyped-def]
) -> None:
    """Not after it: a whole run trained, then lost at the last write."""
    out = tmp_path / "out"
    spoil(out)
    assert main(["run", "--data", "synthetic", "--steps", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"results folder {out} cannot be written" in err and words in err
    assert "training" not in err.lower()


def test_a_results_folder_without_write_permission_is_refused_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a user the folder's permissions shut out: played by refusing its writes, since root writes anywhere."""
    out = tmp_path / "out"
    out.mkdir()
    access, temporary = os.access, tempfile.TemporaryFile

    def denied(*args, dir: str, **kwargs):  # type: ignore[no-untyped-def]
        if Path(dir) == out:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(out / "tmpq2v7x1"))
        return temporary(*args, dir=dir, **kwargs)

    monkeypatch.setattr(os, "access", lambda path, mode, **kwargs: Path(path) != out and access(path, mode, **kwargs))
    monkeypatch.setattr(tempfile, "TemporaryFile", denied)
    assert main(["run", "--data", "synthetic", "--steps", "2", "--out", str(out)]) == 2
    assert f"results folder {out} cannot be written: {out}: Permission denied\n" in capsys.readouterr().err


@pytest.mark.parametrize("lines", [['{"tool": "another", "took_s": 3.5}'], ["{ok}", "not a record", "{ok}"]])
def test_a_results_file_no_reader_accepts_is_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[str]
) -> None:
    """As a sweep refuses it: a run appended to it would be saved where no report can read it."""
    from tests.test_storage import make_record

    record = json.dumps(make_record("a").to_row())
    text = "".join(line.replace("{ok}", record) + "\n" for line in lines)
    (tmp_path / "runs.jsonl").write_text(text)
    assert main(["run", "--data", "synthetic", "--steps", "2", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"runs.jsonl:{len(lines) // 2 + 1}: not a valid record" in err and err.count("\n") == 1
    assert (tmp_path / "runs.jsonl").read_text() == text and not (tmp_path / "series").exists()
