"""Telemetry to InfluxDB, off the ingest path: a sink that tails the store and writes in batches.

The vault is the truth and telemetry is a view of it, so nothing about telemetry may hold up
ingest or the ack of a record. Like the rulebook, the sink reads the SQL index behind ingest by a
cursor (in its own thread), derives points (:mod:`collector.timeseries_points`) into a bounded
buffer, and writes them with ``influxdb-client``:

* The buffer holds at most ``spool_max`` points (Telegraf's ``metric_buffer_limit``). Points of
  stored records never need dropping: when the buffer is full the cursor simply stops, and the
  store is the spool they catch up from once the server is back. The cursor is saved (in
  ``<data_dir>/timeseries-cursor.json``) only past points that were written, so a restart resumes.
* Heartbeat samples (outbox depth, clock offset) are not stored records: when the buffer is full
  they are dropped, counted, and the span is recorded as a *telemetry gap* (logged and appended to
  ``<data_dir>/timeseries-gaps.jsonl``), never dropped silently. So are points the server refuses.
* A failed write is retried with backoff (1 s doubling to 10 s); the same points, in order.
* ``venueguard-collector timeseries backfill --since`` re-derives points from the stored records
  of any period (writing a point twice is harmless: same series and time overwrite).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import sqlalchemy as sa

from collector.config import CollectorConfig, InfluxSection
from collector.store import Store
from collector.store import schema
from collector.timeseries_influx import InfluxWriter, TelemetryError, WriteFailed
from collector.timeseries_points import DERIVED_KINDS, Row, Sample, derive, heartbeat_sample

__all__ = ["Gap", "TelemetryError", "TimeseriesSink", "backfill", "open_sink"]

log = logging.getLogger("venueguard.collector.timeseries")

CURSOR_FILE = "timeseries-cursor.json"
GAPS_FILE = "timeseries-gaps.jsonl"
MAX_BACKOFF = 10.0
#: Stored records read per query at most.
PAGE = 2000


@dataclass
class Gap:
    """Points that will never reach the server: when they were for, how many, and why."""

    first: float
    last: float
    points: int
    reason: str

    def extend(self, at: float, points: int = 1) -> None:
        """Widen the gap to cover ``points`` more at time ``at``."""
        self.first, self.last, self.points = min(self.first, at), max(self.last, at), self.points + points


class Buffer:
    """Points waiting for the server, oldest first, at most ``limit`` (a snapshot record read while
    there was room may pass it by its few points)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.points: deque[Sample] = deque()

    def __len__(self) -> int:
        return len(self.points)

    def has_room(self) -> bool:
        """Whether more points may be read in."""
        return len(self.points) < self.limit

    def first_record_id(self) -> int | None:
        """The stored record of the oldest waiting point that came from one."""
        return next((p.record_id for p in self.points if p.record_id is not None), None)

    def head(self, n: int) -> list[Sample]:
        """The ``n`` oldest points (left in place until written)."""
        return [self.points[i] for i in range(min(n, len(self.points)))]

    def pop(self, n: int) -> None:
        """Forget the ``n`` oldest points (written or refused)."""
        for _ in range(min(n, len(self.points))):
            self.points.popleft()


class TimeseriesSink:
    """Derives telemetry from the store and writes it to InfluxDB in its own thread.

    Args:
        store: the index to read records and the agents' latest heartbeats from.
        section: the ``[influx]`` settings (``url`` must be set).
        data_dir: where the cursor and the gap log live.
        writer: the InfluxDB writer (default: built from ``section``; raises :class:`TelemetryError`).
        clock: wall time, for log lines about gaps.
        vault_id: read only the records this collector indexed (its vault's): in a cluster each
            collector writes the points of its own share, and its id order is its commit order.
    """

    def __init__(self, store: Store, section: InfluxSection, data_dir: Path, *, writer: InfluxWriter | None = None,
                 clock: Callable[[], float] = time.time, vault_id: str = "main") -> None:
        self.store = store
        self.vault_id = vault_id
        self.section = section
        self.writer = writer or InfluxWriter(section)
        self.cursor_path = data_dir / CURSOR_FILE
        self.gaps_path = data_dir / GAPS_FILE
        self.clock = clock
        self.buffer = Buffer(section.spool_max)
        self.counters = {"written": 0, "dropped": 0, "rejected": 0, "failures": 0, "gaps": 0}
        self.read_upto = self._load_cursor()
        self._heartbeats: dict[str, float] = {}
        self._dropping: Gap | None = None
        self._failures = 0
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._last_flush = time.monotonic()
        self._saved: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="timeseries", daemon=True)
        self._save_cursor()  # a first run starts here, also after a crash before its first write

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread; ingest never waits for it."""
        log.info("telemetry to %s bucket %r from record %d on", self.section.url, self.section.bucket, self.read_upto + 1)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """One last write of what waits, then record what could not be written as a gap."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout + self.section.timeout)
        self._close_drop_gap()
        self._save_cursor()
        samples = [p for p in self.buffer.points if p.record_id is None]
        if samples:
            self._record_gap(Gap(min(p.at for p in samples), max(p.at for p in samples), len(samples),
                                 "collector stopped before these heartbeat samples were written"))
        self.writer.close()

    def _run(self) -> None:
        """Read, sample, write, until stopped; a fault is logged and the loop goes on."""
        poll = min(1.0, self.section.flush_seconds)
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # noqa: BLE001 - e.g. the database went away; telemetry retries, ingest is unaffected
                log.exception("telemetry step failed; retrying")
            self._stop.wait(poll)
        try:
            self.flush(force=True)
        except Exception:  # noqa: BLE001 - stopping anyway; what is left is recorded in stop()
            log.exception("last telemetry write failed")

    # -- one round -------------------------------------------------------------------------------

    def step(self) -> None:
        """Read new records and heartbeats into the buffer, then write when due."""
        self.read_records()
        self.sample_heartbeats()
        self.flush()

    def read_records(self) -> int:
        """Derive points from records stored since the cursor, while the buffer has room."""
        r = schema.records.c
        read = 0
        while self.buffer.has_room():
            page = min(PAGE, self.buffer.limit - len(self.buffer))
            with self.store.engine.connect() as conn:
                top = conn.execute(sa.select(sa.func.max(r.id)).where(r.vault_id == self.vault_id)).scalar() or 0
                rows = conn.execute(sa.select(r.id, r.venue_id, r.agent_id, r.kind, r.at, r.data)
                                    .where(r.vault_id == self.vault_id, r.id > self.read_upto, r.id <= top,
                                           r.kind.in_(DERIVED_KINDS))
                                    .order_by(r.id).limit(page)).all()
            for row in rows:
                self.buffer.points.extend(derive(Row(row.id, row.venue_id, row.agent_id, row.kind, row.at, row.data)))
            read += len(rows)
            self.read_upto = rows[-1].id if len(rows) == page else max(self.read_upto, top)
            if len(rows) < page:
                break
        return read

    def sample_heartbeats(self) -> None:
        """One ``vg_agent`` point per heartbeat seen since the last round (outbox depth, clock)."""
        a = schema.agents.c
        with self.store.engine.connect() as conn:
            rows = conn.execute(sa.select(a.id, a.venue_id, a.last_heartbeat, a.outbox_depth, a.clock_offset)
                                .where(a.last_heartbeat.is_not(None))).all()
        for row in rows:
            if row.last_heartbeat <= self._heartbeats.get(row.id, 0.0):
                continue
            self._heartbeats[row.id] = row.last_heartbeat
            sample = heartbeat_sample(row.venue_id, row.id, row.last_heartbeat, row.outbox_depth, row.clock_offset)
            if sample is not None:
                self._offer(sample)

    def _offer(self, sample: Sample) -> None:
        """Buffer a heartbeat sample, or count it into the open gap when the buffer is full."""
        if self.buffer.has_room():
            self._close_drop_gap()
            self.buffer.points.append(sample)
            return
        self.counters["dropped"] += 1
        if self._dropping is None:
            self._dropping = Gap(sample.at, sample.at, 0, f"buffer full ([influx] spool_max = {self.buffer.limit}) "
                                 "while the server was slow or unreachable: heartbeat samples dropped")
        self._dropping.extend(sample.at)

    def _close_drop_gap(self) -> None:
        if self._dropping is not None:
            gap, self._dropping = self._dropping, None
            self._record_gap(gap)

    # -- writing ---------------------------------------------------------------------------------

    def flush(self, force: bool = False) -> int:
        """Write batches while enough waits (or the flush interval passed); return points written."""
        written = 0
        while self.buffer and (force or self._due()):
            if not force and time.monotonic() < self._retry_at:
                break
            batch = self.buffer.head(self.section.batch_size)
            try:
                self.writer.write([p.line() for p in batch])
            except WriteFailed as exc:
                if exc.keep:
                    self._failed(exc.detail)
                    break
                self._refused(batch, exc.detail)
                continue
            self.buffer.pop(len(batch))
            written += len(batch)
            self.counters["written"] += len(batch)
            self._recovered()
            self._last_flush = time.monotonic()
            self._save_cursor()
        if not self.buffer:
            self._last_flush = time.monotonic()
            self._save_cursor()
        return written

    def _due(self) -> bool:
        waited = time.monotonic() - self._last_flush
        return len(self.buffer) >= self.section.batch_size or waited >= self.section.flush_seconds

    def _failed(self, detail: str) -> None:
        """Keep the points, retry later; say so once per outage (then every 10th attempt)."""
        self._failures += 1
        self.counters["failures"] += 1
        delay = min(2.0 ** (self._failures - 1), MAX_BACKOFF)
        self._retry_at = time.monotonic() + delay
        if self._down_since is None:
            self._down_since = self.clock()
        if self._failures == 1 or self._failures % 10 == 0:
            log.error("telemetry write failed (%s); %d points wait, retrying in %.0fs; ingest is not affected",
                      detail, len(self.buffer), delay)

    def _recovered(self) -> None:
        if self._down_since is not None:
            log.warning("telemetry writes work again after %.0fs; catching up", self.clock() - self._down_since)
        self._failures, self._down_since, self._retry_at = 0, None, 0.0

    def _refused(self, batch: list[Sample], detail: str) -> None:
        """The server refused these points (a retry would be refused again): drop them as a gap."""
        self.buffer.pop(len(batch))
        self.counters["rejected"] += len(batch)
        ids = [p.record_id for p in batch if p.record_id is not None]
        where = f"; records {min(ids)}..{max(ids)}" if ids else ""
        self._record_gap(Gap(min(p.at for p in batch), max(p.at for p in batch), len(batch),
                             f"refused by the server: {detail}{where}"))

    # -- gaps and cursor -------------------------------------------------------------------------

    def _record_gap(self, gap: Gap) -> None:
        """Log the gap and append it to the gap file, so it is known and can be backfilled."""
        self.counters["gaps"] += 1
        log.error("telemetry gap: %d points from %s to %s not written: %s", gap.points, _iso(gap.first),
                  _iso(gap.last), gap.reason)
        try:
            with self.gaps_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({**asdict(gap), "recorded_at": round(self.clock(), 3)}, ensure_ascii=False) + "\n")
        except OSError as exc:
            log.error("cannot append to %s: %s", self.gaps_path, exc)

    def written_upto(self) -> int:
        """The stored records whose points are all written: below the oldest waiting one."""
        first = self.buffer.first_record_id()
        return self.read_upto if first is None else first - 1

    def _load_cursor(self) -> int:
        """Where the last run stopped; on the first run, the newest record (older ones: backfill)."""
        try:
            return int(json.loads(self.cursor_path.read_text())["record_id"])
        except FileNotFoundError:
            with self.store.engine.connect() as conn:
                r = schema.records.c
                return int(conn.execute(sa.select(sa.func.max(r.id)).where(r.vault_id == self.vault_id)).scalar() or 0)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TelemetryError(f"{self.cursor_path} is unreadable ({exc}); delete it to start telemetry from "
                                 "the newest record, then backfill the missing period") from exc

    def _save_cursor(self) -> None:
        """Atomically, and only when it moved."""
        upto = self.written_upto()
        if upto == self._saved:
            return
        self._saved = upto
        tmp = self.cursor_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"record_id": upto, "saved_at": round(self.clock(), 3)}))
        os.replace(tmp, self.cursor_path)


def open_sink(cfg: CollectorConfig, store: Store) -> TimeseriesSink | None:
    """The collector's telemetry sink, or None when ``[influx] url`` is empty (the default).

    Raises :class:`TelemetryError` for a setting that cannot work (e.g. a missing token file)."""
    if not cfg.influx.url:
        return None
    return TimeseriesSink(store, cfg.influx, cfg.collector.data_dir, vault_id=cfg.vault_id)


def backfill(store: Store, writer: InfluxWriter, since: float, until: float | None = None,
             batch_size: int = 5000) -> tuple[int, int]:
    """Re-write the points of records stored with ``since <= at < until``; return (records, points).

    Raises :class:`TelemetryError` when a write fails (nothing is skipped quietly)."""
    records = points = 0
    for rows in _pages(store, since, until):
        batch = [s for row in rows for s in derive(row)]
        for i in range(0, len(batch), batch_size):
            try:
                writer.write([p.line() for p in batch[i:i + batch_size]])
            except WriteFailed as exc:
                raise TelemetryError(f"backfill stopped after {points} points: {exc.detail}") from exc
            points += len(batch[i:i + batch_size])
        records += len(rows)
    return records, points


def _pages(store: Store, since: float, until: float | None) -> Iterator[list[Row]]:
    """Stored records of the derived kinds in the period, a page at a time, in id order."""
    r = schema.records.c
    after = 0
    while True:
        q = sa.select(r.id, r.venue_id, r.agent_id, r.kind, r.at, r.data).where(
            r.id > after, r.at >= since, r.kind.in_(DERIVED_KINDS))
        if until is not None:
            q = q.where(r.at < until)
        with store.engine.connect() as conn:
            rows = conn.execute(q.order_by(r.id).limit(PAGE)).all()
        if not rows:
            return
        yield [Row(x.id, x.venue_id, x.agent_id, x.kind, x.at, x.data) for x in rows]
        after = rows[-1].id


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
