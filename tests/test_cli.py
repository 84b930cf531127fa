"""Hostile input as a test: random values and random TOML documents thrown at every command that
takes them, through `main([...])` with training stubbed out. Whatever comes in, the answer is
exit status 0, 1 or 2 and no traceback: a traceback (exit 70) would be a bug.

Training, data preparation and the device probe are replaced by fakes (`stub_training`), so an
example costs milliseconds; figures are not drawn. Each example runs in a fresh temporary
folder, which is also the current folder, so relative paths land there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import math
import os
import random
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests._records import rerun_of
from vaebench import storage
from vaebench.cli import main
from vaebench.errors import EXIT_BUG
from vaebench.measure.run import RunOptions
from vaebench.result import DataInfo, MonitorSummary, ProcessUsage, RunRecord, StepSplit, TrainMetrics
from vaebench.spec import SPEC_FIELDS, Capabilities, RunSpec
from vaebench.tune.search import SearchResult, Trial, search_batch

EXAMPLES = 40  # per command: the whole file stays well under a minute
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

# --- fakes ---------------------------------------------------------------------------------------


def fake_run(spec: RunSpec, data: DataInfo, options: RunOptions) -> RunRecord:
    """A run that 'trains' instantly: plausible figures, sometimes a failure, sometimes a neighbour."""
    rng = random.Random(int(spec.key(), 16) * 1000 + options.repeat)  # the same answer on every replay
    if rng.random() < 0.1:
        record = RunRecord(spec=spec, run_id=f"f{rng.getrandbits(32):08x}", started_at="2026-01-01T00:00:00+00:00",
                           status="failed", reason="crashed: killed by SIGSEGV", repeat=options.repeat,
                           sweep=options.sweep, data=data)
    else:
        rate = 5000.0 * (1 + 0.05 * rng.random())
        train = TrainMetrics(
            t_import_s=1.0, t_data_s=0.1, t_model_s=0.1, t_first_step_s=0.01, train_s=2.0, steps_done=20,
            samples_seen=20 * spec.batch_size, warmup_steps=10, step_median_ms=1e3 * spec.batch_size / rate,
            step_iqr_ms=0.1, samples_per_s=rate, epoch_s=1.0, final_loss=100 + rng.random(),
            epoch_losses=[120.0, 100.0], epoch_times_s=[1.0, 1.0], split=StepSplit(1.0, 0.1, 3.0, 0.2),
            model_flops_per_s=1e10, peak_flops_per_s=1e11, flops_frac=0.1,
        )
        record = RunRecord(
            spec=spec, run_id=f"r{rng.getrandbits(32):08x}", started_at="2026-01-01T00:00:00+00:00",
            repeat=options.repeat, sweep=options.sweep, data=data,
            process=ProcessUsage(3.0, 2.5, 0.3, 500.0, 10, 5, 0), train=train,
            monitor=MonitorSummary(monitor_samples=30, interval_s=0.1, cpu_util_mean=90.0,
                                   neighbour_cpu_pct=rng.choice([2.0, 2.0, 80.0])),
            fingerprint={"cpu_model": "Test CPU", "logical_cores": 2, "torch": "2.5.0"},
        )
    storage.append(options.out, record)
    return record


def fake_prepare_data(spec: RunSpec, data_dir: str | None, *, write: bool = True) -> tuple[RunSpec, DataInfo]:
    source = "embedded" if spec.data == "auto" else spec.data
    name = {"embedded": "embedded-5k"}.get(source, source)
    return dataclasses.replace(spec, data=source), DataInfo(name, spec.samples, 1.0, "/nonexistent")


def fake_screen(base: RunSpec, data: DataInfo, **kwargs: Any) -> SearchResult:
    def measure(spec: RunSpec) -> Trial:
        return Trial(spec, samples_per_s=1000.0 * math.log2(spec.batch_size + 1), wall_s=0.01)

    return search_batch(base, measure, max_batch=int(kwargs["max_batch"]), start=int(kwargs["start"]))


@pytest.fixture
def stub_training(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("vaebench.measure.run", "vaebench.measure.execution", "vaebench.reproduce.plan",
                   "vaebench.tune.driver"):
        monkeypatch.setattr(f"{module}.run_once", fake_run)
    for module in ("vaebench.measure.run", "vaebench.measure.execution", "vaebench.reproduce.plan"):
        monkeypatch.setattr(f"{module}.prepare_data", fake_prepare_data)
    caps = Capabilities(cuda_devices=0, logical_cores=2)
    monkeypatch.setattr("vaebench.machine.capabilities", lambda probe_torch=False, **kwargs: caps)
    monkeypatch.setattr("vaebench.measure.run.capabilities", lambda probe_torch=False, **kwargs: caps)
    monkeypatch.setattr("vaebench.tune.screen.screen", fake_screen)
    # Figures are the slow part of a report and say nothing about input handling.
    monkeypatch.setattr("vaebench.analysis.report.draw_figures", lambda *args, **kwargs: {})
    monkeypatch.setattr("vaebench.tune.report.write", lambda result, out: Path(out) / "tune.md")
    monkeypatch.setattr("vaebench.reproduce.report.write", lambda comparison, folder: Path(folder) / "reproduce.md")


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A fresh folder that is also the current one, for one example."""
    before = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="vaebench-hostile-") as folder:
        os.chdir(folder)
        try:
            yield Path(folder)
        finally:
            os.chdir(before)


def answer(argv: list[str], capsys: pytest.CaptureFixture[str]) -> int:
    code = main(argv)
    err = capsys.readouterr().err
    event(f"exit {code}")  # pytest --hypothesis-show-statistics shows how deep the examples got
    assert code in (0, 1, 2), f"exit {code} for {argv}:\n{err}"
    assert code != EXIT_BUG and "Traceback" not in err, f"a traceback for {argv}:\n{err}"
    return code


# --- what a hostile user types -------------------------------------------------------------------

WORDS = ["", " ", "x", "abc", "default", "none", "on", "off", "true", "cpu", "cuda", "cuda:1", "mps", "tpu",
         "tensor", "reference", "device", "fp16", "bf16", "epoch", "step", "auto", "mnist", "embedded", "synthetic",
         "1,2", ",", "1,,2", "64,x", "-5%", "inf%", "10%", "0.1", "-1", "-inf", "inf", "nan", "1e12", "1e400",
         "99999", "0", "00", "1.5", "2**3", "120s", "2m", "1h", "5s", "0s", "-3s", "compile", "amp", "turbo"]
NUMBERS = st.one_of(st.integers(-(10**13), 10**13).map(str),
                    st.floats(allow_nan=True, allow_infinity=True, width=32).map(str))
VALUE = st.one_of(st.sampled_from(WORDS), NUMBERS,
                  st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00-"), max_size=8))
FOLDER = st.sampled_from(["out", "a/b", ".", "", " ", "file.txt", "out,2"])


# What a careful user would pass for each flag: three draws in four take one of these, so that
# examples also get past the parser into the command, with a hostile value here and there.
GOOD = {
    "--device": ["cpu"], "--threads": ["1", "2", "default"], "--interop-threads": ["1"],
    "--batch-size": ["64", "128"], "--epochs": ["1", "2"], "--steps": ["10"], "--lr": ["0.001", "1e-4"],
    "--loader": ["reference", "tensor"], "--workers": ["0"], "--compile": ["off"], "--amp": ["off", "bf16"],
    "--sync": ["step", "epoch"], "--seed": ["0", "3"], "--data": ["synthetic", "embedded", "auto"],
    "--samples": ["1024", "512"], "--profile-steps": ["5"], "--timeout": ["60"], "--sample-hz": ["10", "15"],
    "--out": ["out", "a/b"], "--data-dir": ["data"], "--repeats": ["1", "2", "3"], "--order-seed": ["0", "7"],
    "--threshold": ["10%", "0.05"], "--alpha": ["0.05"], "--budget": ["60s", "2m", "600"],
    "--max-batch": ["64", "512"], "--include": ["compile", "amp"], "--target-loss": ["110", "90"],
    "--quality-samples": ["1024"], "--tolerance": ["2%"], "--pin-memory": ["off"], "--cuda-graphs": ["off"],
    "--lr-scaling": ["none", "linear"], "--metric": ["samples_per_s", "final_loss", "epoch_s"],
}
LISTS = {"--batch-size": ["64,128"], "--threads": ["1,2"], "--seed": ["0,1"], "--loader": ["reference,tensor"]}
FOLDERS = ("--out", "--data-dir")
RUN_FLAGS = [f"--{name.replace('_', '-')}" for name in SPEC_FIELDS if name not in ("pin_memory", "cuda_graphs",
                                                                                     "profile")]
IO_FLAGS = ["--timeout", "--sample-hz", "--out", "--data-dir"]


def flag(name: str, good: dict[str, list[str]]) -> st.SearchStrategy[str]:
    valid = st.sampled_from(good.get(name) or GOOD.get(name) or ["1"])
    return st.one_of(valid, valid, valid, FOLDER if name in FOLDERS else VALUE)


def arguments(names: list[str], switches: tuple[str, ...] = (), good: dict[str, list[str]] = GOOD
              ) -> st.SearchStrategy[list[str]]:
    """Up to four of the flags, each with a value, and up to two of the switches."""
    flags = {name: flag(name, good) for name in names}

    @st.composite
    def draw_argv(draw: st.DrawFn) -> list[str]:
        argv: list[str] = []
        for name in draw(st.lists(st.sampled_from(names), max_size=4, unique=True)):
            argv += [name, draw(flags[name])]
        return argv + (draw(st.lists(st.sampled_from(switches), max_size=2, unique=True)) if switches else [])

    return draw_argv()


TOML_KEYS = [*SPEC_FIELDS, "repeats", "order_seed", "out", "timeout", "data_dir", "sample_hz", "name", "grid",
             "run", "colour"]
SCALAR = st.one_of(st.integers(-(10**13), 10**13), st.floats(allow_nan=True, allow_infinity=True),
                   st.booleans(), st.sampled_from(WORDS), st.text(max_size=6))
TOML_VALUE = st.one_of(SCALAR, st.lists(SCALAR, max_size=3), st.dictionaries(st.sampled_from(TOML_KEYS), SCALAR,
                                                                             max_size=2))


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


@st.composite
def toml_documents(draw: st.DrawFn) -> bytes:
    """A TOML file: top-level keys and [tables] from the sweep (or claim) vocabulary, or a broken one."""
    top = draw(st.dictionaries(st.sampled_from(TOML_KEYS), TOML_VALUE, max_size=4))
    tables = draw(st.dictionaries(st.sampled_from(["grid", "run", "claim", "claim.run", "extra"]),
                                  st.dictionaries(st.sampled_from(TOML_KEYS), TOML_VALUE, max_size=4), max_size=3))
    lines = [f"{json.dumps(k)} = {toml_value(v)}" for k, v in top.items() if k not in tables]
    for name, body in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in body.items()]
    text = "\n".join(lines) + "\n"
    damage = draw(st.sampled_from(["none", "none", "none", "truncate", "latin-1"]))
    if damage == "truncate":
        text = text[: draw(st.integers(0, len(text)))]
    return text.encode("latin-1" if damage == "latin-1" else "utf-8", errors="replace") + (
        b"\xff" if damage == "latin-1" else b"")


CLAIM = """[claim]
name = "tiny"
says = "a GPU beats a CPU"
data = "mnist"
tolerance = 0.05
[claim.run]
epochs = 2
batch_size = 64
[[published]]
id = "gpu"
device = "cuda"
real_s = 10.0
[[published]]
id = "cpu"
device = "cpu"
real_s = 20.0
user_s = 100.0
sys_s = 200.0
[[relation]]
id = "faster"
left = "gpu.real_s"
op = "<"
right = "cpu.real_s"
[[relation]]
id = "sys"
left = "cpu.sys_s"
op = ">"
right = "cpu.user_s"
"""
ONE_RUN = """repeats = 3
[run]
device = "cpu"
threads = 1
epochs = 1
data = "synthetic"
samples = 1024
"""


@st.composite
def mutated(draw: st.DrawFn, text: str) -> bytes:
    """`text` with one or two `key = value` lines given another value or dropped: nearly right."""
    lines = text.splitlines()
    for _ in range(draw(st.integers(0, 2))):
        i = draw(st.sampled_from([n for n, line in enumerate(lines) if " = " in line]))
        key = lines[i].split(" = ")[0]
        lines[i] = draw(st.sampled_from([f"{key} = {toml_value(draw(TOML_VALUE))}", ""]))
    return ("\n".join(lines) + "\n").encode()


# --- the properties -------------------------------------------------------------------------------


@SETTINGS
@given(argv=arguments(RUN_FLAGS + IO_FLAGS, ("--profile", "--pin-memory", "--cuda-graphs", "--no-instrument")))
def test_run_answers_any_input_with_0_1_or_2(stub_training: None, capsys: pytest.CaptureFixture[str],
                                               argv: list[str]) -> None:
    with scratch() as here:
        (here / "file.txt").write_text("not a folder")
        answer(["run", *argv], capsys)


@SETTINGS
@given(argv=arguments(RUN_FLAGS + IO_FLAGS + ["--repeats", "--order-seed", "--pin-memory", "--cuda-graphs"],
                      ("--dry-run", "--force", "--profile"), {**GOOD, **LISTS}),
       document=st.one_of(st.none(), toml_documents()))
def test_sweep_answers_any_flags_and_any_sweep_file_with_0_1_or_2(
    stub_training: None, capsys: pytest.CaptureFixture[str], argv: list[str], document: bytes | None
) -> None:
    with scratch() as here:
        (here / "file.txt").write_text("not a folder")
        config = []
        if document is not None:
            (here / "sweep.toml").write_bytes(document)
            config = ["--config", "sweep.toml"]
        answer(["sweep", *config, *argv], capsys)


@SETTINGS
@given(document=st.one_of(toml_documents(), mutated(ONE_RUN)), argv=arguments(["--repeats", "--threshold", *IO_FLAGS]))
def test_calibrate_answers_any_sweep_file_with_0_1_or_2(
    stub_training: None, capsys: pytest.CaptureFixture[str], document: bytes, argv: list[str]
) -> None:
    with scratch() as here:
        (here / "file.txt").write_text("not a folder")
        (here / "one.toml").write_bytes(document)
        answer(["calibrate", "--config", "one.toml", *argv], capsys)


RECORD_COLUMNS = ["schema_version", "run_id", "spec_key", "repeat", "status", "samples_per_s", "batch_size",
                  "warmup_steps", "samples", "neighbour_cpu_pct", "epoch_s", "final_loss", "device", "fp_cpu_model"]
JSON_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(), st.sampled_from(WORDS),
                       st.lists(st.integers(0, 3), max_size=2))


@st.composite
def results_lines(draw: st.DrawFn) -> list[str]:
    """runs.jsonl lines: real records, some with a column changed to anything, some not JSON."""
    lines = []
    for i in range(draw(st.integers(0, 5))):
        spec = RunSpec(batch_size=draw(st.sampled_from([128, 128, 128, 64])), data="synthetic", samples=1024)
        options = RunOptions(out=Path("."), repeat=i)
        row = dataclasses.replace(fake_run_record(spec, options), run_id=f"r{i}").to_row()
        if draw(st.integers(0, 7)) == 0:
            row[draw(st.sampled_from(RECORD_COLUMNS))] = draw(JSON_VALUE)
        line = json.dumps(row, allow_nan=True)
        if draw(st.integers(0, 19)) == 0:
            line = line[: draw(st.integers(0, len(line)))]
        lines.append(line)
    return lines


def fake_run_record(spec: RunSpec, options: RunOptions) -> RunRecord:
    with tempfile.TemporaryDirectory() as folder:
        data = DataInfo("synthetic", spec.samples, 1.0, "")
        return fake_run(spec, data, dataclasses.replace(options, out=Path(folder)))


@SETTINGS
@given(baseline=results_lines(), candidate=results_lines(),
       extra=arguments(["--threshold", "--alpha", "--metric"], ("--strict", "--allow-different-machines")),
       series=st.sampled_from(["none", "good", "torn", "wrong"]))
def test_compare_answers_any_results_folders_with_0_1_or_2(
    capsys: pytest.CaptureFixture[str], baseline: list[str], candidate: list[str], extra: list[str], series: str
) -> None:
    with scratch() as here:
        for name, lines in (("base", baseline), ("cand", candidate)):
            (here / name).mkdir()
            if lines:
                (here / name / "runs.jsonl").write_text("\n".join(lines) + "\n")
            (here / name / "series").mkdir()
            for i in range(5):
                payload = {"none": None, "good": json.dumps({"step_ms": [5.0] * 30, "monitor": []}), "torn": "{",
                           "wrong": json.dumps({"step_ms": "fast"})}[series]
                if payload is not None:
                    (here / name / "series" / f"r{i}.json").write_text(payload)
        answer(["compare", "base", "cand", *extra], capsys)


@SETTINGS
@given(argv=arguments(["--device", "--budget", "--max-batch", "--include", "--threads", "--target-loss",
                       "--quality-samples", "--tolerance", "--loader", "--lr-scaling", "--data", "--samples", "--out"],
                      ("--isolated",)))
def test_tune_answers_any_input_with_0_1_or_2(stub_training: None, capsys: pytest.CaptureFixture[str],
                                                argv: list[str]) -> None:
    with scratch() as here:
        (here / "file.txt").write_text("not a folder")
        answer(["tune", "--samples", "1024", "--data", "synthetic", *argv], capsys)


@SETTINGS
@given(document=st.one_of(toml_documents(), mutated(CLAIM)), quick=st.booleans(),
       argv=arguments(["--epochs", "--samples", "--device", "--out"]),
       claim=st.sampled_from(["file", "file", "file", "blog-3090", "../claims/blog-3090", "nowhere", ".", "x.toml"]))
def test_reproduce_answers_any_claim_file_with_0_1_or_2(
    stub_training: None, capsys: pytest.CaptureFixture[str], document: bytes, quick: bool, argv: list[str],
    claim: str
) -> None:
    with scratch() as here:
        (here / "file.txt").write_text("not a folder")
        (here / "claim.toml").write_bytes(document)
        where = "./claim.toml" if claim == "file" else claim
        argv = ["reproduce", "--claim", where, "--data", "synthetic", "--samples", "1024", "--device", "cpu",
                *(["--quick"] if quick else []), *argv]
        answer(argv, capsys)


def test_a_reader_that_stops_reading_ends_the_command_quietly(tmp_path: Path) -> None:
    # `vaebench report DIR | head -1`: the pipe closes while the command still prints.
    import shutil
    import subprocess
    import sys

    folder = tmp_path / "h200"
    shutil.copytree(Path(__file__).parents[1] / "docs/examples/nvidia-h200", folder,
                    ignore=shutil.ignore_patterns("lease-*", "traces", "report.md"))
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "w") as closed:
        proc = subprocess.run([sys.executable, "-m", "vaebench.cli", "report", str(folder)], stdout=closed,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 141, proc.stderr
    assert proc.stderr == ""
    assert (folder / "report.md").exists()  # written all the same, before the printout


def test_a_results_folder_may_be_named_by_its_runs_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    folder = tmp_path / "lease-2"
    shutil.copytree(Path(__file__).parents[1] / "docs/examples/nvidia-h200/lease-2", folder,
                    ignore=shutil.ignore_patterns("traces", "threads", "tune"))
    assert main(["report", str(folder / "runs.jsonl")]) == 0
    assert (folder / "report.md").exists()
    assert main(["compare", str(folder / "runs.jsonl"), str(rerun_of(folder, tmp_path / "again"))]) == 0
    assert "No regression" in capsys.readouterr().out
    assert main(["report", str(folder / "ladder.md")]) == 2  # another file is no folder


@pytest.mark.parametrize(("argv", "ignored"), [
    (["sweep", "--status", "DIR", "--threads", "1,2"], "--status runs nothing, so it would ignore --threads"),
    (["sweep", "--status", "DIR", "--force", "--dry-run"], "would ignore --force, --dry-run"),
    (["reproduce", "--report-only", "--force", "--out", "DIR"],
     "--report-only runs nothing, so it would ignore --force"),
    (["ladder", "--report-only", "--repeats", "3", "--out", "DIR"], "would ignore --repeats"),
    (["reproduce", "--quick", "--epochs", "3", "--out", "DIR"], "give --quick or --epochs, not both"),
])
def test_a_mode_that_runs_nothing_refuses_the_options_it_would_ignore(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], ignored: str
) -> None:
    assert main([str(tmp_path) if arg == "DIR" else arg for arg in argv]) == 2
    err = capsys.readouterr().err
    assert ignored in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [
    ["run", "--device", "cuda:99", "--steps", "2"],
    ["ladder", "--device", "cuda:99", "--steps", "2", "--no-profile"],
])
def test_a_refused_command_leaves_no_results_folder_behind(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            command: list[str]) -> None:
    out = tmp_path / "out"
    assert main([*command, "--out", str(out)]) == 2
    assert "cuda:99 asked for" in capsys.readouterr().err
    assert not out.exists()


def test_a_cpu_ladder_names_each_rung_it_cannot_climb_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["ladder", "--device", "cpu", "--rungs", "seed,cuda-graphs", "--data", "synthetic", "--samples",
                 "512", "--epochs", "1", "--out", str(tmp_path)])
    assert code == 0
    out, err = capsys.readouterr()
    assert err.count("skip") == 1 and "skip rung cuda-graphs: --cuda-graphs needs a CUDA device" in err
    assert "ladder: 1 of 2 rungs on cpu, 2 runs;" in out  # the seed's timed and profiled runs


def _disk_full_after(writes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """os.write, which appends a record's line, fails with ENOSPC after `writes` calls."""
    real, done = os.write, []

    def write(fd: int, data: bytes) -> int:
        done.append(fd)
        if len(done) > writes:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)


def test_a_record_a_full_disk_refuses_is_one_line_and_exit_1(
    stub_training: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _disk_full_after(0, monkeypatch)
    assert main(["run", "--data", "synthetic", "--batch-size", "64", "--out", str(tmp_path)]) == 1  # a run that ran
    out, err = capsys.readouterr()
    assert err.splitlines()[-1] == (f"vaebench run: {tmp_path / 'runs.jsonl'}: the run's record could not be written "
                                    "(No space left on device), so the run is lost")
    assert "Traceback" not in err
    assert re.search(r"^  time      real \d", out, re.M) and "samples/s steady" in out  # what it measured is on screen
    assert "saved" not in out


def test_a_full_disk_stops_a_sweep_keeping_what_finished(
    stub_training: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _disk_full_after(1, monkeypatch)
    assert main(["sweep", "--data", "synthetic", "--batch-size", "64,128,256", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(f"vaebench sweep: {tmp_path / 'runs.jsonl'}: the run's record could not")
    assert "no more points run, and what finished is kept: run the same command again" in err
    assert "Traceback" not in err
    assert len(storage.read_rows(tmp_path)) == 1
