"""Shared by the agent's and the collector's configuration loaders: one TOML file, validated by a
pydantic model that forbids unknown keys, with errors naming the file and the option."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file, the option and the fix."""


def load_toml(path: Path, model: type[M]) -> M:
    """Read ``path`` and validate it as ``model``; raise ConfigError naming what is wrong."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe(exc)}") from exc


def describe(exc: ValidationError) -> str:
    """One clause per bad option: ``option a.b: what is wrong``."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = "unknown option (check the spelling)" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"option {where}: {msg}")
    return "; ".join(parts)
