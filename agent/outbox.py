"""Durable outbox: a record exists once committed here, and leaves only on the collector's ack.

SQLite in WAL mode with ``synchronous=FULL``: a committed row survives a power cut. Seqs are
kept in ``meta`` so they stay strictly increasing across restarts even when every row has been
acknowledged and deleted. When the outbox is over its limits, new records are dropped — but
counted, and an ``outbox.full`` record (allowed past the limit) says so at once, followed by
``outbox.recovered`` with the per-kind counts of what was lost once there is room again.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from protocol.envelope import canonical_json, record

#: A record larger than this is replaced by a truncation notice so it always fits an envelope.
MAX_RECORD_BYTES = 128 * 1024
_EXCERPT_BYTES = 4096

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Row:
    """One pending record: its seq, stream, the record object as sent and its encoded size."""

    seq: int
    stream: str
    record: dict[str, Any]
    size: int


@dataclass(frozen=True)
class Pending:
    """A record not yet in the outbox."""

    stream: str
    kind: str
    at: float
    data: dict[str, Any]


class Outbox:
    """The agent's durable queue of sequenced records.

    Args:
        path: the SQLite file.
        max_records: rows above which new records are dropped (and counted).
        min_free_bytes: free space on the file's disk below which new records are dropped.
    """

    def __init__(self, path: Path, *, max_records: int = 1_000_000, min_free_bytes: int = 64 << 20) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_records = max_records
        self.min_free_bytes = min_free_bytes
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._unwritable: Counter[str] = Counter()  # drops while SQLite itself could not write

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    # -- writing -------------------------------------------------------------------------------

    def append(self, stream: str, kind: str, data: dict[str, Any], at: float | None = None) -> int | None:
        """Commit one record; return its seq, or None when it had to be dropped (and was counted)."""
        seqs = self.append_many([Pending(stream, kind, time.time() if at is None else at, data)])
        return seqs[0]

    def append_many(self, items: Iterable[Pending], state: tuple[str, Any] | None = None) -> list[int | None]:
        """Commit records in one transaction; dropped ones get None and are counted.

        ``state=(key, value)`` is saved (as by :meth:`save_state`) in the same transaction, and only
        when every record was committed: a reader's offsets then never run ahead of the records
        holding its lines, and a crash can neither lose lines nor lose the offsets of lines committed.
        """
        items = list(items)
        with self._lock:
            try:
                return self._append_locked(items, state)
            except sqlite3.OperationalError:
                # The disk is so full that SQLite cannot write: keep the count in memory and
                # report it as soon as a write succeeds again.
                self._unwritable.update(p.kind for p in items)
                return [None] * len(items)

    def _append_locked(self, items: list[Pending], state: tuple[str, Any] | None = None) -> list[int | None]:
        """Body of append_many, under the lock, inside one IMMEDIATE transaction."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            last = self._meta_int("last_seq")
            depth = db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
            out: list[int | None] = []
            dropped: Counter[str] = Counter(self._unwritable)
            disk_low = self._disk_low()
            for item in items:
                if depth >= self.max_records or disk_low:
                    dropped[item.kind] += 1
                    out.append(None)
                    continue
                last += 1
                depth += 1
                db.execute(
                    "INSERT INTO records(seq, stream, body) VALUES (?, ?, ?)",
                    (last, item.stream, _encode(item, last)),
                )
                out.append(last)
            if dropped:
                last = self._note_drops(last, dropped, depth)
            elif state is not None:
                self._set_meta(f"state:{state[0]}", json.dumps(state[1]))
            self._set_meta("last_seq", last)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._unwritable.clear()
        return out

    def _note_drops(self, last: int, dropped: Counter[str], depth: int) -> int:
        """Add ``dropped`` to the open overflow episode; open it with an ``outbox.full`` record."""
        episode = json.loads(self._meta("overflow") or "null")
        now = time.time()
        if episode is None:
            episode = {"since": now, "dropped": {}}
            last += 1
            data = {"depth": depth, "max_records": self.max_records, "free_bytes": self._free_bytes(),
                    "min_free_bytes": self.min_free_bytes, "dropped": dict(dropped)}
            self._db.execute(
                "INSERT INTO records(seq, stream, body) VALUES (?, 'ev', ?)",
                (last, _dump(record("outbox.full", now, data, seq=last))),
            )
        for kind, n in dropped.items():
            episode["dropped"][kind] = episode["dropped"].get(kind, 0) + n
        episode["last"] = now
        self._set_meta("overflow", json.dumps(episode))
        return last

    def _close_overflow(self) -> None:
        """After an ack made room, record what the overflow episode cost."""
        episode = json.loads(self._meta("overflow") or "null")
        if episode is None:
            return
        depth = self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        if depth >= self.max_records * 0.9 or self._disk_low():
            return
        last = self._meta_int("last_seq") + 1
        now = time.time()
        data = {"since": episode["since"], "until": episode["last"], "dropped": episode["dropped"],
                "dropped_total": sum(episode["dropped"].values())}
        self._db.execute(
            "INSERT INTO records(seq, stream, body) VALUES (?, 'ev', ?)",
            (last, _dump(record("outbox.recovered", now, data, seq=last))),
        )
        self._set_meta("last_seq", last)
        total = self._meta_int("dropped_total") + data["dropped_total"]
        self._set_meta("dropped_total", total)
        self._db.execute("DELETE FROM meta WHERE key='overflow'")

    # -- reading and acknowledging -------------------------------------------------------------

    def pending(self, after: int, limit: int) -> list[Row]:
        """Up to ``limit`` rows with seq > ``after``, in seq order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, stream, body FROM records WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
            ).fetchall()
        return [Row(seq, stream, json.loads(body), len(body)) for seq, stream, body in rows]

    def ack(self, upto: int) -> int:
        """Delete rows with seq <= ``upto`` (the collector has them durable); return rows deleted."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                n = self._db.execute("DELETE FROM records WHERE seq <= ?", (upto,)).rowcount
                if upto > self._meta_int("acked_seq"):
                    self._set_meta("acked_seq", upto)
                self._close_overflow()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return n

    def rebase(self, floor: int) -> int:
        """Renumber every row above ``floor`` when the collector already holds seqs up to it.

        That happens when this outbox was lost or replaced (a reinstall that kept the bundle):
        our seqs restarted while the collector's did not, so our records would look like rewrites
        of records it holds. Renumbering keeps every record; ``outbox.rebased`` records that it
        happened. Returns the number of rows renumbered.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                old_last = self._meta_int("last_seq")
                rows = self._db.execute("SELECT seq, stream, body FROM records ORDER BY seq").fetchall()
                self._db.execute("DELETE FROM records")
                seq = floor
                for _, stream, body in rows:
                    seq += 1
                    rec = json.loads(body)
                    rec["seq"] = seq
                    self._db.execute("INSERT INTO records(seq, stream, body) VALUES (?, ?, ?)", (seq, stream, _dump(rec)))
                seq += 1
                data = {"collector_acked": floor, "previous_last_seq": old_last, "rows_renumbered": len(rows)}
                self._db.execute("INSERT INTO records(seq, stream, body) VALUES (?, 'ev', ?)",
                                 (seq, _dump(record("outbox.rebased", time.time(), data, seq=seq))))
                self._set_meta("last_seq", seq)
                self._set_meta("acked_seq", floor)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return len(rows)

    def depth(self) -> int:
        """Rows waiting for an ack."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0]

    def last_seq(self) -> int:
        """Highest seq ever committed."""
        with self._lock:
            return self._meta_int("last_seq")

    def acked_seq(self) -> int:
        """Highest seq the collector acknowledged."""
        with self._lock:
            return self._meta_int("acked_seq")

    def dropped_total(self) -> int:
        """Records dropped over the outbox's life (closed overflow episodes)."""
        with self._lock:
            return self._meta_int("dropped_total")

    def oldest_at(self) -> float | None:
        """``at`` of the oldest record waiting for an ack (None when drained): how long delivery lags."""
        with self._lock:
            row = self._db.execute("SELECT body FROM records ORDER BY seq LIMIT 1").fetchone()
        return None if row is None else float(json.loads(row[0])["at"])

    # -- small persistent key/value store (watcher state survives restarts) --------------------

    def load_state(self, key: str) -> Any:
        """A JSON value saved by :meth:`save_state`, or None."""
        with self._lock:
            text = self._meta(f"state:{key}")
        return None if text is None else json.loads(text)

    def save_state(self, key: str, value: Any) -> None:
        """Persist a JSON value (e.g. a watcher's last observation)."""
        with self._lock:
            self._set_meta(f"state:{key}", json.dumps(value))

    # -- helpers -------------------------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    def _meta_int(self, key: str) -> int:
        return int(self._meta(key) or 0)

    def _set_meta(self, key: str, value: object) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, str(value)))

    def _free_bytes(self) -> int:
        return shutil.disk_usage(self.path.parent).free

    def _disk_low(self) -> bool:
        return self._free_bytes() < self.min_free_bytes


def _encode(item: Pending, seq: int) -> str:
    """Encode a record; one too large for any envelope is cut to an excerpt that says so."""
    text = _dump(record(item.kind, item.at, item.data, seq=seq))
    if len(text.encode()) <= MAX_RECORD_BYTES:
        return text
    data = {"truncated": True, "original_bytes": len(text.encode()),
            "excerpt": text.encode()[:_EXCERPT_BYTES].decode(errors="replace")}
    return _dump(record(item.kind, item.at, data, seq=seq))


def _dump(rec: dict[str, Any]) -> str:
    """Store records in canonical form so a resend is byte-identical to the first send."""
    return canonical_json(rec).decode()


class OutboxReader:
    """A read-only view of an agent's outbox, for ``venueguard-agent check`` beside a running service.

    The check must neither consume nor block the service's rows: it opens the database read-only
    (``mode=ro``), never starts a write transaction, and answers the few questions the readiness
    check asks. A missing file (the agent never ran) reads as empty.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        if path.exists():
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, check_same_thread=False)

    def close(self) -> None:
        """Close the database."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def _one(self, sql: str, *args: Any) -> Any:
        if self._db is None:
            return None
        try:
            row = self._db.execute(sql, args).fetchone()
        except sqlite3.OperationalError:
            return None  # created by the service but not yet its tables
        return None if row is None else row[0]

    def load_state(self, key: str) -> Any:
        """A JSON value the service saved with ``Outbox.save_state``, or None."""
        text = self._one("SELECT value FROM meta WHERE key=?", f"state:{key}")
        return None if text is None else json.loads(text)

    def depth(self) -> int:
        """Rows waiting for an ack."""
        return int(self._one("SELECT COUNT(*) FROM records") or 0)

    def oldest_at(self) -> float | None:
        """``at`` of the oldest record waiting for an ack (None when drained)."""
        body = self._one("SELECT body FROM records ORDER BY seq LIMIT 1")
        return None if body is None else float(json.loads(body)["at"])
