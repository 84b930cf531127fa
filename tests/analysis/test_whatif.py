from __future__ import annotations

import math

import pandas as pd
import pytest

from vaebench.analysis.report import bottlenecks
from vaebench.analysis.whatif import whatifs
from vaebench.spec import RunSpec


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
