"""Data-parallel runs through torchrun on the CPU (gloo): the record, the update, a crashing rank."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import psutil
import pytest

from vaebench import load_runs
from vaebench.cli import main
from vaebench.measure.run import RunOptions, prepare_data, run_once
from vaebench.spec import RunSpec
from vaebench.storage import load_series

pytest.importorskip("torch")


def test_two_cpu_ranks_record_world_size_global_batch_and_scaling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's command with fewer steps: a one-rank baseline first, then two ranks."""
    code = main(["run", "--nproc-per-node", "2", "--device", "cpu", "--threads", "1", "--steps", "30",
                 "--data", "embedded", "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "scaling   efficiency" in out and "gradient all-reduce" in out
    runs = load_runs(str(tmp_path))
    assert runs["world_size"].tolist() == [1, 2] and runs["global_batch"].tolist() == [128, 256]
    two = runs.iloc[1]
    assert two["status"] == "ok" and two["steps_done"] == 30 and two["samples_seen"] == 30 * 256
    assert two["single_rank_samples_per_s"] == runs.iloc[0]["samples_per_s"]
    assert two["scaling_efficiency"] == pytest.approx(two["samples_per_s"] / (2 * two["single_rank_samples_per_s"]))
    assert 0 < two["allreduce_ms"] < two["step_median_ms"] and 0 < two["allreduce_share"] < 1
    assert len(two["rank_step_median_ms"]) == 2
    series = load_series(tmp_path, two["run_id"])
    assert [len(steps) for steps in series.rank_step_ms] == [30, 30]
    assert [len(spans) for spans in series.allreduce_ms] == [30, 30]
    assert series.step_samples == [256] * 30  # the whole job's samples in each step
    # torchrun and both ranks are in the tree's CPU time: more than one rank's own.
    assert two["user_s"] + two["sys_s"] > two["main_cpu_s"] * 1.5


def test_n_ranks_at_batch_b_make_the_update_of_one_process_at_batch_n_b(tmp_path: Path) -> None:
    base = RunSpec(device="cpu", threads=1, epochs=3, samples=512, data="embedded")
    losses = []
    for spec in (dataclasses.replace(base, batch_size=128), dataclasses.replace(base, batch_size=64, nproc_per_node=2)):
        spec, data = prepare_data(spec, None)
        record = run_once(spec, data, RunOptions(out=tmp_path, measure_peak=False))
        assert record.status == "ok", record.reason
        assert record.train is not None
        losses.append(record.train.epoch_losses)
    assert len(losses[0]) == 3
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


@pytest.mark.parametrize(
    ("fault", "reason"),
    [("crash", "rank 1 of 2 crashed: killed by SIGSEGV"),
     pytest.param("oom", "rank 1 of 2 failed: out of memory", marks=pytest.mark.slow)],
)
def test_a_failing_rank_is_one_failed_record_naming_it_and_no_process_outlives_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str, reason: str
) -> None:
    mark = uuid.uuid4().hex
    monkeypatch.setenv("VAEBENCH_FAULT", fault)
    monkeypatch.setenv("VAEBENCH_FAULT_RANK", "1")
    monkeypatch.setenv("VAEBENCH_TEST_MARK", mark)
    spec, data = prepare_data(RunSpec(threads=1, steps=20, nproc_per_node=2, data="embedded", samples=2048), None)
    record = run_once(spec, data, RunOptions(out=tmp_path, measure_peak=False, timeout=120))
    assert record.status == "failed"
    assert record.reason.startswith(reason), record.reason
    assert len(load_runs(str(tmp_path))) == 1
    assert not _marked(mark), "a rank or torchrun outlived the run"


def _marked(mark: str) -> list[int]:
    found = []
    for process in psutil.process_iter():
        try:
            if process.pid != os.getpid() and process.environ().get("VAEBENCH_TEST_MARK") == mark:
                found.append(process.pid)
        except psutil.Error:
            continue
    return found


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--nproc-per-node", "0"], "nproc per node must be at least 1"),
     (["--device", "cuda", "--nproc-per-node", "2"], "CUDA"),
     (["--nproc-per-node", "2", "--compile", "default"], "not supported with more than one rank"),
     (["--nnodes", "2"], "--rdzv-endpoint")],
)
def test_bad_rank_counts_exit_2_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    import torch

    if "cuda" in args and torch.cuda.device_count() >= 2:
        pytest.skip("this machine has two GPUs")
    assert main(["run", "--data", "embedded", "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs.jsonl").exists()


def test_two_nodes_on_one_host_each_end_ok_and_only_node_0_keeps_the_record(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def node(rank: int) -> subprocess.Popen[str]:
        argv = [sys.executable, "-m", "vaebench.cli", "run", "--nnodes", "2", "--node-rank", str(rank),
                "--rdzv-endpoint", f"127.0.0.1:{port}", "--nproc-per-node", "1", "--threads", "1", "--steps", "20",
                "--data", "embedded", "--out", str(tmp_path / f"node{rank}")]
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    nodes = [node(0), node(1)]
    (out0, err0), (out1, err1) = (n.communicate(timeout=300) for n in nodes)
    assert nodes[0].returncode == 0, err0
    assert nodes[1].returncode == 0, out1 + err1
    assert "FAILED" not in out1 and "node 1 of 2: the run's record is written on node 0" in out1
    assert not (tmp_path / "node1" / "runs.jsonl").exists()
    runs = load_runs(str(tmp_path / "node0"))
    assert runs["world_size"].tolist() == [1, 2] and runs["status"].tolist() == ["ok", "ok"]


def test_a_timed_out_rank_run_says_its_cpu_times_miss_the_ranks(tmp_path: Path) -> None:
    spec, data = prepare_data(RunSpec(threads=1, epochs=1000, nproc_per_node=2, data="embedded", samples=2048), None)
    record = run_once(spec, data, RunOptions(out=tmp_path, measure_peak=False, timeout=6))
    assert record.status == "failed" and record.reason.startswith("timeout: killed after 6 s")
    assert "user and sys miss the ranks' CPU time" in record.reason
