"""Ingest: verify everything agents publish, vault it, index it, acknowledge it.

Checks, in order: topic, size, JSON and schema, version, that the envelope's ``agent_id`` is the
topic's (the broker identity), that the agent is registered and not revoked, the Ed25519
signature, then the seq. Anything refused becomes a dead letter with its reason; nothing here
raises out of :meth:`Ingestor.handle`, so one bad message never stops the stream.

Accepted envelopes go to the vault (fsynced) before the SQL index, and the agent is acked only
after both: an ack means durable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import sqlalchemy.exc

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.configpush import ConfigPublisher, Outgoing
from collector.ledger import MAX_MISSING_RANGES, Track
from collector.store.store import Batch, DeadLetter, NewRecord, Store
from collector.vault import Vault
from protocol import topics
from protocol.envelope import Envelope, canonical_json, decode, record
from protocol.errors import ProtocolError
from protocol.keys import load_public_b64

log = logging.getLogger("venueguard.collector.ingest")

COLLECTOR_TOPIC = "collector"
LOG_LINES = "log.lines"


@dataclass(frozen=True)
class Message:
    """One MQTT message as received."""

    topic: str
    payload: bytes
    received_at: float


@dataclass
class _Accepted:
    """An envelope to vault, with the records of it that are new."""

    env: Envelope | None
    topic: str
    payload: str
    received_at: float
    records: list[dict[str, Any]]
    agent: Track


class Ingestor:
    """The ingest logic, independent of MQTT (the service feeds it; tests and benches too).

    Args:
        store: the SQL index and registry.
        vault: the append-only record.
        key: the collector's signing key, for acks.
        deadline_factor: an agent is offline after this many missed heartbeat intervals.
        gap_grace: seconds a hole may last before it is reported as ``seq.gap``.
        max_clock_skew: seconds of agent clock offset reported as ``agent.clock_skew``.
    """

    def __init__(self, store: Store, vault: Vault, key: Ed25519PrivateKey, *, deadline_factor: float = 3.0,
                 gap_grace: float = 30.0, max_clock_skew: float = 2.0, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.vault = vault
        self.key = key
        self.deadline_factor = deadline_factor
        self.gap_grace = gap_grace
        self.max_clock_skew = max_clock_skew
        self.clock = clock
        self.started = clock()
        self.tracks: dict[str, Track] = {}
        self.configs = ConfigPublisher(store, key)
        self.counters: dict[str, int] = {"accepted": 0, "duplicates": 0, "dead_letters": 0}
        self._registry_loaded = 0.0

    # -- start-up ------------------------------------------------------------------------------

    def load(self) -> None:
        """Load the registry and ledgers from the store, then index what the vault has beyond it."""
        self.refresh_registry(force=True)
        self._reindex_vault_tail()

    def refresh_registry(self, force: bool = False) -> None:
        """Pick up agents enrolled since (by another process); at most every 2 s unless forced."""
        now = time.monotonic()
        if not force and now - self._registry_loaded < 2.0:
            return
        self._registry_loaded = now
        for row in self.store.agents():
            track = self.tracks.get(row.id)
            key = load_public_b64(row.public_key)
            if track is None:
                track = Track(row.id, row.venue_id, key, row.revoked, row.acked_seq, self.store.seqs_above(row.id, row.acked_seq),
                              row.boot, row.online, row.last_heartbeat or 0.0, row.heartbeat_interval or 10.0)
                self.tracks[row.id] = track
            else:
                track.key, track.revoked, track.venue_id = key, row.revoked, row.venue_id

    def _reindex_vault_tail(self) -> None:
        """Index vault entries written before a crash but never indexed."""
        start = self.store.max_vault_index() + 1
        if start >= self.vault.size:
            return
        log.warning("indexing vault entries %d..%d that the store lacks", start, self.vault.size - 1)
        for entry in self.vault.entries(start):
            batch = Batch()
            if entry.topic.startswith(COLLECTOR_TOPIC + "/"):
                doc = json.loads(entry.payload)
                batch.records.append(self._collector_record(doc, entry.t, entry.payload, entry.i))
            else:
                env = decode(entry.payload.encode())
                track = self.tracks[env.agent_id]
                new = [r for r in env.records if not track.holds(r["seq"])]
                acc = _Accepted(env, entry.topic, entry.payload, entry.t, new, track)
                batch.records += self._index_rows(acc, entry.i)
                batch.update_agent(track.agent_id, acked_seq=track.acked)
                batch.log_lines += [row for r in new if r["kind"] == LOG_LINES for row in log_line_rows(track, r, entry.t)]
            self.store.commit(batch)

    # -- the stream ----------------------------------------------------------------------------

    def handle(self, messages: Iterable[Message]) -> list[Outgoing]:
        """Process a batch; return the acks to publish once this returns."""
        batch = Batch()
        accepted: list[_Accepted] = []
        ack_for: set[str] = set()
        for msg in messages:
            try:
                self._one(msg, batch, accepted, ack_for)
            except ProtocolError as exc:
                self._dead(batch, msg, exc.reason, exc.detail)
            except Exception as exc:  # noqa: BLE001 - a bug must not stop the stream; keep the evidence
                log.exception("ingest failed on a message from %s", msg.topic)
                self._dead(batch, msg, "internal_error", f"{type(exc).__name__}: {exc}")
        self._persist(batch, accepted)
        self.counters["accepted"] += sum(len(a.records) for a in accepted if a.env is not None)
        return [self._ack(self.tracks[a]) for a in sorted(ack_for)]

    def _one(self, msg: Message, batch: Batch, accepted: list[_Accepted], ack_for: set[str]) -> None:
        """Verify one message and route it by stream."""
        where = topics.parse(msg.topic)
        if where.stream not in topics.AGENT_STREAMS:
            raise ProtocolError("bad_topic", f"agents do not publish on {where.stream!r}")
        env = decode(msg.payload)
        if env.agent_id != where.agent_id:
            raise ProtocolError("agent_mismatch", f"envelope claims agent {env.agent_id!r} on the topic of {where.agent_id!r}")
        if env.stream != where.stream:
            raise ProtocolError("stream_mismatch", f"envelope stream {env.stream!r} on topic stream {where.stream!r}")
        track = self.tracks.get(env.agent_id)
        if track is None:
            self.refresh_registry()
            track = self.tracks.get(env.agent_id)
        if track is None:
            raise ProtocolError("unregistered_agent", f"agent {env.agent_id!r} is not enrolled")
        if track.revoked:
            raise ProtocolError("revoked_agent", f"agent {env.agent_id!r} is revoked")
        if not env.verify(track.key):
            raise ProtocolError("bad_signature", f"signature does not verify with agent {env.agent_id!r}'s registered key")
        if env.stream in topics.SEQUENCED_STREAMS:
            self._sequenced(msg, env, track, accepted)
            ack_for.add(track.agent_id)
        elif env.stream == "hb":
            if self._heartbeat(env, track, msg.received_at, batch, accepted):
                ack_for.add(track.agent_id)
        else:
            self._state(env, track, msg.received_at, batch, accepted)
            ack_for.add(track.agent_id)

    def _sequenced(self, msg: Message, env: Envelope, track: Track, accepted: list[_Accepted]) -> None:
        """Keep the records not yet held; refuse an envelope that rewrites a held seq."""
        held = [r for r in env.records if track.holds(r["seq"])]
        if held:
            staged = {r["seq"]: _digest(r) for a in accepted if a.agent is track for r in a.records}
            stored = self.store.digests(track.agent_id, [r["seq"] for r in held if r["seq"] not in staged])
            stored.update(staged)
            changed = [r["seq"] for r in held if stored.get(r["seq"]) != _digest(r)]
            if changed:
                raise ProtocolError("replayed_seq", f"seq {changed[0]}..{changed[-1]} already stored with different content")
            self.counters["duplicates"] += len(held)
        new = [r for r in env.records if not track.holds(r["seq"])]
        if not new:
            return
        for r in new:
            track.add(r["seq"])
        self._note_gaps(track, msg.received_at)
        accepted.append(_Accepted(env, msg.topic, msg.payload.decode(), msg.received_at, new, track))

    def _heartbeat(self, env: Envelope, track: Track, now: float, batch: Batch, accepted: list[_Accepted]) -> bool:
        """Liveness and clock; return True when the agent should be re-sent its ack."""
        data = env.records[0]["data"] if env.records else {}
        interval = float(data.get("interval", track.heartbeat_interval))
        offset = now - float(data.get("clock", env.sent_at))
        track.last_heartbeat, track.heartbeat_interval = now, interval
        if track.boot != env.boot or not track.online:
            self._set_online(track, env.boot, "heartbeat", now, batch, accepted)
        skewed = abs(offset) > self.max_clock_skew
        if skewed != track.skewed:
            track.skewed = skewed
            kind = "agent.clock_skew" if skewed else "agent.clock_ok"
            self._event(track, kind, now, {"offset": round(offset, 3), "limit": self.max_clock_skew}, batch, accepted)
        batch.update_agent(track.agent_id, last_heartbeat=now, last_seen=now, heartbeat_interval=interval,
                           outbox_depth=int(data.get("outbox_depth", 0)), clock_offset=round(offset, 3))
        return int(data.get("acked_seq", track.acked)) < track.acked or bool(track.missing())

    def _state(self, env: Envelope, track: Track, now: float, batch: Batch, accepted: list[_Accepted]) -> None:
        """Birth brings an agent online; a Last Will counts only for the boot it belongs to."""
        rec = env.records[0] if env.records else {"kind": ""}
        if rec["kind"] == "birth":
            self.configs.agent_has(track.agent_id, int(rec["data"].get("config_version", 0)))
            track.last_heartbeat = now
            track.heartbeat_interval = float(rec["data"].get("heartbeat_interval", track.heartbeat_interval))
            if track.boot != env.boot or not track.online:
                self._set_online(track, env.boot, "birth", now, batch, accepted)
            batch.update_agent(track.agent_id, last_seen=now, heartbeat_interval=track.heartbeat_interval)
        elif rec["kind"] == "death":
            if env.boot == track.boot and track.online:
                self._set_offline(track, "last_will", now, batch, accepted)
            else:
                log.debug("ignoring the Last Will of %s boot %s (current boot %s)", track.agent_id, env.boot, track.boot)
        else:
            raise ProtocolError("bad_schema", f"state record kind {rec['kind']!r} is not birth or death")

    # -- periodic ------------------------------------------------------------------------------

    def tick(self) -> list[Outgoing]:
        """Time-driven work: missed heartbeats, holes that outlived the grace period, and configs
        to publish; returns the messages to publish."""
        now = self.clock()
        batch, accepted = Batch(), []
        for track in self.tracks.values():
            since = max(track.last_heartbeat, self.started)
            if track.online and now - since > self.deadline_factor * track.heartbeat_interval:
                self._set_offline(track, "heartbeat_timeout", now, batch, accepted, last_heartbeat=track.last_heartbeat)
            self._report_gaps(track, now, batch, accepted)
        self._persist(batch, accepted)
        return self.configs.due(now)

    def _persist(self, batch: Batch, accepted: list[_Accepted]) -> None:
        """Vault (fsynced) first, then the index in one transaction."""
        indexes = self.vault.append([(a.received_at, a.topic, a.payload) for a in accepted])
        for acc, idx in zip(accepted, indexes):
            batch.records += self._index_rows(acc, idx)
            if acc.env is not None:
                batch.update_agent(acc.agent.agent_id, acked_seq=acc.agent.acked)
                batch.log_lines += [row for r in acc.records if r["kind"] == LOG_LINES
                                    for row in log_line_rows(acc.agent, r, acc.received_at)]
        if batch:
            self._commit(batch)

    def _note_gaps(self, track: Track, now: float) -> None:
        holes = {first for first, _ in track.missing()}
        track.gaps_seen = {f: track.gaps_seen.get(f, now) for f in holes}

    def _report_gaps(self, track: Track, now: float, batch: Batch, accepted: list[_Accepted]) -> None:
        """``seq.gap`` once per lasting hole, ``seq.gap_closed`` once it is filled."""
        for first, last in track.missing():
            seen = track.gaps_seen.setdefault(first, now)
            if first not in track.gaps_reported and now - seen >= self.gap_grace:
                track.gaps_reported[first] = last
                self._event(track, "seq.gap", now, {"first": first, "last": last, "since": seen}, batch, accepted)
        for first, last in list(track.gaps_reported.items()):
            if track.acked >= last:
                del track.gaps_reported[first]
                self._event(track, "seq.gap_closed", now, {"first": first, "last": last}, batch, accepted)

    # -- collector events ----------------------------------------------------------------------

    def _set_online(self, track: Track, boot: str, reason: str, now: float, batch: Batch, accepted: list[_Accepted]) -> None:
        previous = track.boot
        track.online, track.boot = True, boot
        batch.update_agent(track.agent_id, online=True, boot=boot)
        self._event(track, "agent.online", now, {"boot": boot, "previous_boot": previous, "reason": reason}, batch, accepted)

    def _set_offline(self, track: Track, reason: str, now: float, batch: Batch, accepted: list[_Accepted], **extra: Any) -> None:
        track.online = False
        batch.update_agent(track.agent_id, online=False)
        self._event(track, "agent.offline", now, {"boot": track.boot, "reason": reason, **extra}, batch, accepted)

    def _event(self, track: Track, kind: str, now: float, data: dict[str, Any], batch: Batch, accepted: list[_Accepted]) -> None:
        """A collector-observed event: vaulted like agent records, indexed with seq NULL."""
        doc = {"agent_id": track.agent_id, **record(kind, now, data)}
        accepted.append(_Accepted(None, f"{COLLECTOR_TOPIC}/{track.agent_id}", canonical_json(doc).decode(), now, [doc], track))

    def _collector_record(self, doc: dict[str, Any], received_at: float, payload: str, index: int) -> NewRecord:
        track = self.tracks[doc["agent_id"]]
        return NewRecord(track.agent_id, track.venue_id, None, track.boot, "collector", doc["kind"], doc["at"],
                         received_at, doc["data"], hashlib.sha256(payload.encode()).hexdigest(), index)

    # -- helpers -------------------------------------------------------------------------------

    def _index_rows(self, acc: _Accepted, index: int) -> list[NewRecord]:
        """Index rows for one vaulted envelope (or collector event)."""
        if acc.env is None:
            return [self._collector_record(acc.records[0], acc.received_at, acc.payload, index)]
        t = acc.agent
        for r in acc.records:
            t.add(r["seq"])  # idempotent here; needed when re-indexing from the vault
        return [
            NewRecord(t.agent_id, t.venue_id, r["seq"], acc.env.boot, acc.env.stream, r["kind"], float(r["at"]),
                      acc.received_at, _indexed_data(r), _digest(r), index)
            for r in acc.records
        ]

    def _commit(self, batch: Batch) -> None:
        """Commit to the index; while the database is unreachable, wait and retry.

        The batch is already in the vault, and nothing is acknowledged before this returns, so
        holding here loses nothing: the broker keeps the unacknowledged messages.
        """
        delay = 0.5
        while True:
            try:
                self.store.commit(batch)
                return
            except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
                log.error("database unreachable (%s); holding acks, retrying in %.0fs", exc.orig, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _ack(self, track: Track) -> Outgoing:
        """A signed ack: the contiguous watermark and the holes to resend."""
        data = {"acked": track.acked, "missing": track.missing()[:MAX_MISSING_RANGES]}
        env = Envelope(track.agent_id, "collector", track.acked, round(self.clock(), 3), "ack",
                       (record("ack", self.clock(), data),)).signed(self.key)
        return topics.topic(track.agent_id, "ack"), env.encode(), False

    def _dead(self, batch: Batch, msg: Message, reason: str, detail: str) -> None:
        self.counters["dead_letters"] += 1
        agent_id = msg.topic.split("/")[2][:64] if msg.topic.count("/") == 3 else None
        log.warning("dead letter from %s: %s: %s", msg.topic, reason, detail)
        batch.dead_letters.append(DeadLetter(msg.received_at, msg.topic, agent_id, reason, detail, msg.payload))


def _indexed_data(rec: dict[str, Any]) -> dict[str, Any]:
    """What the records index keeps of a record: log lines go to their own table, so a
    ``log.lines`` record keeps only where they came from (the vault keeps the whole)."""
    if rec["kind"] != LOG_LINES:
        return rec["data"]
    d = rec["data"]
    lines = d.get("lines") or []
    return {k: d.get(k) for k in ("source", "type", "path", "file_key", "end")} | {
        "first": lines[0][0] if lines else None, "count": len(lines)}


def log_line_rows(track: Track, rec: dict[str, Any], received_at: float) -> list[dict[str, Any]]:
    """One row per shipped line of a ``log.lines`` record; a malformed line is skipped, not fatal."""
    d = rec["data"]
    base = {"agent_id": track.agent_id, "venue_id": track.venue_id, "file_key": str(d.get("file_key", ""))[:120],
            "source": str(d.get("source", ""))[:100], "type": str(d.get("type", ""))[:20],
            "path": str(d.get("path", ""))[:1000], "seq": rec["seq"], "received_at": received_at}
    rows = []
    for item in d.get("lines") or []:
        if isinstance(item, list) and len(item) == 2 and isinstance(item[0], int) and isinstance(item[1], str):
            rows.append({**base, "offset": item[0], "text": item[1]})
    return rows


def _digest(rec: dict[str, Any]) -> str:
    """Content hash of one record, to tell an honest resend from a rewrite."""
    return hashlib.sha256(canonical_json(rec)).hexdigest()
