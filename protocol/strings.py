"""Keyed message catalogues: operator-facing text lives in JSON files, never in code."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

DEFAULT_LANG = "zh-CN"


@lru_cache(maxsize=None)
def catalogue(folder: str, lang: str) -> dict[str, str]:
    """Load ``folder/<lang>.json``."""
    return json.loads((Path(folder) / f"{lang}.json").read_text(encoding="utf-8"))


def translator(folder: Path):  # noqa: ANN201 - returns a small closure
    """A ``t(key, **placeholders)`` for one surface's catalogue; VENUEGUARD_LANG picks the language."""

    def t(key: str, default: str | None = None, /, **kw: object) -> str:  # a placeholder may be called "key"
        lang = os.environ.get("VENUEGUARD_LANG", DEFAULT_LANG)
        text = catalogue(str(folder), lang).get(key)
        if text is None:
            if default is None:
                raise KeyError(f"no text for {key!r} in {folder}/{lang}.json")
            return default
        return text.format(**kw)

    return t
