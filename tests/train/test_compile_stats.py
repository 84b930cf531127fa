from __future__ import annotations

import dataclasses
import math
from collections import Counter, defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest

from vaebench.train.compile_stats import (
    DELIBERATE_BREAK,
    CompileCounters,
    compile_counters,
    cudagraph_warnings,
    payback_steps,
    recompile_warnings,
)

RAGGED = "0/0: tensor 'x' size mismatch at index 0. expected 128, actual 96"


def test_payback_is_compile_time_over_the_time_saved_per_step() -> None:
    assert payback_steps(10.0, 5.0, 3.0) == 5000
    assert payback_steps(1.0, 3.0, 0.7) == 435  # 1000 / 2.3 = 434.8, rounded up
    assert payback_steps(10.0, 3.0, 3.5) == math.inf
    assert math.isnan(payback_steps(math.nan, 3.0, 2.0))


def test_cache_state_follows_hits_and_misses() -> None:
    assert CompileCounters(cache_hits=3).cache == "warm"
    assert CompileCounters(cache_misses=2).cache == "cold"
    assert CompileCounters(cache_hits=1, cache_misses=1).cache == "partly warm"
    assert CompileCounters().cache == "off"


def test_since_keeps_only_what_happened_in_between() -> None:
    before = CompileCounters(frames=1, graphs=1, recompile_reasons=("a",), compile_s=2.0)
    # New reasons may be listed before old ones: they are grouped by code object.
    after = CompileCounters(frames=3, graphs=2, recompile_reasons=("b", "a"), compile_s=2.5)
    delta = after.since(before)
    assert (delta.frames, delta.graphs, delta.recompile_reasons) == (2, 1, ("b",))
    assert delta.compile_s == pytest.approx(0.5)


def test_a_recompile_for_another_batch_size_is_named_with_its_fix() -> None:
    warnings = recompile_warnings(
        CompileCounters(recompile_reasons=(RAGGED, "___check_obj_id(L['self'])"), graph_breaks=2)
    )
    assert len(warnings) == 3
    assert "batch of 96 after compiling for 128" in warnings[0] and "graph of its own" in warnings[0]
    assert "mark_dynamic" in warnings[0]
    assert warnings[1].startswith("unexpected recompile")
    assert "2 graph breaks" in warnings[2]
    assert recompile_warnings(CompileCounters(frames=1, graphs=1)) == []


UNSUPPORTED = "Unsupported Tensor.item() call with capture_scalar_outputs=False"


def test_only_the_graph_breaks_nobody_asked_for_are_a_warning() -> None:
    # The H200's --adam compiled rung: torch.optim's step wrapper breaks the graph on purpose,
    # and the step still compiled into one graph, captured whole in the CUDA graph.
    optim = CompileCounters(frames=1, graphs=1, graph_breaks=1, graph_break_reasons=(DELIBERATE_BREAK,))
    assert recompile_warnings(optim) == []
    mixed = dataclasses.replace(optim, graph_breaks=3, graph_break_reasons=(DELIBERATE_BREAK, UNSUPPORTED, UNSUPPORTED))
    [warning] = recompile_warnings(mixed)
    assert warning.startswith("2 graph breaks: part of the step runs eagerly between compiled graphs")
    assert f"({UNSUPPORTED}; TORCH_LOGS" in warning and "torch._dynamo.graph_break" not in warning


SKIP = "skipping cudagraphs due to cpu device (primals_1)"


def test_skipped_cuda_graphs_are_a_warning_that_reduce_overhead_ran_without_them() -> None:
    counters = CompileCounters(frames=1, graphs=1, cudagraph_skips=2, cudagraph_skip_reasons=(SKIP, SKIP))
    warnings = recompile_warnings(counters)
    assert warnings == cudagraph_warnings(counters) and len(warnings) == 1
    assert "CUDA graphs were skipped for 2 graphs" in warnings[0]
    assert "reduce-overhead ran those without CUDA graphs" in warnings[0]
    assert warnings[0].count("cpu device") == 1, "one reason, said once"
    assert "logged the reason to stderr" in cudagraph_warnings(CompileCounters(cudagraph_skips=1))[0]
    assert cudagraph_warnings(CompileCounters(frames=1)) == []
    assert "2 CUDA graph skips" in str(counters)


def test_since_counts_only_the_new_cuda_graph_skips() -> None:
    before = CompileCounters(cudagraph_skips=1, cudagraph_skip_reasons=("old",))
    after = CompileCounters(cudagraph_skips=3, cudagraph_skip_reasons=("old", SKIP))
    delta = after.since(before)
    assert delta.cudagraph_skips == 2 and delta.cudagraph_skip_reasons == (SKIP,)


def test_compile_counters_read_cudagraph_skips_and_their_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch._dynamo import utils

    fake: defaultdict[str, Counter[str]] = defaultdict(Counter)
    fake["frames"]["ok"] = 2
    fake["stats"]["unique_graphs"] = 2
    fake["inductor"].update(cudagraph_skips=1, fxgraph_cache_miss=2)
    fake["graph_break"]["Call to `torch._dynamo.graph_break()`\n  Explanation: User-inserted graph break."] = 2
    metrics = [SimpleNamespace(cudagraph_skip_reason=None), SimpleNamespace(cudagraph_skip_reason=SKIP)]
    monkeypatch.setattr(utils, "counters", fake)
    monkeypatch.setattr(utils, "guard_failures", {})
    monkeypatch.setattr(utils, "compilation_time_metrics", {})
    monkeypatch.setattr(utils, "get_compilation_metrics", lambda: metrics)
    read = compile_counters()
    assert (read.frames, read.graphs, read.cache) == (2, 2, "cold")
    assert read.cudagraph_skips == 1 and read.cudagraph_skip_reasons == (SKIP,)
    assert "cpu device" in recompile_warnings(read)[0]
    assert read.graph_breaks == 2 and read.graph_break_reasons == ("Call to `torch._dynamo.graph_break()`",) * 2
    assert len(recompile_warnings(read)) == 1, "torch.optim's deliberate breaks are no warning"
    assert read.since(dataclasses.replace(read, graph_breaks=1, graph_break_reasons=read.graph_break_reasons[:1])
                      ).graph_break_reasons == read.graph_break_reasons[:1]


@pytest.mark.slow
def test_compile_counters_see_the_recompile_for_a_smaller_last_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    before = compile_counters()
    f = torch.compile(lambda x: (x.sin() + 1).sum())
    for batch in (8, 8, 6, 8, 6, 4):  # 6: the ragged last batch; then it is dynamic
        f(torch.randn(batch, 4))
    seen = compile_counters().since(before)
    assert seen.frames == 2 and seen.graphs == 2
    assert seen.recompiles == 1
    assert "expected 8, actual 6" in seen.recompile_reasons[0]
    assert seen.compile_s > 0 and seen.cache == "cold"
    assert "batch of 6 after compiling for 8" in recompile_warnings(seen)[0]
    assert "1 recompile" in str(seen)
