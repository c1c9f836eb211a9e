"""Helpers shared by the agent's and the collector's configuration loaders."""

from __future__ import annotations

from pydantic import ValidationError


def describe(exc: ValidationError) -> str:
    """One clause per bad option: ``option a.b: what is wrong``."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = "unknown option (check the spelling)" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"option {where}: {msg}")
    return "; ".join(parts)
