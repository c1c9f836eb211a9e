"""Watchers: each owns one kind of thing on the host or LAN and returns observations.

A watcher never publishes and never talks to another watcher. The contract (after Telegraf's
``Init``/``Gather``): ``name`` and ``interval`` attributes, ``init()`` that validates and raises
ValueError naming the bad option, and ``collect()`` that returns an :class:`Observation`.
"""

from __future__ import annotations

from typing import Any, Protocol


class Observation(Protocol):
    """What a watcher saw at one moment."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form, for snapshots and for persisting across restarts."""

    def diff(self, before: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """Edge events ``(kind, data)`` between ``before`` (a previous ``to_json()``) and this.

        ``before`` is ``{}`` on the very first observation (nothing persisted yet). Then return only
        conditions that are violations by their presence (e.g. a running remote-control tool), not
        "added" events for everything that merely exists.
        """


class Watcher(Protocol):
    """One input."""

    name: str
    interval: float

    def init(self) -> None:
        """Validate configuration; raise ValueError naming the option."""

    def collect(self) -> Observation:
        """Look once and return what was seen."""
