"""Runs the rulebook over the store: new events in order, the time, and its memory kept across restarts.

The rulebook reads the index (``records``) behind ingest, by a cursor, rather than being handed
events by ingest: ingest stays as fast as the vault allows, the rulebook can be rebuilt or
replayed from the index, and one transaction holds a step's case changes, its memory and its
cursor, so a collector killed mid-step neither loses nor doubles a case.

The cursor is one record id per vault: each vault's records are committed in id order by its one
collector, whereas two collectors of a cluster commit interleaved ids, so a single id cursor
could pass a record whose transaction had not committed yet and never see it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import sqlalchemy as sa

from collector.cases import StoreSink
from collector.config import NotifySection
from collector.rulebook import Event, Rulebook
from collector.rulefiles import RuleError, RuleFileErrors, check_rules
from collector.rulewindows import Calendar, StoreCalendar
from collector.store import Store, insert_with_conflicts
from collector.store import schema

log = logging.getLogger("venueguard.collector.rules")

#: The rules folder of a checkout (deployments name theirs in [rules] folder).
SHIPPED_RULES = Path(__file__).resolve().parents[1] / "rules"
EVENT_STREAMS = ("ev", "collector")
CURSOR, COUNTS, ABSENT, CONDITION = "cursor", "counts", "absent", "c:"


class RulebookRunner:
    """The rulebook of one collector, fed from the store.

    Args:
        store: the index to read events from and write cases to.
        folder: the rule files (reloaded when they change, kept as they were when the new ones are bad).
        calendar: exam and maintenance windows (default: from the store).
        notify: where case changes are announced (None: nowhere).
        reload_seconds: how often the folder is checked for edits.
        fence: called first in each step's transaction; raises when this collector is no longer
            the cluster's leader (collector.leader), so a deposed leader writes nothing.
    """

    def __init__(self, store: Store, folder: Path | None = None, calendar: Calendar | None = None,
                 notify: NotifySection | None = None, reload_seconds: float = 5.0,
                 fence: Callable[[sa.Connection], None] | None = None) -> None:
        self.store = store
        self.folder = folder or SHIPPED_RULES
        self.calendar = calendar or StoreCalendar(store)
        self.notify = notify
        self.reload_seconds = reload_seconds
        self.errors: list[RuleError] = []
        self.fence = fence
        self.cursors: dict[str, int] = {}  # vault id -> last record id read
        self._signature: tuple[Any, ...] = ()
        self._checked = float("-inf")
        rules, errors = check_rules(self.folder)
        if errors:
            raise RuleFileErrors(errors)
        self._signature = self._folder_signature()
        self.rulebook = Rulebook(rules, self.calendar)
        self._restore()

    def reset(self) -> None:
        """Forget the memory and take it again from the store (it may be stale or half-written:
        a failed step, or leadership gained after another collector ran the rules)."""
        self.rulebook = Rulebook(list(self.rulebook.rules.values()), self.calendar)
        self._restore()

    # -- rules -----------------------------------------------------------------------------------

    def _folder_signature(self) -> tuple[Any, ...]:
        return tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in self.folder.glob("*.yaml")))

    def reload_if_changed(self) -> bool:
        """Pick up edited rule files; bad files are reported and the rules in force stay."""
        mono = time.monotonic()
        if mono - self._checked < self.reload_seconds:
            return False
        self._checked = mono
        sig = self._folder_signature()
        if sig == self._signature:
            return False
        self._signature = sig
        rules, errors = check_rules(self.folder)
        self.errors = errors
        if errors:
            for e in errors:
                log.error("rule file refused, the rules in force stay: %s", e)
            return False
        self.rulebook.load_rules(rules)
        log.info("rules reloaded from %s: %d rules", self.folder, len(rules))
        return True

    # -- the loop ----------------------------------------------------------------------------------

    def step(self, now: float | None = None, limit: int = 5000) -> int:
        """Evaluate events indexed since the last step and the time up to ``now``; return how many events."""
        now = time.time() if now is None else now
        if isinstance(self.calendar, StoreCalendar):
            self.calendar.refresh()
        events = self._next_events(limit)
        # With more indexed events waiting (a backlog), time is not moved on: a condition whose
        # clearing event is still in the backlog would otherwise turn into a case, wrongly.
        self.feed(events, now, advance=len(events) < limit)
        return len(events)

    def feed(self, events: list[Event], now: float, advance: bool = True) -> None:
        """Evaluate ``events`` (in order) and, with ``advance``, the time up to ``now``, in one
        transaction with the memory and the cursor; scenarios and benchmarks may hand events in directly."""
        try:
            with self.store.engine.begin() as conn:
                if self.fence is not None:
                    self.fence(conn)
                sink = StoreSink(conn, self.notify, now)
                for ev in events:
                    self.rulebook.watch_agent(ev.venue_id, ev.agent_id, ev.at)
                    self.rulebook.feed(ev, sink)
                if advance:
                    self.rulebook.advance(now, sink)
                sink.flush()
                for ev in events:
                    self.cursors[ev.vault_id] = max(self.cursors.get(ev.vault_id, 0), ev.record_id)
                self._save(conn)
        except Exception:
            # The transaction rolled back (e.g. the database went away): the memory must not keep
            # case ids that were never written. Start again from what the store holds.
            self.reset()
            raise

    def _next_events(self, limit: int) -> list[Event]:
        """The next indexed events; ``data`` only for kinds some rule reads (most events are snapshots
        no rule looks into, and decoding their JSON was most of a step's time)."""
        r = schema.records.c
        data = sa.case((r.kind.in_(sorted(self.rulebook.kinds)), r.data), else_=sa.null())
        q = sa.select(r.id, r.venue_id, r.agent_id, r.kind, r.at, sa.type_coerce(data, sa.JSON).label("data"),
                      r.vault_index, r.seq, r.vault_id).where(r.stream.in_(EVENT_STREAMS)).order_by(r.id).limit(limit)
        rows = []
        with self.store.engine.connect() as conn:
            vault_ids = set(conn.execute(sa.select(schema.vaults.c.id)).scalars()) | set(self.cursors) | {"main"}
            for vault_id in sorted(vault_ids):
                rows += conn.execute(q.where(r.vault_id == vault_id, r.id > self.cursors.get(vault_id, 0))).all()
        rows.sort(key=lambda row: row.id)
        return [Event(row.id, row.venue_id, row.agent_id, row.kind, row.at, row.data or {}, row.vault_index, row.seq,
                      row.vault_id) for row in rows[:limit]]

    # -- memory ----------------------------------------------------------------------------------

    def _save(self, conn: sa.Connection) -> None:
        """Write the conditions changed in this step, drop the finished ones, move the cursor."""
        saved, removed = self.rulebook.take_changes()
        st = schema.rule_state
        rows = [{"key": CONDITION + k, "value": v} for k, v in saved.items()]
        rows += [{"key": CURSOR, "value": {"vaults": self.cursors}}]
        if self.rulebook.aux_dirty:
            rows += [{"key": COUNTS, "value": self.rulebook.counts}, {"key": ABSENT, "value": self.rulebook.absent_seen}]
            self.rulebook.aux_dirty = False
        gone = [CONDITION + k for k in removed]
        for chunk in range(0, len(gone), 500):
            conn.execute(st.delete().where(st.c.key.in_(gone[chunk:chunk + 500])))
        upsert = insert_with_conflicts(conn, st)
        conn.execute(upsert.on_conflict_do_update(index_elements=[st.c.key], set_={"value": upsert.excluded.value}), rows)

    def _restore(self) -> None:
        st = schema.rule_state
        with self.store.engine.connect() as conn:
            found = {row.key: row.value for row in conn.execute(sa.select(st.c.key, st.c.value))}
        self.cursors = cursors_of(found.pop(CURSOR, {}))
        counts, absent = found.pop(COUNTS, {}), found.pop(ABSENT, {})
        conditions = [v for k, v in found.items() if k.startswith(CONDITION)]
        self.rulebook.restore(conditions, counts, absent)


def cursors_of(value: dict[str, Any]) -> dict[str, int]:
    """Per-vault cursors as saved; a cursor saved before clusters is one id over the vault "main"."""
    if "vaults" in value:
        return {k: int(v) for k, v in value["vaults"].items()}
    return {"main": int(value["id"])} if "id" in value else {}
