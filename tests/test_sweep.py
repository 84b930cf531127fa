from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests._processes import alive_in_groups, wait_for_child
from vaebench.cli import main
from vaebench.spec import Capabilities, RunSpec
from vaebench.storage import load_runs, read_rows
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
    running = {child.pid for child in wait_for_child(proc.pid)}
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = read_rows(out)
    assert 2 <= len(first) < 6
    time.sleep(1.0)
    assert not alive_in_groups(running), "the killed sweep's training child lived on"
    assert main(["sweep", *TINY, "--batch-size", "32,64,128", "--repeats", "2", "--out", str(out)]) == 0
    rows = read_rows(out)
    assert rows[: len(first)] == first
    keys = [(r["spec_key"], r["repeat"]) for r in rows]
    assert len(keys) == len(set(keys)) == 6
    assert {r["batch_size"] for r in rows} == {32, 64, 128}
    pictures = {path.stem for path in (out / "samples").glob("*.png")}
    assert pictures <= {r["run_id"] for r in rows}, "a killed run left a samples picture with no record"
    # A third run finds everything done and runs nothing.
    assert main(["sweep", *TINY, "--batch-size", "32,64,128", "--repeats", "2", "--out", str(out)]) == 0
    assert len(read_rows(out)) == 6


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_keeps_what_finished_and_stops_the_running_child(tmp_path: Path, signum: int, status: int) -> None:
    out = tmp_path / "sweep"
    argv = [sys.executable, "-m", "vaebench.cli", "sweep", *TINY, "--batch-size", "32,64,128", "--repeats", "2",
            "--out", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not ((out / "runs.jsonl").exists() and read_rows(out)):
        time.sleep(0.2)
    running = {child.pid for child in wait_for_child(proc.pid, settle=1.0)}  # into the next point's run
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == status, stderr
    assert "interrupted" in stderr and "resume" in stderr and "Traceback" not in stderr
    kept = read_rows(out)
    assert 1 <= len(kept) < 6 and all(row["status"] == "ok" for row in kept)
    time.sleep(1.0)
    assert not alive_in_groups(running), "the interrupted child outlived the sweep"
    assert not list((out / ".locks").glob("child-*")), "the child's registration outlived it"


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
    assert main(["sweep", "--status", str(tmp_path), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["counts"] == {"done": 2, "failed": 0, "running": 0, "pending": 0}
    runs = {(r["spec_key"], r["repeat"]) for r in load_runs(str(tmp_path)).to_dict("records")}
    assert {(p["spec_key"], p["repeat"]) for p in listed["points"]} == runs
    assert main(["sweep", *TINY, "--json", "--out", str(tmp_path)]) == 2  # --json lists; it runs nothing
    assert main(["sweep", *TINY, "--batch-size", "64,128", "--steps", "3", "--out", str(tmp_path)]) == 0
    assert f"sweep: nothing left to run: every point has a successful run in {tmp_path}" in capsys.readouterr().out


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


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('timeout = "abc"\n', "timeout"),
        ('sample_hz = "fast"\n', "sample_hz"),
        ("sample_hz = 0\n", "sample_hz"),
        ("sample_hz = 1000\n", "sample_hz"),
        ("sample_hz = 1e-300\n", "sample_hz"),
        ("grid = 5\n", "grid"),
        ("run = [1, 2]\n", "run"),
        ("data_dir = 7\n", "data_dir"),
        ("out = 42\n", "out"),
        ('out = ""\n', "out"),
        ("repeats = 'x'\n", "repeats"),
        ("repeats = 100000000\n", "repeats"),
        ("order_seed = -1\n", "order_seed"),
        ("name = 5\n", "name"),
        ("[grid]\nthreads = []\n", "[grid] threads"),
        ("[grid]\nsamples = [1e12]\n", "[grid] samples"),
        ("[run]\nlr = inf\n", "[run] lr"),
        ("[run]\nthreads = [1, 2]\n", "[run] threads"),
        ("[run]\nbatch_size = {a = 1}\n", "[run] batch_size"),
    ],
)
def test_wrong_types_in_a_sweep_file_name_the_file_table_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, where: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert main(["sweep", "--config", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: {where}" in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_a_sweep_file_that_is_a_folder_or_not_utf8_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"[grid]\nthreads = [1]\n# \xff\xfe\n")
    for config, words in ((tmp_path, "is a folder, not a sweep file"), (binary, "is not UTF-8")):
        assert main(["sweep", "--config", str(config), "--dry-run"]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--sample-hz", "0"], "--sample-hz must be positive"),
        (["--sample-hz", "1000"], "--sample-hz must be at most 15 Hz"),
        (["--sample-hz", "1e-10"], "--sample-hz must be at least 0.01 Hz"),
        (["--sample-hz", "nan"], "--sample-hz must be a finite number"),
        (["--timeout", "inf"], "--timeout must be a finite number"),
        (["--out", ""], "--out must name a folder"),
        (["--data-dir", ""], "--data-dir must name a folder"),
        (["--repeats", "100000000"], "--repeats must be at most 1,000"),
        (["--repeats", "1000", "--seed", "0,1,2,3,4,5,6,7,8,9,10"], "at most 10,000"),
        (["--lr", "inf"], "--lr: learning rate (lr) must be a finite number"),
        (["--samples", "1000000000000"], "--samples: samples must be at most 1,000,000"),
        (["--threads", "99999"], "--threads: threads must be at most 1,024"),
        (["--batch-size", "0,64"], "--batch-size: batch size must be at least 1"),
        (["--threads", "x"], "whole number"),
    ],
)
def test_sweep_refuses_what_run_refuses_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: str
) -> None:
    out = tmp_path / "out"
    assert main(["sweep", *TINY, "--out", str(out), *args, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not out.exists()


def test_dry_run_creates_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, data = tmp_path / "out", tmp_path / "data"
    argv = ["sweep", *TINY, "--batch-size", "64,128", "--out", str(out), "--data-dir", str(data), "--dry-run"]
    assert main(argv) == 0
    assert "2 configurations x 1 repeat = 2 runs" in capsys.readouterr().out
    assert not out.exists() and not data.exists()


def test_a_batch_above_the_epoch_is_a_point_skipped_with_its_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sweep", *TINY, "--batch-size", "64,100000", "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "batch_size=100000" in captured.err and "above the 256 samples of an epoch" in captured.err
    assert "1 configuration x 1 repeat = 1 run" in captured.out


def test_a_field_in_both_grid_and_run_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "both.toml"
    path.write_text("[grid]\nthreads = [1, 2]\nbatch_size = [64]\n[run]\nthreads = 4\nepochs = 1\n")
    with pytest.raises(SweepError, match=r"threads in both \[grid\] and \[run\]"):
        load_config(path)


def test_a_sweep_over_several_hosts_needs_slurm_not_a_hang(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Locally, torchrun would wait for a second node forever: refused before anything runs."""
    assert main(["sweep", "--nnodes", "2", "--threads", "1", "--steps", "2", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--nnodes 2 needs hosts that only --executor slurm gives" in err and err.count("\n") == 1
    assert not (tmp_path / "runs.jsonl").exists()


@pytest.mark.parametrize("threads", ["1,,2", "1,2,", ","])
def test_an_empty_value_in_a_comma_list_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   threads: str) -> None:
    assert main(["sweep", "--threads", threads, "--dry-run", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--threads" in err and err.count("\n") == 1


def test_job_options_without_an_executor_that_takes_them_are_refused(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", "--threads", "1", "--slurm-partition", "a100", "--max-parallel", "2", "--dry-run",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--slurm-partition, --max-parallel" in err and "--executor slurm or submitit-local" in err


def test_a_ledger_folder_that_is_a_file_is_refused_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "points").write_text("")
    assert main(["sweep", *TINY, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"results folder {tmp_path} cannot be written: {tmp_path / 'points'}: not a folder" in err
    assert not (tmp_path / "runs.jsonl").exists()


@pytest.mark.parametrize("command", [["sweep", "--status"], ["report"]])
def test_a_results_file_that_is_a_folder_is_named_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    (tmp_path / "runs.jsonl").mkdir()
    assert main([*command, str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "runs.jsonl: cannot be read (Is a directory)" in err and "Traceback" not in err
