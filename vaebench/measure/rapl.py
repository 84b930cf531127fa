"""CPU package energy from the RAPL counters in /sys/class/powercap, where readable.

Each top-level zone `intel-rapl:N` is one CPU package (AMD's kernels use the same names);
its subzones (`intel-rapl:N:M`: cores, uncore, DRAM) are parts of it or outside it and are
not added, so the total is the packages' energy. Since Linux 5.10 `energy_uj` is readable by
root only: unreadable counters give None, never an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

RAPL_ROOT = Path("/sys/class/powercap")
PACKAGE_ZONE = re.compile(r"^intel-rapl:\d+$")


@dataclass(frozen=True)
class RaplZone:
    name: str  # e.g. package-0
    path: Path
    max_uj: int  # the counter wraps to zero past this


def read_uj(zone: RaplZone) -> int | None:
    try:
        return int((zone.path / "energy_uj").read_text().strip())
    except (OSError, ValueError):
        return None


def find_zones(root: str | Path = RAPL_ROOT) -> list[RaplZone]:
    """The package zones under `root` whose counter can be read now."""
    root = Path(root)
    if not root.is_dir():
        return []
    zones = []
    for path in sorted(root.iterdir()):
        if not PACKAGE_ZONE.match(path.name):
            continue
        try:
            name = (path / "name").read_text().strip()
            max_uj = int((path / "max_energy_range_uj").read_text().strip())
        except (OSError, ValueError):
            continue
        zone = RaplZone(name, path, max_uj)
        if read_uj(zone) is not None:
            zones.append(zone)
    return zones


def delta_uj(before: int, after: int, max_uj: int) -> int:
    """Energy between two readings, allowing for at most one wrap-around between them."""
    return after - before if after >= before else after + max_uj - before


class EnergyMeter:
    """Joules used by the CPU packages since `start()`.

    A counter wraps every few minutes to hours depending on load; call `sample()` more
    often than that (once per epoch is plenty for this model) so no wrap is missed.
    """

    def __init__(self, root: str | Path = RAPL_ROOT) -> None:
        self.zones = find_zones(root)
        self._last: list[int] = []
        self._total_uj = 0

    @property
    def available(self) -> bool:
        return bool(self.zones)

    def start(self) -> None:
        readings = [read_uj(z) for z in self.zones]
        self._last = [r for r in readings if r is not None]
        if len(self._last) != len(self.zones):
            self.zones = []  # a counter became unreadable: report nothing rather than part
        self._total_uj = 0

    def sample(self) -> float | None:
        """Joules since `start()`; None when no counter is readable."""
        if not self.zones or len(self._last) != len(self.zones):
            return None
        for i, zone in enumerate(self.zones):
            now = read_uj(zone)
            if now is None:
                return None
            self._total_uj += delta_uj(self._last[i], now, zone.max_uj)
            self._last[i] = now
        return self._total_uj / 1e6
