"""MAC vendor (OUI) lookup from the IEEE registry that Debian's ``ieee-data`` package installs."""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

from protocol.inventory import locally_administered

OUI_CSV = Path("/usr/share/ieee-data/oui.csv")


@lru_cache(maxsize=1)
def _table(path: Path = OUI_CSV) -> dict[str, str]:
    """Assignment (6 hex digits) → organisation; empty when the registry is not installed."""
    try:
        with path.open(encoding="utf-8", errors="replace", newline="") as fh:
            return {row[1].upper(): row[2].strip() for row in csv.reader(fh) if len(row) > 2 and len(row[1]) == 6}
    except OSError:
        return {}


def vendor(mac: str) -> str:
    """Organisation owning ``mac``'s OUI, "" when unknown or when the MAC is locally administered."""
    if locally_administered(mac):
        return ""
    return _table().get(mac.replace(":", "")[:6].upper(), "")
