"""Where regressions hide: one training step per loader, one loader batch, the loss, a short epoch.

Smoke mode (the default) runs each body once; `pytest benchmarks/ --benchmark-enable` times
them. All on the CPU with one thread and tiny synthetic data, so numbers from two commits on
one machine are comparable (benchmarks/README.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture

from vaebench.result import DataInfo
from vaebench.spec import LOADERS, RunSpec
from vaebench.train.loaders import BatchSource, make_source
from vaebench.train.loop import build_on, train
from vaebench.train.model import vae_loss

CPU = torch.device("cpu")
Tiny = tuple[RunSpec, DataInfo]


def endless(source: BatchSource) -> Iterator[torch.Tensor]:
    """Batches forever, epoch after epoch, as the loop draws them."""
    epoch = 0
    while True:
        yield from source.epoch(epoch)
        epoch += 1


def training_step(spec: RunSpec, data: DataInfo) -> Callable[[], float]:
    """One step as the measured loop takes it, through the loop's own `Workload`: batch,
    zero_grad, copy, forward, loss, backward, `loss.item()`, optimizer step."""
    source = make_source(spec, data, CPU)
    batches = endless(source)
    work = build_on(spec, source)
    work.model.train()

    def step() -> float:
        x = next(batches)
        work.optimizer.zero_grad()
        if not source.on_device:
            x = x.to(CPU)
        value = work.step(x).item()  # the loop's sync point, kept so the step matches it
        work.update()
        return value

    step()  # first touch: allocator, lazy init
    return step


@pytest.mark.benchmark(group="step")
@pytest.mark.parametrize("loader", LOADERS)
def test_training_step(benchmark: BenchmarkFixture, tiny: Tiny, loader: str) -> None:
    spec, data = tiny
    step = training_step(dataclasses.replace(spec, loader=loader), data)
    loss = benchmark(step)
    assert 0 < loss / spec.batch_size < 1000


@pytest.mark.benchmark(group="loader")
@pytest.mark.parametrize("loader", LOADERS)
def test_loader_batch(benchmark: BenchmarkFixture, tiny: Tiny, loader: str) -> None:
    spec, data = tiny
    batches = endless(make_source(dataclasses.replace(spec, loader=loader), data, CPU))
    batch = benchmark(lambda: next(batches))
    assert batch.shape[1:] == (1, 28, 28) and batch.dtype == torch.float32


@pytest.mark.benchmark(group="loss")
@pytest.mark.parametrize("batch_size", [128, 512])
def test_loss(benchmark: BenchmarkFixture, batch_size: int) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(batch_size, 1, 28, 28, generator=generator)
    recon = torch.rand(batch_size, 784, generator=generator).clamp(1e-4, 1 - 1e-4)
    mu, logvar = torch.randn(batch_size, 20, generator=generator), torch.randn(batch_size, 20, generator=generator)
    loss = benchmark(vae_loss, recon, x, mu, logvar)
    assert torch.isfinite(loss)


@pytest.mark.benchmark(group="epoch")
@pytest.mark.parametrize("loader", ["reference", "tensor"])
def test_short_epoch(benchmark: BenchmarkFixture, tiny: Tiny, loader: str) -> None:
    """The whole measured loop on 8 steps: source and model built, one epoch trained."""
    spec, data = tiny
    spec = dataclasses.replace(spec, loader=loader)
    outcome = benchmark(train, spec, data)
    assert outcome.metrics.steps_done == spec.samples // spec.batch_size
