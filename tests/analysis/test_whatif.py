from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaebench.analysis.report import bottlenecks
from vaebench.analysis.whatif import IDENTITY, KNOBS, whatifs
from vaebench.rules import contended
from vaebench.spec import RunSpec, format_value
from vaebench.stats import is_missing, number


def config(label: str, samples_per_s: float, **fields: object) -> dict[str, object]:
    spec = RunSpec(**fields)  # type: ignore[arg-type]
    row: dict[str, object] = {"config": label, **spec.to_dict(), "samples_per_s_median": samples_per_s}
    row.update({"split_data_ms_median": 8.0, "split_copy_ms_median": 0.1, "split_compute_ms_median": 4.0,
                "split_sync_ms_median": 0.1})
    return row


def test_siblings_differing_in_one_knob_give_speedups() -> None:
    summary = pd.DataFrame([
        config("ref", 1000.0),
        config("tensor", 2500.0, loader="tensor"),
        config("ref-b256", 1500.0, batch_size=256),
        config("tensor-b256", 4000.0, loader="tensor", batch_size=256),  # two knobs from ref
        config("ref-seed1", 1100.0, seed=1),  # seed is no knob
    ])
    found = whatifs(summary)
    assert found["ref"] == {"--loader tensor": 2.5, "--batch-size 256": 1.5}
    assert found["tensor"]["--loader reference"] == pytest.approx(0.4)
    assert "ref-seed1" not in found
    assert math.isclose(found["ref-b256"]["--loader tensor"], 4000 / 1500)


def test_a_measured_whatif_backs_the_verdict() -> None:
    summary = pd.DataFrame([config("ref", 1000.0), config("tensor", 2500.0, loader="tensor")])
    verdict = bottlenecks(summary)["ref"]
    assert verdict.startswith("bound by input pipeline")
    assert "--loader tensor ran 2.50x as fast" in verdict


def test_given_the_runs_a_whatif_counts_only_beyond_chance() -> None:
    summary = pd.DataFrame([config("ref", 1000.0), config("tensor", 2500.0, loader="tensor")])
    one_each = {"ref": [1000.0], "tensor": [2500.0]}  # a reproduce folder: one run a configuration
    apart = {"ref": [990.0, 1000.0, 1010.0], "tensor": [2400.0, 2500.0, 2600.0]}
    overlapping = {"ref": [400.0, 1000.0, 2600.0], "tensor": [600.0, 2500.0, 2200.0]}
    assert whatifs(summary, runs=one_each) == {}
    assert whatifs(summary, runs=overlapping) == {}
    assert whatifs(summary, runs=apart) == whatifs(summary)  # 3 a side, all apart: p = 1/20


def test_a_single_run_whatif_does_not_overrule_the_rules_in_a_report() -> None:
    compute = {"split_data_ms_median": 0.5, "split_compute_ms_median": 9.0}  # input 5%: compute by the rules
    summary = pd.DataFrame([config("ref", 1000.0) | compute, config("tensor", 2500.0, loader="tensor") | compute])
    runs = pd.DataFrame([{"config": c, "status": "ok", "samples_per_s": v} for c, v in (("ref", 1000.0),
                                                                                          ("tensor", 2500.0))])
    assert bottlenecks(summary)["ref"].startswith("bound by input pipeline: the rules pointed to compute")
    assert bottlenecks(summary, runs)["ref"].startswith("bound by compute")


def test_the_verdict_does_not_advise_a_knob_the_configuration_already_uses() -> None:
    summary = pd.DataFrame([config("ref", 1000.0), config("tensor", 2500.0, loader="tensor")])
    verdict = bottlenecks(summary)["tensor"]
    assert verdict.startswith("bound by input pipeline")
    assert verdict.endswith("Knobs: none left. Already set: --loader tensor.")


def test_a_graphed_configuration_is_judged_by_its_graphs_stream_time() -> None:
    row = config("graphs", 450_000.0, device="cuda", loader="device", sync="epoch", cuda_graphs=True)
    row.update({"split_data_ms_median": 0.04, "split_copy_ms_median": 0.03, "split_compute_ms_median": 0.18,
                "split_sync_ms_median": 0.0, "split_device_copy_ms_median": 0.0,
                "split_device_compute_ms_median": 0.28, "step_median_ms_median": 0.29})
    verdict = bottlenecks(pd.DataFrame([row]))["graphs"]
    assert verdict.startswith("bound by compute") and "busy at most 97% of the step" in verdict
    eager = bottlenecks(pd.DataFrame([row | {"cuda_graphs": False, "sync": "step"}]))["graphs"]
    assert not eager.startswith("bound by compute")


def test_a_configuration_measured_beside_a_busy_neighbour_is_no_evidence() -> None:
    quiet = [config("ref", 1000.0), config("tensor", 2500.0, loader="tensor")]
    busy = [quiet[0], quiet[1] | {"neighbour_cpu_pct_median": 90.0}]
    assert whatifs(pd.DataFrame(quiet))["ref"] == {"--loader tensor": 2.5}
    assert "ref" not in whatifs(pd.DataFrame(busy))
    verdict = bottlenecks(pd.DataFrame(busy))["tensor"]
    assert "measured beside a busy neighbour (processes outside the run used 90% of a core)" in verdict
    assert "busy neighbour" not in bottlenecks(pd.DataFrame(quiet))["tensor"]


def test_a_knob_read_back_from_pandas_is_named_as_the_command_line_gives_it() -> None:
    # pandas holds a missing thread count as NaN and 2 as 2.0 beside it.
    summary = pd.DataFrame([config("default", 1000.0), config("two", 1800.0, threads=2)])
    assert summary["threads"].tolist()[0] != summary["threads"].tolist()[0]  # NaN
    found = whatifs(summary)
    assert found["default"] == {"--threads 2": 1.8}
    assert found["two"] == {"--threads default": pytest.approx(1 / 1.8)}


def pairwise_whatifs(summary: pd.DataFrame, metric: str = "samples_per_s_median") -> dict[str, dict[str, float]]:
    """The definition, every configuration against every other, as whatifs read before it grouped them."""
    rows = [row for row in summary.to_dict("records") if not contended(row.get("neighbour_cpu_pct_median"))]
    found: dict[str, dict[str, float]] = {}
    for row in rows:
        for other in rows:
            differing = [name for name in IDENTITY if not (
                (is_missing(row.get(name)) and is_missing(other.get(name))) or row.get(name) == other.get(name))]
            if len(differing) != 1 or differing[0] not in KNOBS:
                continue
            if not number(row.get(metric)) > 0 or not number(other.get(metric)) > 0:
                continue
            knob = differing[0]
            flag = f"--{knob.replace('_', '-')} {format_value(getattr(RunSpec.from_dict(other), knob))}"
            found.setdefault(row["config"], {})[flag] = float(other[metric]) / float(row[metric])
    return found


@st.composite
def summaries(draw: st.DrawFn) -> pd.DataFrame:
    """Small summaries on a few values per field, so that siblings, twins and contended rows are common."""
    rows = []
    for number_ in range(draw(st.integers(0, 20))):
        fields: dict[str, Any] = {
            "threads": draw(st.sampled_from([None, 1, 2])),
            "loader": draw(st.sampled_from(["reference", "tensor"])),
            "batch_size": draw(st.sampled_from([64, 128])),
            "seed": draw(st.sampled_from([0, 0, 0, 1])),  # no knob: a sibling in seed is none
            "profile": draw(st.sampled_from([False, False, True])),  # no identity: twins differ in it alone
        }
        row: dict[str, Any] = {"config": f"c{number_}", **RunSpec(**fields).to_dict()}
        row["machine"] = draw(st.sampled_from(["", "", "a"]))
        row["samples_per_s_median"] = draw(st.sampled_from([math.nan, 0.0, 1000.0, 1500.0, 2500.0, 4000.0]))
        row["neighbour_cpu_pct_median"] = draw(st.sampled_from([math.nan, 5.0, 5.0, 90.0]))
        rows.append(row)
    return pd.DataFrame(rows)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(summary=summaries())
def test_grouped_whatifs_are_the_pairwise_comparison_in_its_order(summary: pd.DataFrame) -> None:
    found, expected = whatifs(summary), pairwise_whatifs(summary)
    assert found == expected
    assert [(config, list(flags.items())) for config, flags in found.items()] == \
        [(config, list(flags.items())) for config, flags in expected.items()]
