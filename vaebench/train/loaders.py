"""Input pipelines: three ways to feed the same batches, in the same order, to the model.

- reference: the seed's torchvision MNIST + ToTensor through a DataLoader;
- tensor: images decoded once into one float tensor in host memory, sliced by index;
- device: that tensor resident on the device, sliced there: no host work per step.

All three draw each epoch's order from `epoch_order(samples, seed, epoch)`, so for one
seed they deliver identical batches and their losses are comparable. A rank of a data-parallel
run takes its `Shard` of each global batch of that same order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Protocol

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from ..layout import train_images
from ..result import DataInfo
from ..spec import RunSpec
from .distributed import ONE_PROCESS, Shard
from .lifeline import tie_to_parent

ORDER_SEED_STRIDE = 1_000_003  # keeps (seed, epoch) pairs from sharing a shuffle


def epoch_order(samples: int, seed: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * ORDER_SEED_STRIDE + epoch)
    return torch.randperm(samples, generator=generator)


class EpochSampler(Sampler[int]):
    """Shuffles like the seed's `shuffle=True`, from a seed and an epoch number."""

    def __init__(self, samples: int, seed: int) -> None:
        self.samples = samples
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.samples

    def __iter__(self) -> Iterator[int]:
        return iter(epoch_order(self.samples, self.seed, self.epoch).tolist())


class ShardBatches(Sampler[list[int]]):
    """A rank's batches: its rows of every global batch of the epoch's order (`Shard`)."""

    def __init__(self, samples: int, batch_size: int, seed: int, shard: Shard) -> None:
        self.samples, self.batch_size, self.seed, self.shard = samples, batch_size, seed, shard
        self.epoch = 0

    def __len__(self) -> int:
        return self.shard.steps(self.samples, self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = epoch_order(self.samples, self.seed, self.epoch).tolist()
        for step in range(len(self)):
            begin, end = self.shard.indices(step, self.samples, self.batch_size)
            yield order[begin:end]


def collate_or_empty(batch: list[object]) -> object:
    """default_collate, and an empty batch for a rank left no rows of the ragged last step."""
    if not batch:
        return torch.empty(0, 1, 28, 28), torch.empty(0, dtype=torch.long)
    return default_collate(batch)


class BatchSource(Protocol):
    """Yields the batches of one epoch; `on_device` tells the loop whether to copy them."""

    on_device: bool

    def epoch(self, epoch: int) -> Iterator[torch.Tensor]: ...

    def __len__(self) -> int: ...


class _Wrapped(Dataset[object]):
    """Index i of an epoch of `samples` maps to image i mod the dataset's size."""

    def __init__(self, base: Dataset[object], samples: int, size: int) -> None:
        self.base, self.samples, self.size = base, samples, size

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, index: int) -> object:
        return self.base[index % self.size]


def _tie_worker(worker_id: int) -> None:
    tie_to_parent(os.getppid())  # the training process, alive: it is starting this worker


class ReferenceSource:
    on_device = False

    def __init__(self, spec: RunSpec, data: DataInfo, shard: Shard = ONE_PROCESS) -> None:
        from torchvision import datasets, transforms

        base = datasets.MNIST(root=data.path, train=True, download=False, transform=transforms.ToTensor())
        dataset = base if len(base) == spec.samples else _Wrapped(base, spec.samples, len(base))
        self.sampler: EpochSampler | ShardBatches
        # DataLoader takes a batch sampler only with its batch size left at 1 and no sampler.
        batch_size, sampler, batch_sampler, collate = 1, None, None, None
        if shard.distributed:
            self.sampler = batch_sampler = ShardBatches(spec.samples, spec.batch_size, spec.seed, shard)
            collate = collate_or_empty
        else:  # the seed's own batching
            self.sampler = sampler = EpochSampler(spec.samples, spec.seed)
            batch_size = spec.batch_size
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            batch_sampler=batch_sampler,
            collate_fn=collate,
            num_workers=spec.workers,
            pin_memory=spec.pin_memory,
            # A private generator keeps the loader's base-seed draw off the global RNG,
            # which the model's sampling noise uses.
            generator=torch.Generator().manual_seed(spec.seed),
            persistent_workers=spec.workers > 0,
            # A worker dies with this process, as this process dies with vaebench.
            worker_init_fn=_tie_worker if spec.workers > 0 else None,
        )

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, epoch: int) -> Iterator[torch.Tensor]:
        self.sampler.epoch = epoch
        for images, _labels in self.loader:
            yield images


class TensorSource:
    on_device = False

    def __init__(
        self, spec: RunSpec, data: DataInfo, device: torch.device | None = None, shard: Shard = ONE_PROCESS
    ) -> None:
        images = decoded_images(data)
        self.images = images.to(device) if device is not None else images
        self.samples, self.batch_size, self.seed = spec.samples, spec.batch_size, spec.seed
        self.pin = spec.pin_memory and device is None
        self.shard = shard

    def __len__(self) -> int:
        return self.shard.steps(self.samples, self.batch_size)

    def epoch(self, epoch: int) -> Iterator[torch.Tensor]:
        order = epoch_order(self.samples, self.seed, epoch) % len(self.images)
        order = order.to(self.images.device)
        for step in range(len(self)):
            begin, end = self.shard.indices(step, self.samples, self.batch_size)
            batch = self.images.index_select(0, order[begin:end])
            yield batch.pin_memory() if self.pin else batch


class DeviceSource(TensorSource):
    on_device = True

    def __init__(self, spec: RunSpec, data: DataInfo, device: torch.device, shard: Shard = ONE_PROCESS) -> None:
        super().__init__(spec, data, device, shard)


def decoded_images(data: DataInfo) -> torch.Tensor:
    """All images as float (N, 1, 28, 28) in [0, 1], converted exactly as ToTensor does."""
    # Read without torchvision's MNIST class: about 0.2 s less in each run's set-up.
    raw = torch.from_numpy(train_images(data.path))
    return raw.unsqueeze(1).to(dtype=torch.get_default_dtype()).div(255)


def make_source(spec: RunSpec, data: DataInfo, device: torch.device, shard: Shard = ONE_PROCESS) -> BatchSource:
    if spec.loader == "reference":
        return ReferenceSource(spec, data, shard)
    if spec.loader == "tensor":
        return TensorSource(spec, data, shard=shard)
    if spec.loader == "device":
        return DeviceSource(spec, data, device, shard)
    raise ValueError(f"unknown loader {spec.loader!r}")
