from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vaebench.cli import main
from vaebench.spec import Capabilities, RunSpec
from vaebench.storage import read_rows
from vaebench.sweep import (
    ExecutorSettings,
    SweepConfig,
    SweepError,
    executor_settings,
    interleave,
    load_config,
    merge,
    parse_axes,
    parse_minutes,
    split_valid,
)

ROOT = Path(__file__).resolve().parent.parent


def test_grid_is_the_product_over_fixed_fields() -> None:
    config = SweepConfig(grid={"threads": [1, 2], "batch_size": [64, 128, 256]}, fixed={"epochs": 1})
    specs = config.specs()
    assert len(specs) == 6
    assert {(s.threads, s.batch_size) for s in specs} == {(t, b) for t in (1, 2) for b in (64, 128, 256)}
    assert all(s.epochs == 1 for s in specs)


def test_invalid_points_are_listed_with_their_reason() -> None:
    config = SweepConfig(grid={"device": ["cpu", "cuda"], "amp": ["off", "fp16"]})
    runnable, skipped = split_valid(config.specs(), Capabilities(cuda_devices=0, logical_cores=2))
    assert runnable == [RunSpec(device="cpu", amp="off")]
    reasons = {(s.spec.device, s.spec.amp): s.reason for s in skipped}
    assert "needs CUDA" in reasons[("cpu", "fp16")]
    assert "CUDA is not available" in reasons[("cuda", "off")]
    assert len(skipped) == 3


def test_interleaved_order_runs_each_point_once_per_round_never_twice_in_a_row() -> None:
    specs = [RunSpec(batch_size=b) for b in (32, 64, 128, 256)]
    points = interleave(specs, repeats=5, seed=1)
    assert len(points) == 20
    for r in range(5):
        round_ = points[4 * r : 4 * r + 4]
        assert {p.spec for p in round_} == set(specs) and {p.repeat for p in round_} == {r}
    assert all(a.spec != b.spec for a, b in zip(points, points[1:], strict=False))
    assert points == interleave(specs, repeats=5, seed=1)
    assert [p.spec for p in points] != [p.spec for p in interleave(specs, repeats=5, seed=2)]


def test_command_line_axes_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('repeats = 3\nout = "x"\n[grid]\nthreads = [1, 2]\n[run]\nepochs = 1\npin_memory = false\n')
    config = load_config(path)
    assert config.repeats == 3 and config.grid == {"threads": [1, 2]} and config.options == {"out": "x"}
    merged = merge(config, parse_axes({"threads": "2", "batch_size": "64,128"}), repeats=None, out="y")
    assert merged.fixed["threads"] == 2 and merged.grid == {"batch_size": [64, 128]}
    assert merged.repeats == 3 and merged.options["out"] == "y"


@pytest.mark.parametrize(
    ("text", "message"),
    [("[grid]\ncolour = [1]\n", "unknown run field"), ("[grid]\nthreads = ['x']\n", "whole number"),
     ("threads = [", "not valid TOML"), ("bogus = 1\n", "unknown keys")],
)
def test_bad_sweep_files_say_where(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SweepError, match=message):
        load_config(path)


def test_shipped_examples_parse() -> None:
    files = sorted((ROOT / "benchmarks").glob("*.toml"))
    assert len(files) >= 5
    for path in files:
        assert load_config(path).specs(), path


TINY = ["--data", "synthetic", "--samples", "256", "--epochs", "1", "--threads", "1"]


def test_sweep_dry_run_lists_points_and_runs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sweep", *TINY, "--batch-size", "64,128", "--repeats", "2", "--out", str(tmp_path), "--dry-run"])
    assert code == 0
    out = capsys.readouterr().out
    assert "2 configurations x 2 repeats = 4 runs" in out and out.count("#") == 4
    assert not (tmp_path / "runs.jsonl").exists()


def test_sweep_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", "--batch-size", "64,x", "--out", str(tmp_path)]) == 2
    assert main(["sweep", "--amp", "fp16", "--out", str(tmp_path)]) == 2
    assert main(["sweep", "--repeats", "0", "--out", str(tmp_path)]) == 2
    assert main(["sweep", "--config", str(tmp_path / "none.toml")]) == 2
    assert "no sweep file" in capsys.readouterr().err


def test_sweep_killed_midway_resumes_without_duplicates_or_losses(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    argv = [sys.executable, "-m", "vaebench.cli", "sweep", *TINY, "--batch-size", "32,64,128", "--repeats", "2",
            "--out", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (out / "runs.jsonl").exists() and len(read_rows(out)) >= 2:
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = read_rows(out)
    assert 2 <= len(first) < 6
    assert main(["sweep", *TINY, "--batch-size", "32,64,128", "--repeats", "2", "--out", str(out)]) == 0
    rows = read_rows(out)
    assert rows[: len(first)] == first
    keys = [(r["spec_key"], r["repeat"]) for r in rows]
    assert len(keys) == len(set(keys)) == 6
    assert {r["batch_size"] for r in rows} == {32, 64, 128}
    # A third run finds everything done and runs nothing.
    assert main(["sweep", *TINY, "--batch-size", "32,64,128", "--repeats", "2", "--out", str(out)]) == 0
    assert len(read_rows(out)) == 6


def test_ctrl_c_keeps_what_finished_and_stops_the_running_child(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    argv = [sys.executable, "-m", "vaebench.cli", "sweep", *TINY, "--batch-size", "32,64,128", "--repeats", "2",
            "--out", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not ((out / "runs.jsonl").exists() and read_rows(out)):
        time.sleep(0.2)
    time.sleep(1.0)  # into the next point's run
    running = _child_pids()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted" in stderr and "resume" in stderr
    kept = read_rows(out)
    assert 1 <= len(kept) < 6 and all(row["status"] == "ok" for row in kept)
    assert running, "the sweep should have had a training child running when interrupted"
    assert not running & _child_pids(), "the interrupted child outlived the sweep"


def _child_pids() -> set[int]:
    found = subprocess.run(["pgrep", "-f", "vaebench.train.child"], capture_output=True, text=True)
    return {int(pid) for pid in found.stdout.split()}


def test_an_executor_table_is_read_and_the_command_line_wins(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text('[grid]\nthreads = [1, 2]\n[executor]\nkind = "slurm"\npartition = "a100"\ntime = "1:30:00"\n'
                    'max_parallel = 4\n[executor.extra]\naccount = "lab"\nexclusive = true\n')
    config = load_config(path)
    settings = executor_settings(config.executor, {"kind": None, "max_parallel": 2, "extra": None})
    assert settings == ExecutorSettings(kind="slurm", partition="a100", time_min=90, max_parallel=2,
                                        extra=(("account", "lab"), ("exclusive", "true")))
    from_cli = executor_settings({}, {"kind": "submitit-local", "extra": ["qos=high"], "time": "2h"})
    assert from_cli.extra == (("qos", "high"),) and from_cli.time_min == 120
    assert from_cli.parallel() == 2 and ExecutorSettings(kind="slurm").parallel() is None
    assert ExecutorSettings().parallel() is None and not ExecutorSettings().submitit


@pytest.mark.parametrize(("text", "minutes"), [("90", 90), (45, 45), ("90m", 90), ("2h", 120), ("30s", 1),
                                               ("1:30:00", 90), ("10:00", 10), ("1-00:00:00", 1440)])
def test_time_limits_read_as_slurm_writes_them(text: object, minutes: int) -> None:
    assert parse_minutes(text) == minutes


@pytest.mark.parametrize(
    ("table", "overrides", "message"),
    [({"kind": "pbs"}, {}, "unknown executor 'pbs'"), ({}, {"time": "soon"}, "not a time limit"),
     ({}, {"time": "0"}, "must be positive"), ({}, {"max_parallel": 0}, "at least 1"),
     ({}, {"extra": ["account"]}, "KEY=VALUE")],
)
def test_bad_executor_settings_say_what_is_wrong(table: dict[str, object], overrides: dict[str, object],
                                                 message: str) -> None:
    with pytest.raises(SweepError, match=message):
        executor_settings(table, overrides)


def test_unknown_executor_keys_in_a_file_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[executor]\nkind = "slurm"\nqueue = "x"\n')
    with pytest.raises(SweepError, match=r"\[executor\] has unknown keys \['queue'\]"):
        load_config(path)


def test_a_local_sweep_can_be_listed_with_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", *TINY, "--batch-size", "64,128", "--steps", "3", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["sweep", "--status", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 points: 2 done, 0 failed, 0 running, 0 pending" in out and "batch_size=64" in out


@pytest.mark.parametrize("line", ['{"run_id": "x1"}', '{"run_id": "x1", "spec_key": null, "repeat": 0}',
                                  '{"run_id": "x1", "spec_key": "k", "repeat": "abc"}'])
def test_a_folder_holding_a_non_record_is_refused_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str
) -> None:
    (tmp_path / "runs.jsonl").write_text(line + "\n")
    assert main(["sweep", *TINY, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "runs.jsonl:1:" in err and err.count("\n") == 1 and "Traceback" not in err
    assert (tmp_path / "runs.jsonl").read_text() == line + "\n"
    assert not (tmp_path / "series").exists()
