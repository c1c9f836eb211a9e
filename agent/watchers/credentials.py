"""Device credentials from a JSON file, shared by the camera and recorder watchers.

The file maps a device MAC (any notation) or ``"*"`` (every device) to ``{"username", "password"}``.
It holds passwords, so it is refused when group or others may read it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from protocol.inventory import normalise_mac

Credentials = dict[str, tuple[str, str]]


def read_credentials(path: Path, option: str) -> Credentials:
    """``{mac or "*": (username, password)}``; ValueError naming ``option`` when unreadable or too open."""
    try:
        mode = path.stat().st_mode
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"option {option}: {exc}") from exc
    if mode & 0o077 and os.name == "posix":
        raise ValueError(f"option {option}: {path} is readable by others (chmod 600)")
    try:
        return {("*" if key == "*" else normalise_mac(key)): (str(e["username"]), str(e["password"]))
                for key, e in doc.items()}
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"option {option}: bad entry: {exc}") from exc


def lookup(creds: Credentials, mac: str, default: tuple[str, str]) -> tuple[str, str]:
    """The device's own entry, else the ``"*"`` entry, else ``default``."""
    return creds.get(mac) or creds.get("*") or default
