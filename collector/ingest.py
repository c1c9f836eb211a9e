"""Ingest: verify everything agents publish, vault it, index it, acknowledge it.

Checks, in order: topic, size, JSON and schema, version, that the envelope's ``agent_id`` is the
topic's (the broker identity), that the agent is registered and not revoked, the Ed25519
signature, then the seq. Anything refused becomes a dead letter with its reason; nothing here
raises out of :meth:`Ingestor.handle`, so one bad message never stops the stream.

Accepted envelopes go to the vault (fsynced) before the SQL index, and the agent is acked only
after both: an ack means durable.

Sequencing runs under the row locks of the batch's agents (PostgreSQL), with each agent's ledger
reloaded when another collector of a cluster wrote it since: any collector may receive any of an
agent's messages, in any order, so the ledger in the row is the one truth (deploy/scale-out.md §3).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import sqlalchemy as sa
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
    leaf: int | None = None  # already in the vault at this leaf (indexing the vault's tail)


#: Work done under the agents' row locks: fills the round's batch and what to vault.
Work = Callable[[sa.Connection, Batch, list[_Accepted]], None]


class Ingestor:
    """The ingest logic, independent of MQTT (the service feeds it; tests and benches too).

    Args:
        store: the SQL index and registry.
        vault: the append-only record.
        key: the collector's signing key, for acks.
        deadline_factor: an agent is offline after this many missed heartbeat intervals.
        gap_grace: seconds a hole may last before it is reported as ``seq.gap``.
        max_clock_skew: seconds of agent clock offset reported as ``agent.clock_skew``.
        vault_id: the name of ``vault``, which index rows refer to (one per collector of a cluster).
    """

    def __init__(self, store: Store, vault: Vault, key: Ed25519PrivateKey, *, deadline_factor: float = 3.0,
                 gap_grace: float = 30.0, max_clock_skew: float = 2.0, clock: Callable[[], float] = time.time,
                 vault_id: str = "main") -> None:
        self.store = store
        self.vault = vault
        self.vault_id = vault_id
        # SQLite has one writer, this collector: its copies of the ledgers are always current.
        self.shared = store.engine.dialect.name != "sqlite"
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

    def load(self, host: str = "") -> None:
        """Load the registry and ledgers from the store, then index what the vault has beyond it."""
        self.refresh_registry(force=True)
        self._reindex_vault_tail(self.store.claim_vault(self.vault_id, host))

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
                track = self.tracks[row.id] = Track(row.id, row.venue_id, key, row.revoked)
                track.load(row)
            else:
                track.key, track.revoked, track.venue_id = key, row.revoked, row.venue_id

    def _reindex_vault_tail(self, indexed_upto: int, chunk: int = 500) -> None:
        """Index vault entries written before a crash but never indexed, through the locked path:
        a seq that another collector stored meanwhile (from the agent's resend) is not indexed twice."""
        if indexed_upto + 1 >= self.vault.size:
            return
        log.warning("indexing vault entries %d..%d that the store lacks", indexed_upto + 1, self.vault.size - 1)
        entries = self.vault.entries(indexed_upto + 1)
        while part := list(itertools.islice(entries, chunk)):
            docs = [(e, doc) for e, doc in ((e, json.loads(e.payload)) for e in part
                                            if e.topic.startswith((COLLECTOR_TOPIC + "/", topics.PREFIX + "/")))
                    if doc.get("agent_id") in self.tracks]  # not case notes or reports: sealed again if unindexed
            ids = {doc["agent_id"] for _, doc in docs}

            def work(conn: sa.Connection, batch: Batch, accepted: list[_Accepted]) -> None:
                for entry, doc in docs:
                    track = self.tracks[doc["agent_id"]]
                    if entry.topic.startswith(COLLECTOR_TOPIC + "/"):
                        accepted.append(_Accepted(None, entry.topic, entry.payload, entry.t, [doc], track, entry.i))
                        continue
                    env = decode(entry.payload.encode())
                    new = [r for r in env.records if not track.holds(r["seq"])]
                    if new:
                        accepted.append(_Accepted(env, entry.topic, entry.payload, entry.t, new, track, entry.i))
                batch.indexed = (self.vault_id, part[-1].i)

            self._locked(ids, work)

    # -- the stream ----------------------------------------------------------------------------

    def handle(self, messages: Iterable[Message]) -> list[Outgoing]:
        """Process a batch; return the acks to publish once this returns."""
        refused = Batch()
        checked: list[tuple[Message, Envelope, Track]] = []
        for msg in messages:
            try:
                checked.append(self._verify(msg))
            except Exception as exc:  # noqa: BLE001 - one bad message never stops the stream
                self._refuse(refused, msg, exc)
        ack_for: set[str] = set()

        def work(conn: sa.Connection, batch: Batch, accepted: list[_Accepted]) -> None:
            ack_for.clear()
            for msg, env, track in checked:
                try:
                    if self._route(conn, msg, env, track, batch, accepted):
                        ack_for.add(track.agent_id)
                except Exception as exc:  # noqa: BLE001
                    self._refuse(batch, msg, exc)

        self._locked({t.agent_id for _, _, t in checked}, work, refused.dead_letters)
        return [self._ack(self.tracks[a]) for a in sorted(ack_for)]

    def _refuse(self, batch: Batch, msg: Message, exc: Exception) -> None:
        """A dead letter with the reason; an unexpected exception is a bug, kept as evidence."""
        if isinstance(exc, ProtocolError):
            self._dead(batch, msg, exc.reason, exc.detail)
        else:
            log.error("ingest failed on a message from %s", msg.topic, exc_info=exc)
            self._dead(batch, msg, "internal_error", f"{type(exc).__name__}: {exc}")

    def _verify(self, msg: Message) -> tuple[Message, Envelope, Track]:
        """Topic, schema, identity, registration and signature: everything that needs no lock
        (the signature is most of ingest's CPU, so it is checked before the rows are locked)."""
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
        return msg, env, track

    def _route(self, conn: sa.Connection, msg: Message, env: Envelope, track: Track, batch: Batch,
               accepted: list[_Accepted]) -> bool:
        """Sequence one verified message by its stream; return True when the agent is to be acked."""
        if env.stream in topics.SEQUENCED_STREAMS:
            self._sequenced(conn, msg, env, track, accepted)
            return True
        if env.stream == "hb":
            return self._heartbeat(env, track, msg.received_at, batch, accepted)
        self._state(env, track, msg.received_at, batch, accepted)
        return True

    def _sequenced(self, conn: sa.Connection, msg: Message, env: Envelope, track: Track, accepted: list[_Accepted]) -> None:
        """Keep the records not yet held; refuse an envelope that rewrites a held seq."""
        held = [r for r in env.records if track.holds(r["seq"])]
        if held:
            staged = {r["seq"]: _digest(r) for a in accepted if a.agent is track for r in a.records}
            stored = self.store.digests(conn, track.agent_id, [r["seq"] for r in held if r["seq"] not in staged])
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
        batch.update_agent(track.agent_id, last_seen=now, outbox_depth=int(data.get("outbox_depth", 0)), clock_offset=round(offset, 3))
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
            batch.update_agent(track.agent_id, last_seen=now)
        elif rec["kind"] == "death":
            if env.boot == track.boot and track.online:
                self._set_offline(track, "last_will", now, batch, accepted)
            else:
                log.debug("ignoring the Last Will of %s boot %s (current boot %s)", track.agent_id, env.boot, track.boot)
        else:
            raise ProtocolError("bad_schema", f"state record kind {rec['kind']!r} is not birth or death")

    # -- periodic ------------------------------------------------------------------------------

    def tick(self) -> list[Outgoing]:
        """Time-driven work, for one collector of a cluster (the leader): missed heartbeats, holes
        that outlived the grace period, and configs to publish; returns the messages to publish."""
        now = self.clock()
        due = [a for a in self.store.agents_due(now, self.deadline_factor) if a in self.tracks]
        if due:
            self._locked(set(due), lambda _conn, batch, accepted: self._sweep(due, now, batch, accepted))
        return self.configs.due(now)

    def _sweep(self, agent_ids: list[str], now: float, batch: Batch, accepted: list[_Accepted]) -> None:
        for track in (self.tracks[a] for a in agent_ids):
            since = max(track.last_heartbeat, self.started)
            if track.online and now - since > self.deadline_factor * track.heartbeat_interval:
                self._set_offline(track, "heartbeat_timeout", now, batch, accepted, last_heartbeat=track.last_heartbeat)
            self._report_gaps(track, now, batch, accepted)

    def _locked(self, agent_ids: set[str], work: Work, refused: Iterable[DeadLetter] = ()) -> None:
        """Run ``work`` on current ledgers under the agents' row locks, then vault (fsynced) and
        index what it accepted, in one transaction.

        While the database is unreachable this waits and starts the round again from the rows:
        nothing is acknowledged before it returns, so the broker keeps the messages meanwhile.
        A round cut short may leave its leaves in the vault unindexed; the retry vaults them again.
        """
        delay = 0.5
        while True:
            batch, accepted = Batch(dead_letters=list(refused)), []
            try:
                with self.store.engine.begin() as conn:
                    if self.shared and agent_ids:
                        for row in self.store.lock_agents(conn, sorted(agent_ids)):
                            track = self.tracks[row.id]
                            if track.version != row.ledger_version:
                                track.load(row)
                    work(conn, batch, accepted)
                    versions = self._persist(conn, batch, accepted)
                for agent_id, version in versions.items():
                    self.tracks[agent_id].version = version
                self.counters["accepted"] += sum(len(a.records) for a in accepted if a.env is not None)
                return
            except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
                self._stale(agent_ids)
                log.error("database unreachable (%s); holding acks, retrying in %.0fs", exc.orig, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
            except BaseException:
                self._stale(agent_ids)
                raise

    def _stale(self, agent_ids: Iterable[str]) -> None:
        """Copies changed by a round that did not commit: reload them from the rows."""
        for agent_id in agent_ids:
            self.tracks[agent_id].version = None
        if not self.shared:  # no locked reload on SQLite: read the rows now
            for row in self.store.agents():
                if row.id in agent_ids:
                    self.tracks[row.id].load(row)

    def _persist(self, conn: sa.Connection, batch: Batch, accepted: list[_Accepted]) -> dict[str, int]:
        """Vault (fsynced) what is new, then index it and write the touched ledgers; return their
        new versions (valid once the transaction commits)."""
        fresh = [a for a in accepted if a.leaf is None]
        leaves = iter(self.vault.append([(a.received_at, a.topic, a.payload) for a in fresh]))
        versions: dict[str, int] = {}
        for acc in accepted:
            idx = acc.leaf if acc.leaf is not None else next(leaves)
            batch.records += self._index_rows(acc, idx)
            batch.indexed = (self.vault_id, max(idx, batch.indexed[1] if batch.indexed else -1))
            if acc.env is not None:
                batch.log_lines += [row for r in acc.records if r["kind"] == LOG_LINES
                                    for row in log_line_rows(acc.agent, r, acc.received_at)]
        for agent_id in {a.agent.agent_id for a in accepted} | set(batch.agents):
            track = self.tracks[agent_id]
            versions[agent_id] = (track.version or 0) + 1
            batch.update_agent(agent_id, **track.row_values(), ledger_version=versions[agent_id])
        if batch:
            self.store.commit(batch, conn)
        return versions

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
        self._event(track, "agent.online", now, {"boot": boot, "previous_boot": previous, "reason": reason}, batch, accepted)

    def _set_offline(self, track: Track, reason: str, now: float, batch: Batch, accepted: list[_Accepted], **extra: Any) -> None:
        track.online = False
        self._event(track, "agent.offline", now, {"boot": track.boot, "reason": reason, **extra}, batch, accepted)

    def _event(self, track: Track, kind: str, now: float, data: dict[str, Any], batch: Batch, accepted: list[_Accepted]) -> None:
        """A collector-observed event: vaulted like agent records, indexed with seq NULL."""
        doc = {"agent_id": track.agent_id, **record(kind, now, data)}
        accepted.append(_Accepted(None, f"{COLLECTOR_TOPIC}/{track.agent_id}", canonical_json(doc).decode(), now, [doc], track))

    def _collector_record(self, doc: dict[str, Any], received_at: float, payload: str, index: int) -> NewRecord:
        track = self.tracks[doc["agent_id"]]  # the agent's venue and boot of now, as when it was observed
        return NewRecord(track.agent_id, track.venue_id, None, track.boot, "collector", doc["kind"], doc["at"],
                         received_at, doc["data"], hashlib.sha256(payload.encode()).hexdigest(), index, self.vault_id)

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
                      acc.received_at, _indexed_data(r), _digest(r), index, self.vault_id)
            for r in acc.records
        ]

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
