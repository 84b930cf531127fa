"""Claim files: the packaged blog claim, relations judged with known answers, bad files refused by key."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from vaebench.cli import main
from vaebench.reproduce import claim as claims
from vaebench.reproduce.claim import AGREES, DISAGREES, NOT_TESTABLE, TOO_CLOSE, ClaimError

GOOD = """
[claim]
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
user_s = 12.0
sys_s = 3.0
gpu_util_mean = 7

[[published]]
id = "cpu"
label = "big CPU"
device = "cpu"
real_s = 20.0
user_s = 100.0
sys_s = 200.0
[published.machine]
logical_cores = 20

[[relation]]
id = "faster"
left = "gpu.real_s"
op = "<"
right = "cpu.real_s"

[[relation]]
id = "idle"
left = "gpu.gpu_util_mean"
op = "<"
right = 15
tolerance = 0.2

[[relation]]
id = "sys"
left = "cpu.sys_s"
op = ">"
right = "cpu.user_s"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "claim.toml"
    path.write_text(text)
    return path


def test_the_packaged_blog_claim_holds_the_published_figures() -> None:
    claim = claims.load()
    gpu, cpu = claim.row("gpu"), claim.row("cpu")
    assert (gpu.figures["real_s"], gpu.figures["user_s"], gpu.figures["sys_s"]) == (76.440, 83.738, 32.552)
    assert gpu.figures["gpu_util_mean"] == 7
    assert (cpu.figures["real_s"], cpu.figures["user_s"], cpu.figures["sys_s"]) == (116.233, 705.820, 1528.952)
    assert cpu.figures["cpu_pct"] == pytest.approx(100 * (705.820 + 1528.952) / 116.233)
    assert cpu.machine["logical_cores"] == 20
    assert claim.run == {"batch_size": 128, "epochs": 10, "lr": 1e-3, "loader": "reference"}
    assert [r.id for r in claim.relations] == ["gpu-faster", "gpu-mostly-idle", "cpu-sys-above-user"]
    assert claims.load("blog-3090") == claim


def test_relations_judged_with_known_ratios(tmp_path: Path) -> None:
    claim = claims.load(write(tmp_path, GOOD))
    measured = {
        "gpu": [{"label": "cuda:0", "real_s": 5.0, "gpu_util_mean": 14.0}],
        "cpu": [{"label": "cpu", "real_s": 5.2, "user_s": 10.0, "sys_s": 1.0}],
    }
    verdicts = {v.relation.id: v for v in claims.evaluate(claim, measured)}
    faster = verdicts["faster"]
    assert faster.outcome == TOO_CLOSE  # 5 / 5.2 = 0.96 is within 5% of 1
    assert faster.measured == pytest.approx(5 / 5.2)
    assert faster.published == pytest.approx(0.5)
    assert verdicts["idle"].outcome == TOO_CLOSE  # 14 / 15 = 0.93 is within its own 20%
    sys_ = verdicts["sys"]
    assert sys_.outcome == DISAGREES and sys_.measured == pytest.approx(0.1) and sys_.published == pytest.approx(2.0)
    assert "0.10x" in sys_.detail and "published 2.00x" in sys_.detail and "cpu" in sys_.detail


def test_a_relation_writes_its_figures_as_the_table_does(tmp_path: Path) -> None:
    from vaebench.reproduce.report import COLUMNS

    claim = claims.load(write(tmp_path, GOOD))
    measured = {"gpu": [{"label": "cuda:0", "real_s": 5.0, "gpu_util_mean": 9.4}],
                "cpu": [{"label": "cpu", "real_s": 5.2, "user_s": 10.0, "sys_s": 0.5944}]}
    verdicts = {v.relation.id: v for v in claims.evaluate(claim, measured)}
    # Was `= 0.5944 is 0.06x ... = 10`, beside 0.594 and 10.000 in the table.
    assert "sys_s of cpu = 0.594 and user_s of cpu = 10.000: a ratio of 0.06x" in verdicts["sys"].detail
    assert "gpu_util_mean of cuda:0 = 9 against the claim's 15: a ratio of 0.63x (" in verdicts["idle"].detail
    assert all(spec == claims.FIGURE_FORMATS[name] for name, _, spec in COLUMNS)


def test_agrees_and_a_verdict_per_gpu(tmp_path: Path) -> None:
    claim = claims.load(write(tmp_path, GOOD))
    measured = {
        "gpu": [{"label": "cuda:0", "real_s": 4.0, "gpu_util_mean": 5.0},
                {"label": "cuda:1", "real_s": 9.0, "gpu_util_mean": math.nan}],
        "cpu": [{"label": "cpu", "real_s": 8.0, "user_s": 10.0, "sys_s": 30.0}],
    }
    verdicts = claims.evaluate(claim, measured)
    outcomes = [(v.relation.id, v.runs.get("gpu", ""), v.outcome) for v in verdicts]
    assert outcomes == [
        ("faster", "cuda:0", AGREES),
        ("faster", "cuda:1", DISAGREES),
        ("idle", "cuda:0", AGREES),
        ("idle", "cuda:1", NOT_TESTABLE),
        ("sys", "", AGREES),
    ]
    assert "gpu.gpu_util_mean not measured" in verdicts[3].detail


def test_no_gpu_here_makes_its_relations_not_testable(tmp_path: Path) -> None:
    claim = claims.load(write(tmp_path, GOOD))
    verdicts = claims.evaluate(claim, {"gpu": [], "cpu": [{"real_s": 8.0, "user_s": 10.0, "sys_s": 30.0}]})
    assert [v.outcome for v in verdicts] == [NOT_TESTABLE, NOT_TESTABLE, AGREES]
    assert "no cuda run here" in verdicts[0].detail
    assert math.isnan(verdicts[0].measured) and verdicts[0].published == pytest.approx(0.5)


def test_a_right_side_measured_at_zero_is_not_testable_not_a_division_by_zero(tmp_path: Path) -> None:
    claim = claims.load(write(tmp_path, GOOD))
    measured = {"gpu": [], "cpu": [{"label": "cpu", "real_s": 8.0, "user_s": 0.0, "sys_s": 30.0}]}
    sys_ = next(v for v in claims.evaluate(claim, measured) if v.relation.id == "sys")
    assert sys_.outcome == NOT_TESTABLE and math.isnan(sys_.measured)
    assert sys_.published == pytest.approx(2.0)
    assert "user_s of cpu = 0.000 here: no ratio to judge" in sys_.detail and "nan" not in sys_.detail


@pytest.mark.parametrize(
    ("gpu_s", "outcome"),
    [
        (9.49, AGREES),
        (9.5, TOO_CLOSE),  # 0.95 = 1 - tolerance: the band's edge is in the band (docs/claims.md)
        (9.51, TOO_CLOSE),  # 0.951 is within 5% of 1x (and above 1 / 1.05 = 0.952)
        (10.5, TOO_CLOSE),  # 1.05 = 1 + tolerance
        (10.51, DISAGREES),
    ],
)
def test_a_ratio_on_the_tolerance_edge_is_too_close_to_call(tmp_path: Path, gpu_s: float, outcome: str) -> None:
    claim = claims.load(write(tmp_path, GOOD))  # "faster": gpu.real_s < cpu.real_s, tolerance 0.05
    measured = {"gpu": [{"real_s": gpu_s, "gpu_util_mean": 5.0}], "cpu": [{"real_s": 10.0}]}
    faster = next(v for v in claims.evaluate(claim, measured) if v.relation.id == "faster")
    assert faster.measured == pytest.approx(gpu_s / 10.0)
    assert faster.outcome == outcome


def test_a_published_row_keeps_a_zero_figure_and_its_own_cpu_pct(tmp_path: Path) -> None:
    text = GOOD.replace("sys_s = 3.0", "sys_s = 0.0", 1).replace('label = "big CPU"', 'label = "big CPU"\ncpu_pct = 50',
                                                                 1)
    claim = claims.load(write(tmp_path, text))
    gpu, cpu = claim.row("gpu"), claim.row("cpu")
    assert gpu.figures["sys_s"] == 0.0  # a row that spent no time in the kernel is a figure, not a mistake
    assert gpu.figures["cpu_pct"] == pytest.approx(100 * 12.0 / 10.0)  # not published: from user + sys
    assert cpu.figures["cpu_pct"] == 50.0  # published: kept, not the 1,500% its times would give


def test_a_published_machine_may_name_its_openmp_runtime(tmp_path: Path) -> None:
    from vaebench.reproduce import findings

    text = GOOD.replace("logical_cores = 20", 'logical_cores = 20\nopenmp_runtime = "libiomp5 (Intel)"', 1)
    cpu = claims.load(write(tmp_path, text)).row("cpu")
    assert cpu.machine["openmp_runtime"] == "libiomp5 (Intel)"
    here = {"fp_logical_cores": 20, "fp_openmp_runtime": "libgomp (GNU)", "sys_s": 1.0, "user_s": 10.0}
    finding = findings.sys_claim("disagrees", 2.0, [], cpu.machine, here)
    assert finding is not None and "OpenMP runtime: libiomp5 (Intel) published against libgomp (GNU) here" in (
        finding.text)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("real_s = 10.0\n", "", "[[published]] 1: missing key `real_s`"),
        ('label = "big CPU"', 'lable = "big CPU"', "[[published]] 2: unknown key `lable`"),
        ('op = "<"\nright = "cpu.real_s"', 'op = "<="\nright = "cpu.real_s"', "`op` must be '<' or '>'"),
        ('right = "cpu.real_s"', 'right = "tpu.real_s"', "[[relation]] 1 `right`: no published row 'tpu'"),
        ('left = "gpu.real_s"', 'left = "gpu.wall_s"', "unknown figure 'wall_s'"),
        ("tolerance = 0.05", "tolerance = 5", "[claim] tolerance must be a fraction"),
        ('device = "cuda"', 'device = "tpu"', "`device` must be one of cpu, cuda, mps"),
        ("epochs = 2", 'device = "cpu"', "[claim.run]: `device` cannot be fixed here"),
        ("epochs = 2", "epoch = 2", "[claim.run]: unknown run field `epoch`"),
        ("epochs = 2", 'epochs = "ten"', "[claim.run]: `epochs`: epochs must be a whole number"),
        ("epochs = 2", "epochs = 1000000000", "[claim.run]: `epochs`: epochs must be at most 1,000"),
        ("epochs = 2", "lr = inf", "[claim.run]: `lr`: learning rate (lr) must be a finite number"),
        ("epochs = 2", "threads = 99999", "[claim.run]: `threads`: threads must be at most 1,024"),
        ("epochs = 2", "run = 3", "[claim.run]: unknown run field `run`"),
        ('name = "tiny"\n', "", "[claim]: missing key `name`"),
        ("real_s = 20.0", "real_s = 5.0", "relation 'faster' (gpu.real_s < cpu.real_s) does not hold on the claim's "
         "own published figures"),
        ('op = ">"', 'op = ">" >', "not valid TOML"),
        ('id = "cpu"', 'id = "gpu"', "[[published]] id 'gpu' is used twice"),
        ('left = "gpu.real_s"', "left = 3", "[[relation]] 1: `left` must name a published figure like 'gpu.real_s', "
         "got 3"),
        ("right = 15", "right = 0", "[[relation]] 2: a constant `right` must be positive, got 0"),
        ("tolerance = 0.2", "tolerance = 1", "[[relation]] 2 `tolerance` must be a fraction from 0 up to 1"),
        ("real_s = 10.0", "real_s = -10.0", "[[published]] 1 `real_s` must be a number, 0 or more, got -10.0"),
    ],
)
def test_a_bad_claim_file_names_the_bad_key(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ClaimError) as caught:
        claims.load(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


def test_a_missing_claim_file() -> None:
    with pytest.raises(ClaimError, match="no claim file at nowhere.toml"):
        claims.load("nowhere.toml")


def test_reproduce_refuses_a_bad_claim_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD.replace('op = "<"', 'op = "=="', 1))
    code = main(["reproduce", "--quick", "--device", "cpu", "--claim", str(path), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "`op` must be '<' or '>', got '=='" in capsys.readouterr().err


def test_a_claim_file_that_is_not_utf8_or_is_a_folder_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = tmp_path / "binary.toml"
    binary.write_bytes(GOOD.encode() + b"# \xff\xfe\n")
    for claim, words in ((binary, "is not UTF-8"), (tmp_path, "is a folder, not a claim file")):
        code = main(["reproduce", "--quick", "--device", "cpu", "--claim", str(claim), "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert code == 2 and words in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_a_claim_name_resolves_only_inside_the_packaged_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A claim just outside the packaged folder, reachable from it by ../
    packaged = claims.packaged(claims.DEFAULT_CLAIM)
    assert packaged is not None
    for name in ("../claims/blog-3090", "../../reproduce/claims/blog-3090", "..", ".", "blog-3090.toml/.."):
        assert claims.packaged(name) is None, name
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ClaimError, match="no claim file at"):
        claims.load("../claims/blog-3090")
    assert claims.load("blog-3090").name == claims.load(packaged).name
    (tmp_path / "mine.toml").write_text(GOOD)
    assert claims.load("mine.toml").name == "tiny" and claims.load("./mine.toml").name == "tiny"
