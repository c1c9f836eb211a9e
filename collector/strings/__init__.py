"""The collector CLI's operator-facing messages (zh-CN by default, en on the same keys)."""

from pathlib import Path

from protocol.strings import translator

t = translator(Path(__file__).parent)
