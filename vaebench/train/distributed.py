"""Data-parallel training across the ranks torchrun started: DDP, gloo on CPUs, NCCL on GPUs.

The rule that makes N ranks comparable with one process: every rank trains on its own rows of
the same shuffled order (`Shard`), draws the reparameterization noise of the whole global batch
and keeps its rows (so each sample meets the noise one process would give it), and the
gradient buckets are *summed* over ranks rather than averaged. The seed's loss is summed over
the batch, so the summed gradient of N ranks x batch B is the gradient one process computes on
batch N x B, and Adam makes the same update. The communication hook that sums also times each
all-reduce, which is how the record knows what share of a step the ranks spent talking.
"""

from __future__ import annotations

import gc
import math
import os
import statistics
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from ..rules import steady

Clock = Callable[[], float]


@dataclass(frozen=True)
class Shard:
    """Rank `rank` of `world`: step k's global batch is samples [k*world*B, (k+1)*world*B) of the
    epoch's order, and this rank takes rows [rank*B, (rank+1)*B) of it. The union over ranks is
    exactly the batch one process draws at batch world*B; the last, ragged global batch leaves the
    higher ranks fewer rows, possibly none."""

    rank: int = 0
    world: int = 1

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def steps(self, samples: int, batch_size: int) -> int:
        return -(-samples // (batch_size * self.world))

    def global_rows(self, step: int, samples: int, batch_size: int) -> tuple[int, int]:
        """(first sample in the epoch's order, number of samples) of global batch `step`."""
        start = step * batch_size * self.world
        return start, max(0, min(batch_size * self.world, samples - start))

    def rows(self, step: int, samples: int, batch_size: int) -> tuple[int, int]:
        """(this rank's offset within global batch `step`, its number of rows)."""
        _, size = self.global_rows(step, samples, batch_size)
        offset = min(self.rank * batch_size, size)
        return offset, min(batch_size, size - offset)

    def noise_rows(self, step: int, samples: int, batch_size: int) -> tuple[int, int]:
        """(rows of global batch `step`, this rank's offset in it): what `VAE.forward` needs to draw
        the noise one process would."""
        return self.global_rows(step, samples, batch_size)[1], self.rows(step, samples, batch_size)[0]

    def indices(self, step: int, samples: int, batch_size: int) -> tuple[int, int]:
        """[begin, end) of this rank's rows of step `step` in the epoch's order."""
        start, _ = self.global_rows(step, samples, batch_size)
        offset, count = self.rows(step, samples, batch_size)
        return start + offset, start + offset + count


ONE_PROCESS = Shard()


def shard_from_env(env: dict[str, str] | os._Environ[str] = os.environ) -> Shard:
    """The rank torchrun gave this process (RANK, WORLD_SIZE); one process without them."""
    return Shard(rank=int(env.get("RANK", 0)), world=int(env.get("WORLD_SIZE", 1)))


def local_rank(env: dict[str, str] | os._Environ[str] = os.environ) -> int:
    return int(env.get("LOCAL_RANK", 0))


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def start(shard: Shard, device: torch.device) -> None:
    """Join the process group (torchrun's environment gives the rendezvous)."""
    if not dist.is_initialized():
        dist.init_process_group(backend_for(device))
    if dist.get_world_size() != shard.world or dist.get_rank() != shard.rank:
        raise RuntimeError(f"rank {dist.get_rank()}/{dist.get_world_size()} does not match the "
                           f"environment's {shard.rank}/{shard.world}")


def stop() -> None:
    """Leave the process group. The DDP wrapper must be gone first: a group destroyed under a live
    DDP with a communication hook aborts the process at exit (torch 2.x), and the wrapper sits in
    reference cycles that only the collector frees."""
    if dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


@dataclass
class AllreduceTimer:
    """DDP communication hook: sums each gradient bucket over the ranks and times the all-reduce.

    On the CPU (gloo) a span runs from the bucket's launch to its reduction's completion, read
    with the host clock in the completion callback. On CUDA (NCCL) the future completes on the
    stream, so the span is two CUDA events around the collective on the stream, resolved once
    training is over. A step's all-reduce time is the sum of its buckets' spans (this model's
    2.6 MB of gradients fit one 25 MB bucket, so one span per step).
    """

    cuda: bool = False
    clock: Clock = time.perf_counter
    steps: list[list[Any]] = field(default_factory=list)  # per step: floats (s) or CUDA event pairs
    _current: list[Any] = field(default_factory=list)

    def __call__(self, state: object, bucket: Any) -> torch.futures.Future[torch.Tensor]:  # a dist.GradBucket
        tensor = bucket.buffer()
        if self.cuda:
            begin = torch.cuda.Event(enable_timing=True)
            begin.record()
        else:
            launched = self.clock()
        future = dist.all_reduce(tensor, op=dist.ReduceOp.SUM, async_op=True).get_future()

        def reduced(done: torch.futures.Future[list[torch.Tensor]]) -> torch.Tensor:
            if self.cuda:
                end = torch.cuda.Event(enable_timing=True)
                end.record()  # on the stream the collective completes on
                self._current.append((begin, end))
            else:
                self._current.append(self.clock() - launched)
            return done.value()[0]

        return future.then(reduced)

    def end_step(self) -> None:
        self.steps.append(self._current)
        self._current = []

    def milliseconds(self) -> list[float]:
        """Each step's all-reduce time; call once training is over (CUDA: it synchronizes once)."""
        if self.cuda:
            torch.cuda.synchronize()
            return [sum(a.elapsed_time(b) for a, b in spans) for spans in self.steps]
        return [1e3 * sum(spans) for spans in self.steps]


def wrap(model: torch.nn.Module, device: torch.device) -> tuple[torch.nn.Module, AllreduceTimer]:
    """The model inside DistributedDataParallel, gradients summed and timed by the hook."""
    from torch.nn.parallel import DistributedDataParallel

    index = device.index if device.index is not None else torch.cuda.current_device() if device.type == "cuda" else 0
    ddp = DistributedDataParallel(model, device_ids=[index] if device.type == "cuda" else None)
    timer = AllreduceTimer(cuda=device.type == "cuda")
    # A lambda: DDP checks a hook's annotations against the classes, and this module's are strings.
    ddp.register_comm_hook(None, lambda state, bucket: timer(state, bucket))
    return ddp, timer


def sum_over_ranks(*values: float, device: torch.device) -> list[float]:
    """Every rank's values added up, in float64 like the host's Python floats."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return [float(v) for v in tensor.tolist()]  # sync point: once per epoch


def gather(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order (outside the measured window)."""
    found: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(found, value)
    return found


def medians(per_rank: list[list[float]], warmup: int, excluded: Collection[int] = ()) -> list[float]:
    """Each rank's median over its steady steps (`rules.steady`)."""
    steadies = [steady(values, warmup, excluded) for values in per_rank]
    return [statistics.median(values) if values else math.nan for values in steadies]
