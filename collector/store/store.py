"""The SQL store: the registry and an index of the vault, on SQLite or PostgreSQL.

Writes come from one thread (ingest) in one transaction per batch; pages read concurrently.
The vault is the truth: every indexed row names its ``vault_index`` so the index can be rebuilt.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from collector.store import schema
from protocol.inventory import Device, Inventory

#: Dead-letter payloads are kept up to this size; the hash always covers the whole payload.
DEAD_LETTER_KEEP_BYTES = 64 * 1024


@dataclass(frozen=True)
class AgentRow:
    """An enrolled agent as the registry knows it."""

    id: str
    venue_id: str
    public_key: str
    revoked: bool
    online: bool
    boot: str | None
    last_seen: float | None
    last_heartbeat: float | None
    heartbeat_interval: float | None
    outbox_depth: int | None
    clock_offset: float | None
    acked_seq: int
    above: list[int]
    gaps: dict[str, int]
    clock_skewed: bool
    ledger_version: int


@dataclass(frozen=True)
class NewRecord:
    """A record to index (an agent's, or the collector's own event with ``seq`` None)."""

    agent_id: str
    venue_id: str
    seq: int | None
    boot: str | None
    stream: str
    kind: str
    at: float
    received_at: float
    data: dict[str, Any]
    digest: str
    vault_index: int
    vault_id: str = "main"


@dataclass(frozen=True)
class DeadLetter:
    """A message that was refused, and why."""

    received_at: float
    topic: str
    agent_id: str | None
    reason: str
    detail: str
    payload: bytes


@dataclass
class Batch:
    """Everything one ingest round writes, committed in one transaction."""

    records: list[NewRecord] = field(default_factory=list)
    log_lines: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)
    indexed: tuple[str, int] | None = None  # (vault id, leaf): the vault is indexed up to this leaf

    def update_agent(self, agent_id: str, **values: Any) -> None:
        """Merge column updates for one agent."""
        self.agents.setdefault(agent_id, {}).update(values)

    def __bool__(self) -> bool:
        return bool(self.records or self.log_lines or self.dead_letters or self.agents or self.indexed)


class Store:
    """Registry and index on one SQLAlchemy engine.

    Args:
        url: a SQLAlchemy URL, e.g. ``sqlite:///data/index.sqlite3`` or
            ``postgresql+psycopg://127.0.0.1/test``.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _engine(url)

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def close(self) -> None:
        """Release pooled connections."""
        self.engine.dispose()

    # -- registry ------------------------------------------------------------------------------

    def add_venue(self, venue_id: str, name: str | None = None) -> None:
        """Create a venue if it does not exist."""
        with self.engine.begin() as conn:
            if conn.execute(sa.select(schema.venues.c.id).where(schema.venues.c.id == venue_id)).first() is None:
                conn.execute(schema.venues.insert().values(id=venue_id, name=name or venue_id, created_at=time.time()))

    def enroll_agent(self, agent_id: str, venue_id: str, public_key: str) -> None:
        """Register (or re-key) an agent; its venue must exist."""
        values = dict(venue_id=venue_id, public_key=public_key, enrolled_at=time.time(), revoked=False)
        with self.engine.begin() as conn:
            if conn.execute(sa.select(schema.agents.c.id).where(schema.agents.c.id == agent_id)).first() is None:
                conn.execute(schema.agents.insert().values(id=agent_id, online=False, acked_seq=0, **values))
            else:
                conn.execute(schema.agents.update().where(schema.agents.c.id == agent_id).values(**values))

    def agents(self) -> list[AgentRow]:
        """All enrolled agents."""
        cols = [getattr(schema.agents.c, f) for f in AgentRow.__dataclass_fields__]
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(*cols).order_by(schema.agents.c.id)).all()
        return [AgentRow(*r) for r in rows]

    def venues(self) -> list[dict[str, Any]]:
        """All venues."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(schema.venues).order_by(schema.venues.c.id)).mappings().all()
        return [dict(r) for r in rows]

    # -- inventory -----------------------------------------------------------------------------

    def replace_inventory(self, venue_id: str, devices: Iterable[Device]) -> int:
        """Make ``devices`` the venue's whole inventory; return the new version (old ones are superseded)."""
        d, v = schema.devices, schema.venues
        with self.engine.begin() as conn:
            conn.execute(d.delete().where(d.c.venue_id == venue_id))
            rows = [{"venue_id": venue_id, **dev.to_json()} for dev in devices]
            if rows:
                conn.execute(d.insert(), rows)
            conn.execute(v.update().where(v.c.id == venue_id).values(inventory_version=v.c.inventory_version + 1))
            return int(conn.execute(sa.select(v.c.inventory_version).where(v.c.id == venue_id)).scalar_one())

    def inventory(self, venue_id: str) -> Inventory:
        """The venue's current inventory."""
        d, v = schema.devices, schema.venues
        with self.engine.connect() as conn:
            version = conn.execute(sa.select(v.c.inventory_version).where(v.c.id == venue_id)).scalar_one()
            rows = conn.execute(sa.select(d.c.mac, d.c.ip, d.c.role, d.c.room, d.c.name, d.c.vendor, d.c.stream,
                                          d.c.http_port, d.c.channel)
                                .where(d.c.venue_id == venue_id).order_by(d.c.mac)).all()
        return Inventory(venue_id, int(version), tuple(Device(*r) for r in rows))

    def inventory_versions(self) -> dict[str, int]:
        """Inventory version of every venue."""
        v = schema.venues.c
        with self.engine.connect() as conn:
            return {vid: int(ver) for vid, ver in conn.execute(sa.select(v.id, v.inventory_version)).all()}

    # -- ingest --------------------------------------------------------------------------------

    def lock_agents(self, conn: sa.Connection, agent_ids: list[str]) -> list[AgentRow]:
        """The agents' rows, locked until ``conn``'s transaction ends (PostgreSQL; SQLite has one
        writer anyway). Locked in id order, so two collectors' batches never deadlock."""
        cols = [getattr(schema.agents.c, f) for f in AgentRow.__dataclass_fields__]
        q = sa.select(*cols).where(schema.agents.c.id.in_(sorted(agent_ids))).order_by(schema.agents.c.id)
        return [AgentRow(*r) for r in conn.execute(q.with_for_update())]

    def agents_due(self, now: float, deadline_factor: float) -> list[str]:
        """Agents the time-driven sweep must look at: online but silent past their heartbeat
        deadline, or with a hole in their seqs (open or reported)."""
        a = schema.agents.c
        silent = sa.and_(a.online, a.last_heartbeat < now - deadline_factor * a.heartbeat_interval)
        holes = sa.or_(sa.cast(a.above, sa.Text) != "[]", sa.cast(a.gaps, sa.Text) != "{}")
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(a.id).where(~a.revoked, sa.or_(silent, holes))).scalars())

    def digests(self, conn: sa.Connection, agent_id: str, seqs: Iterable[int]) -> dict[int, str]:
        """Stored digests of some of an agent's seqs, to tell a resend from a forgery."""
        r = schema.records.c
        rows = conn.execute(sa.select(r.seq, r.digest).where(r.agent_id == agent_id, r.seq.in_(list(seqs)))).all()
        return {s: d for s, d in rows}

    def claim_vault(self, vault_id: str, host: str) -> int:
        """Register this collector's vault (or find it again); return the last leaf indexed (-1: none).

        Two collectors writing one vault id would interleave two Merkle logs under one name, so a
        vault id held by another host is refused.
        """
        v = schema.vaults.c
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(v.host, v.indexed_upto).where(v.id == vault_id).with_for_update()).first()
            if row is None:
                conn.execute(schema.vaults.insert().values(id=vault_id, host=host, opened_at=time.time(), indexed_upto=-1))
                return -1
            if row.host and row.host != host:
                raise VaultClaimed(vault_id, row.host, host)
            if not row.host:
                conn.execute(schema.vaults.update().where(v.id == vault_id).values(host=host))
            return int(row.indexed_upto)

    def commit(self, batch: Batch, conn: sa.Connection | None = None) -> None:
        """Write one ingest round atomically (in ``conn``'s transaction when given)."""
        if conn is None:
            with self.engine.begin() as own:
                self.commit(batch, own)
            return
        if batch.records:
            conn.execute(schema.records.insert(), [r.__dict__ for r in batch.records])
        if batch.log_lines:
            fresh = _new_lines(conn, batch.log_lines)
            if fresh:
                conn.execute(schema.log_lines.insert(), fresh)
        if batch.dead_letters:
            conn.execute(schema.dead_letters.insert(), [_dead_row(d) for d in batch.dead_letters])
        for stmt, rows in _agent_updates(batch.agents):
            conn.execute(stmt, rows)
        if batch.indexed is not None:
            v = schema.vaults
            vault_id, leaf = batch.indexed
            conn.execute(v.update().where(v.c.id == vault_id, v.c.indexed_upto < leaf).values(indexed_upto=leaf))

    # -- queries for pages and tests -----------------------------------------------------------

    def latest_records(self, limit: int = 50, exclude_stream: str | None = None) -> list[dict[str, Any]]:
        """Newest indexed records first (optionally without one stream, e.g. shipped logs)."""
        r = schema.records
        q = sa.select(r).order_by(r.c.received_at.desc(), r.c.id.desc()).limit(limit)
        if exclude_stream:
            q = q.where(r.c.stream != exclude_stream)
        with self.engine.connect() as conn:
            return [dict(m) for m in conn.execute(q).mappings().all()]

    def record_seqs(self, agent_id: str) -> list[int]:
        """Every seq stored for an agent, in order (duplicates would show twice)."""
        r = schema.records.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(r.seq).where(r.agent_id == agent_id, r.seq.is_not(None)).order_by(r.seq)).all()
        return [row[0] for row in rows]

    def records_of(self, agent_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        """An agent's records (collector events included), oldest first."""
        r = schema.records
        q = sa.select(r).where(r.c.agent_id == agent_id).order_by(r.c.id)
        if kind:
            q = q.where(r.c.kind == kind)
        with self.engine.connect() as conn:
            return [dict(m) for m in conn.execute(q).mappings().all()]

    def log_lines(self, agent_id: str, file_key: str | None = None) -> list[dict[str, Any]]:
        """Stored log lines of an agent (one file, or all), in file and offset order."""
        ll = schema.log_lines
        q = sa.select(ll).where(ll.c.agent_id == agent_id).order_by(ll.c.file_key, ll.c.offset)
        if file_key is not None:
            q = q.where(ll.c.file_key == file_key)
        with self.engine.connect() as conn:
            return [dict(m) for m in conn.execute(q).mappings().all()]

    def dead_letters(self) -> list[dict[str, Any]]:
        """Every dead letter, oldest first."""
        with self.engine.connect() as conn:
            return [dict(m) for m in conn.execute(sa.select(schema.dead_letters).order_by(schema.dead_letters.c.id)).mappings().all()]

    def dead_letter_counts(self) -> dict[str, int]:
        """The dead-letter counter per reason."""
        d = schema.dead_letters.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(d.reason, sa.func.count()).group_by(d.reason)).all()
        return {reason: n for reason, n in rows}

    def record_vault_verification(self, **run: Any) -> None:
        """One ``vault verify`` run (see ``schema.vault_verifications``), so the admin page can show it."""
        with self.engine.begin() as conn:
            conn.execute(schema.vault_verifications.insert().values(**run))

    def last_vault_verification(self) -> dict[str, Any] | None:
        """The newest ``vault verify`` run, or None when it was never run against this store."""
        v = schema.vault_verifications.c
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(schema.vault_verifications).order_by(v.finished_at.desc(), v.id.desc())
                               .limit(1)).mappings().first()
        return dict(row) if row else None


class VaultClaimed(RuntimeError):
    """A vault id already used by another collector."""

    def __init__(self, vault_id: str, holder: str, host: str) -> None:
        self.vault_id, self.holder, self.host = vault_id, holder, host
        super().__init__(f"vault id {vault_id!r} is already used by the collector at {holder}; give this collector "
                         f"({host}) its own [vault] id (or [cluster] node_id). If that collector moved here, "
                         f"UPDATE vaults SET host = '' WHERE id = '{vault_id}' once.")


def insert_with_conflicts(conn: sa.Connection, table: sa.Table) -> Any:
    """``INSERT`` of the connection's dialect, which has ``on_conflict_do_nothing`` / ``_do_update``
    (the store runs on SQLite or PostgreSQL; both spell ON CONFLICT alike)."""
    return (sqlite if conn.dialect.name == "sqlite" else postgresql).insert(table)


def _new_lines(conn: sa.Connection, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Lines not yet stored: shipping is at least once, so a resent line must not count twice."""
    groups: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for line in lines:
        groups.setdefault((line["agent_id"], line["file_key"]), {}).setdefault(line["offset"], line)
    out = []
    ll = schema.log_lines.c
    for (agent_id, file_key), by_offset in groups.items():
        held = conn.execute(sa.select(ll.offset).where(
            ll.agent_id == agent_id, ll.file_key == file_key, ll.offset.between(min(by_offset), max(by_offset)))).scalars()
        held_set = set(held)
        out += [line for off, line in sorted(by_offset.items()) if off not in held_set]
    return out


def _agent_updates(updates: dict[str, dict[str, Any]]) -> list[tuple[sa.Update, list[dict[str, Any]]]]:
    """Per-agent updates grouped by the columns they set, one executemany each: hundreds of
    single UPDATEs per batch were a third of the commit time."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for agent_id, values in updates.items():
        groups.setdefault(tuple(sorted(values)), []).append({"p_id": agent_id, **{f"p_{k}": v for k, v in values.items()}})
    a = schema.agents
    return [
        (a.update().where(a.c.id == sa.bindparam("p_id")).values({c: sa.bindparam(f"p_{c}") for c in cols}), rows)
        for cols, rows in groups.items()
    ]


def _dead_row(d: DeadLetter) -> dict[str, Any]:
    return {
        "received_at": d.received_at, "topic": d.topic[:300], "agent_id": d.agent_id, "reason": d.reason,
        "detail": d.detail, "payload_size": len(d.payload), "payload_sha256": hashlib.sha256(d.payload).hexdigest(),
        "payload": d.payload[:DEAD_LETTER_KEEP_BYTES],
    }


def _engine(url: str) -> Engine:
    """An engine; SQLite gets WAL (pages read while ingest writes) and a busy timeout."""
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True)
    engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _rec: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")  # the vault, fsynced, is the durable copy
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    return engine
