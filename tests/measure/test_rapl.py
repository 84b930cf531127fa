from __future__ import annotations

from pathlib import Path

import pytest

from vaebench.measure.rapl import EnergyMeter, delta_uj, find_zones


def zone(root: Path, name: str, label: str, energy: int | None, max_uj: int = 1_000_000) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "name").write_text(f"{label}\n")
    (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    if energy is None:
        (path / "energy_uj").mkdir()  # reading it fails, as a root-only file does
    else:
        (path / "energy_uj").write_text(f"{energy}\n")
    return path


def set_energy(path: Path, energy: int) -> None:
    (path / "energy_uj").write_text(f"{energy}\n")


def test_delta_allows_one_wrap_around() -> None:
    assert delta_uj(100, 250, 1000) == 150
    assert delta_uj(900, 100, 1000) == 200


def test_only_readable_package_zones_are_used(tmp_path: Path) -> None:
    zone(tmp_path, "intel-rapl:0", "package-0", 10)
    zone(tmp_path, "intel-rapl:0:0", "core", 5)
    zone(tmp_path, "intel-rapl:1", "package-1", None)
    (tmp_path / "intel-rapl").mkdir()  # the control type folder beside the zones
    assert [z.name for z in find_zones(tmp_path)] == ["package-0"]


def test_meter_sums_packages_across_a_wrap(tmp_path: Path) -> None:
    p0 = zone(tmp_path, "intel-rapl:0", "package-0", 900_000)
    p1 = zone(tmp_path, "intel-rapl:1", "package-1", 0)
    meter = EnergyMeter(tmp_path)
    assert meter.available
    meter.start()
    set_energy(p0, 950_000)
    set_energy(p1, 20_000)
    assert meter.sample() == pytest.approx(0.070)
    set_energy(p0, 50_000)  # wrapped past 1_000_000
    assert meter.sample() == pytest.approx(0.170)


def test_unreadable_counters_give_none(tmp_path: Path) -> None:
    zone(tmp_path, "intel-rapl:0", "package-0", None)
    meter = EnergyMeter(tmp_path)
    meter.start()
    assert not meter.available and meter.sample() is None
    missing = EnergyMeter(tmp_path / "nowhere")
    missing.start()
    assert missing.sample() is None


def test_a_counter_that_turns_unreadable_gives_none(tmp_path: Path) -> None:
    p0 = zone(tmp_path, "intel-rapl:0", "package-0", 10)
    meter = EnergyMeter(tmp_path)
    meter.start()
    (p0 / "energy_uj").unlink()
    assert meter.sample() is None
