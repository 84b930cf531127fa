"""torch.compile accounting: compile time, graphs, recompilations, cache state, payback.

Dynamo keeps process-wide counters, so a reading covers everything compiled in this process
so far; `CompileCounters.since` takes the difference of two readings. The names read here
(`counters`, `guard_failures`, `compilation_time_metrics`, `get_compilation_metrics`) are
torch internals: a missing one reads as zero or NaN rather than failing the run. torch is
imported inside functions.

reduce-overhead asks inductor for CUDA graphs, but inductor skips them for a graph it
cannot capture (a CPU tensor, a mutated input, dynamic shapes it will not record) and runs
that graph as plain kernels: `cudagraph_skips` counts those, so a run that ran without its
graphs is not reported as reduce-overhead's result.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .._format import counted

# Compile-time entries of dynamo's timing table: the forward (dynamo tracing, AOT autograd
# and inductor) runs at the first call, the backward graph is compiled at the first backward.
COMPILE_TIMERS = ("_compile.compile_inner", "compile_fx.<locals>.bw_compiler")
BATCH_MISMATCH = re.compile(r"size mismatch at index 0\. expected (\d+), actual (\d+)")
# A break someone wrote on purpose: torch.optim's step wrapper breaks the graph before and after
# every compiled optimizer step (issue pytorch#104053), and vaebench's own code has none.
DELIBERATE_BREAK = "Call to `torch._dynamo.graph_break()`"


@dataclass(frozen=True)
class CompileCounters:
    frames: int = 0  # Python frames dynamo compiled, recompilations included
    graphs: int = 0  # FX graphs handed to the backend
    graph_breaks: int = 0
    graph_break_reasons: tuple[str, ...] = ()  # the first line of dynamo's reason, one per break
    recompile_reasons: tuple[str, ...] = ()  # the guard that failed, one per recompilation
    compile_s: float = 0.0  # in-process compile time, forward and backward
    cache_hits: int = 0  # inductor FX-graph and AOT-autograd cache hits
    cache_misses: int = 0
    cudagraph_skips: int = 0  # graphs that were to run as CUDA graphs and ran without them
    cudagraph_skip_reasons: tuple[str, ...] = ()  # "skipping cudagraphs due to ...", where torch kept one

    @property
    def recompiles(self) -> int:
        return len(self.recompile_reasons)

    @property
    def cache(self) -> str:
        """warm (every graph came from the on-disk cache), cold, partly warm, or off."""
        if self.cache_hits and not self.cache_misses:
            return "warm"
        if self.cache_misses and not self.cache_hits:
            return "cold"
        if self.cache_hits and self.cache_misses:
            return "partly warm"
        return "off"

    def since(self, earlier: CompileCounters) -> CompileCounters:
        return CompileCounters(
            frames=self.frames - earlier.frames,
            graphs=self.graphs - earlier.graphs,
            graph_breaks=self.graph_breaks - earlier.graph_breaks,
            graph_break_reasons=_new_reasons(self.graph_break_reasons, earlier.graph_break_reasons),
            recompile_reasons=_new_reasons(self.recompile_reasons, earlier.recompile_reasons),
            compile_s=self.compile_s - earlier.compile_s,
            cache_hits=self.cache_hits - earlier.cache_hits,
            cache_misses=self.cache_misses - earlier.cache_misses,
            cudagraph_skips=self.cudagraph_skips - earlier.cudagraph_skips,
            cudagraph_skip_reasons=_new_reasons(self.cudagraph_skip_reasons, earlier.cudagraph_skip_reasons),
        )

    def __str__(self) -> str:
        skips = f", {counted(self.cudagraph_skips, 'CUDA graph skip')}" if self.cudagraph_skips else ""
        return (
            f"compiled {counted(self.frames, 'frame')} into {counted(self.graphs, 'graph')} "
            f"in {self.compile_s:.1f} s, {counted(self.graph_breaks, 'graph break')}, "
            f"{counted(self.recompiles, 'recompile')}, {self.cache} cache{skips}"
        )


def _new_reasons(now: tuple[str, ...], before: tuple[str, ...]) -> tuple[str, ...]:
    # Reasons are grouped by code object, so a new one may land in the middle of the list.
    left = Counter(before)
    new = []
    for reason in now:
        if left[reason]:
            left[reason] -= 1
        else:
            new.append(reason)
    return tuple(new)


def compile_counters() -> CompileCounters:
    """Read dynamo's process-wide counters now."""
    from torch._dynamo import utils

    counters: Any = utils.counters
    timings: dict[str, list[float]] = getattr(utils, "compilation_time_metrics", {})
    failures: dict[Any, list[Any]] = getattr(utils, "guard_failures", {})
    inductor, aot = counters["inductor"], counters["aot_autograd"]
    metrics: list[Any] = getattr(utils, "get_compilation_metrics", list)()
    return CompileCounters(
        frames=int(counters["frames"]["ok"]),
        graphs=int(counters["stats"]["unique_graphs"]),
        graph_breaks=int(sum(counters["graph_break"].values())),
        graph_break_reasons=tuple(
            str(reason).strip().splitlines()[0] for reason, n in counters["graph_break"].items() for _ in range(n)
        ),
        recompile_reasons=tuple(str(r) for reasons in failures.values() for r in reasons),
        compile_s=float(sum(sum(timings.get(name, ())) for name in COMPILE_TIMERS)),
        cache_hits=int(inductor["fxgraph_cache_hit"] + aot["autograd_cache_hit"]),
        cache_misses=int(inductor["fxgraph_cache_miss"] + aot["autograd_cache_miss"]),
        cudagraph_skips=int(inductor["cudagraph_skips"]),
        # Compilation metrics keep the last skip reason of each compile (the last 64 compiles).
        cudagraph_skip_reasons=tuple(
            str(r) for m in metrics if (r := getattr(m, "cudagraph_skip_reason", None))
        ),
    )


def recompile_warnings(counters: CompileCounters) -> list[str]:
    """One sentence per recompilation, graph break or skipped CUDA graph, naming its cause
    and its fix."""
    warnings = cudagraph_warnings(counters)
    for reason in counters.recompile_reasons:
        batch = BATCH_MISMATCH.search(reason)
        if batch:
            expected, actual = batch.groups()
            warnings.append(
                f"recompiled for a batch of {actual} after compiling for {expected}: compiled with "
                "static shapes, each batch size gets a graph of its own (vaebench runs an epoch's "
                "ragged last batch eagerly for this reason); torch._dynamo.mark_dynamic(x, 0) "
                f"trades them for one dynamic graph ({reason})"
            )
        else:
            warnings.append(f"unexpected recompile: {reason}")
    unplanned = [r for r in counters.graph_break_reasons if not r.startswith(DELIBERATE_BREAK)]
    breaks = counters.graph_breaks - (len(counters.graph_break_reasons) - len(unplanned))
    if breaks > 0:
        why = "; ".join(dict.fromkeys(unplanned))
        warnings.append(
            f"{counted(breaks, 'graph break')}: part of the step runs eagerly between "
            f"compiled graphs ({why + '; ' if why else ''}TORCH_LOGS=graph_breaks shows where)"
        )
    return warnings


def cudagraph_warnings(counters: CompileCounters) -> list[str]:
    """The sentence for CUDA graphs that were skipped. Inductor counts a skip only where CUDA
    graphs were asked for (reduce-overhead), so any skip means that mode ran without them."""
    if not counters.cudagraph_skips:
        return []
    why = "; ".join(dict.fromkeys(counters.cudagraph_skip_reasons)) or "torch logged the reason to stderr"
    return [
        f"CUDA graphs were skipped for {counted(counters.cudagraph_skips, 'graph')} ({why}): reduce-overhead "
        "ran those without CUDA graphs, so its times are not CUDA-graph times "
        "(TORCH_LOGS=cudagraphs shows each skip)"
    ]


def payback_steps(compile_s: float, eager_step_ms: float, compiled_step_ms: float) -> float:
    """Steps of the compiled model it takes to win back the compile time; inf when the
    compiled step is not faster, NaN when a figure is missing."""
    values = (compile_s, eager_step_ms, compiled_step_ms)
    if any(not math.isfinite(v) for v in values):
        return math.nan
    saved_ms = eager_step_ms - compiled_step_ms
    if saved_ms <= 0:
        return math.inf
    return float(math.ceil(compile_s * 1e3 / saved_ms))
