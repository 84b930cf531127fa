"""The data sources' files: checked before a run starts, and known by their content."""

from __future__ import annotations

import errno
import gzip
import os
import stat
from pathlib import Path

import numpy as np
import pytest

import vaebench.measure.data as data_module
from vaebench.cli import main
from vaebench.layout import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, raw_folder, write_layout
from vaebench.measure.data import DataUnavailable, prepare


def fake_mnist(root: Path, images: int, seed: int = 0, side: int = 28) -> Path:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(images, side, side), dtype=np.uint8)
    labels = rng.integers(0, 10, size=images, dtype=np.uint8)
    write_layout(root, pixels, labels, pixels[:10], labels[:10])
    return root


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_module, "mnist_reachable", lambda *a, **k: False)


def test_a_folder_of_mnist_is_known_by_its_images_not_its_name(tmp_path: Path) -> None:
    small = prepare("mnist", fake_mnist(tmp_path / "small", 1000), 60_000)
    assert (small.source, small.images, small.repeat) == ("mnist", 1000, 60.0)
    other = prepare("mnist", fake_mnist(tmp_path / "other", 1000, seed=1), 60_000)
    copy = prepare("mnist", fake_mnist(tmp_path / "copy", 1000), 60_000)
    assert len(small.digest) == 12 and small.digest != other.digest and small.digest == copy.digest


def test_a_source_larger_than_an_epoch_is_noted_with_the_images_never_seen(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = fake_mnist(tmp_path / "d", 700)
    assert prepare("mnist", root, 600).images == 700
    err = capsys.readouterr().err
    assert "mnist holds 700 images" in err and "100 are never seen; --samples 700 uses them all" in err, err
    prepare("mnist", root, 700)
    prepare("mnist", root, 1400)
    assert capsys.readouterr().err == ""  # every image seen: nothing to say


def test_a_dry_run_refuses_missing_mnist_as_the_run_would(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailable, match="MNIST is not in"):
        prepare("mnist", tmp_path, 60_000, write=False)
    assert not (tmp_path / "MNIST").exists()  # no empty folders left from a download attempt


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _magic(path: Path, magic: bytes = b"\x00\x00\x0d\x03") -> None:
    path.write_bytes(magic + path.read_bytes()[4:])


def _labels_as_images(root: Path) -> None:
    raw = raw_folder(root)
    (raw / TRAIN_IMAGES).write_bytes((raw / TRAIN_LABELS).read_bytes())


@pytest.mark.parametrize(("spoil", "words"), [
    (lambda root: _cut(raw_folder(root) / TRAIN_IMAGES), "bytes of data for shape"),
    (lambda root: _magic(raw_folder(root) / TRAIN_IMAGES), "not an unsigned-byte idx file"),
    (lambda root: _magic(raw_folder(root) / TRAIN_IMAGES, b"\x00\x00\x08\x04"),
     "magic number 2052, not MNIST's 2051 for images"),
    (_labels_as_images, "magic number 2049, not MNIST's 2051 for images: a file of labels"),
    (lambda root: _magic(raw_folder(root) / TRAIN_LABELS, b"\x00\x00\x08\x03"),
     "magic number 2051, not MNIST's 2049 for labels: a file of images"),
    (lambda root: (raw_folder(root) / TRAIN_LABELS).write_bytes(b"\x00\x00"), "too short for an idx file"),
    (lambda root: fake_mnist(root, 100, side=32), "not MNIST's 28x28"),
    (lambda root: write_layout(root, np.zeros((100, 28, 28), np.uint8), np.zeros(7, np.uint8),
                               np.zeros((1, 28, 28), np.uint8), np.zeros(1, np.uint8)), "7 labels for 100 images"),
])
def test_a_spoiled_mnist_file_is_refused_in_one_line_before_any_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spoil, words: str  # type: ignore[no-untyped-def]
) -> None:
    root = fake_mnist(tmp_path / "d", 100)
    spoil(root)
    out = tmp_path / "out"
    assert main(["run", "--data", "mnist", "--data-dir", str(root), "--steps", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1, err
    assert not (out / "runs.jsonl").exists()


def test_missing_files_and_a_folder_one_level_too_deep_are_named(tmp_path: Path) -> None:
    root = fake_mnist(tmp_path / "d", 100)
    (raw_folder(root) / TEST_IMAGES).unlink()
    with pytest.raises(DataUnavailable, match=f"lacks {TEST_IMAGES}"):
        prepare("mnist", root, 100)
    whole = fake_mnist(tmp_path / "e", 100)
    with pytest.raises(DataUnavailable, match=f"--data-dir {whole}\\?"):
        prepare("mnist", whole / "MNIST", 100)
    with pytest.raises(DataUnavailable, match=f"--data-dir {whole}\\?"):  # two levels too deep
        prepare("mnist", raw_folder(whole), 100)


def test_mnist_without_its_test_files_is_refused_saying_why_they_are_needed(tmp_path: Path) -> None:
    root = fake_mnist(tmp_path / "d", 100)
    _train_only(root)
    with pytest.raises(DataUnavailable, match=r"reads only the train files, but .* torchvision's MNIST, the seed's "
                       r"loader \(--loader reference\), which checks for all four: copy in MNIST's t10k files"):
        prepare("mnist", root, 100)


def test_gzipped_downloads_are_named_with_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = raw_folder(tmp_path)
    raw.mkdir(parents=True)
    (raw / f"{TRAIN_IMAGES}.gz").write_bytes(b"")
    with pytest.raises(DataUnavailable, match=r"only the \.gz downloads: gunzip"):
        prepare("mnist", tmp_path, 100)
    with pytest.raises(DataUnavailable, match=r"only the \.gz downloads: gunzip"):
        prepare("auto", tmp_path, 100)  # a --data-dir given: auto says what to do, as mnist does


def _gzip_all(root: Path) -> None:
    for path in raw_folder(root).iterdir():
        path.with_name(f"{path.name}.gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()


def _train_only(root: Path) -> None:
    (raw_folder(root) / TEST_IMAGES).unlink()
    (raw_folder(root) / TEST_LABELS).unlink()


@pytest.mark.parametrize(("folder", "spoil", "words"), [
    (lambda root: root / "MNIST", None, "--data-dir {root}?"),
    (raw_folder, None, "--data-dir {root}?"),
    (lambda root: root, _gzip_all, "gunzip {raw}/*.gz"),
    (lambda root: root, _train_only, f"{{raw}} lacks {TEST_IMAGES}"),
])
@pytest.mark.parametrize("named_by", ["--data-dir", "VAEBENCH_DATA"])
def test_auto_refuses_mnist_it_cannot_use_in_a_named_folder_as_mnist_does(  # type: ignore[no-untyped-def]
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    folder, spoil, words: str, named_by: str,
) -> None:
    root = fake_mnist(tmp_path / "d", 100)
    if spoil:
        spoil(root)
    args = ["--steps", "2", "--out", str(tmp_path / "out")]
    if named_by == "--data-dir":
        args += ["--data-dir", str(folder(root))]
    else:
        monkeypatch.setenv("VAEBENCH_DATA", str(folder(root)))
    assert main(["run", *args]) == 2
    err = capsys.readouterr().err
    assert words.format(root=root, raw=raw_folder(root)) in err and err.count("\n") == 1, err
    assert main(["run", "--data", "mnist", *args]) == 2
    assert capsys.readouterr().err == err  # the same refusal, with the same hint
    assert not list(tmp_path.rglob("embedded-5k-*")) and not (tmp_path / "out" / "runs.jsonl").exists()


def test_auto_notes_its_fallback_in_a_folder_named_by_the_environment_as_by_the_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VAEBENCH_DATA", str(tmp_path / "env"))
    assert prepare("auto", None, 100).source == "embedded-5k"
    assert f"found no MNIST in {raw_folder(tmp_path / 'env')}" in capsys.readouterr().err
    assert prepare("auto", tmp_path / "option", 100).source == "embedded-5k"
    assert f"found no MNIST in {raw_folder(tmp_path / 'option')}" in capsys.readouterr().err


def test_a_read_only_mnist_folder_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = fake_mnist(tmp_path / "d", 100)

    def unwritable(data_dir: object) -> str:
        return f"data folder {data_dir} cannot be written: Read-only file system"

    monkeypatch.setattr(data_module, "check_writable", unwritable)
    assert prepare("mnist", root, 100).images == 100
    with pytest.raises(DataUnavailable, match="cannot be written: Read-only"):
        prepare("synthetic", root, 100)  # a source that must write its files still needs to


def test_a_full_disk_is_one_line_and_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(DataUnavailable, match="could not be written: No space left on device"):
        prepare("synthetic", tmp_path, 100)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_data_files_are_readable_by_others_under_the_usual_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        info = prepare("synthetic", tmp_path, 100)
    finally:
        os.umask(old)
    mode = (raw_folder(info.path) / TRAIN_IMAGES).stat().st_mode
    assert mode & stat.S_IROTH and mode & stat.S_IRGRP


def test_a_relative_data_dir_is_recorded_as_an_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_mnist(tmp_path / "d", 100)
    monkeypatch.chdir(tmp_path)
    info = prepare("mnist", "d", 100)
    assert info.path == str(tmp_path / "d")  # the record means the same folder read from anywhere


def test_the_default_data_folder_follows_the_environment_the_help_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("VAEBENCH_DATA", raising=False)
    monkeypatch.delenv("VAEBENCH_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_module.default_data_dir() == tmp_path / "xdg" / "vaebench" / "data"
    monkeypatch.setenv("VAEBENCH_CACHE", str(tmp_path / "cache"))
    assert data_module.default_data_dir() == tmp_path / "cache" / "data"
    monkeypatch.setenv("VAEBENCH_DATA", str(tmp_path / "mine"))
    assert data_module.default_data_dir() == tmp_path / "mine"
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for name in ("$VAEBENCH_DATA", "$VAEBENCH_CACHE", "$XDG_CACHE_HOME"):
        assert name in help_text


def test_a_data_folder_that_cannot_be_made_says_how_to_name_another(tmp_path: Path) -> None:
    (tmp_path / "home").write_text("")  # a HOME (or a cache) under a file: nothing can be made there
    problem = data_module.check_writable(tmp_path / "home" / "data")
    assert problem is not None and problem.startswith(f"data folder {tmp_path / 'home' / 'data'} cannot be written")
    assert "point --data-dir or $VAEBENCH_DATA at one that can be" in problem
