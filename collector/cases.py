"""Cases in the store: what the rulebook opens and closes, what people do with them.

A case is the unit the authority judges: a venue broke a rule (a clause) during a stretch of time,
here is the evidence. The rulebook writes cases through :class:`StoreSink` inside its own
transaction; people act on them with :func:`act` (acknowledge with the venue's explanation,
confirm or dismiss with the authority's reason). Every change, by the rulebook or a person, is a
``case_actions`` row that the running collector seals into the vault (:func:`seal_actions`), so
who did what and when is part of the legal record.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from collector.config import NotifySection
from collector.rulebook import Condition, Span
from collector.rulefiles import Rule
from collector.store import Store
from collector.store import schema
from collector.vault import Vault
from collector.vault import frames
from protocol.envelope import canonical_json

#: Vault topic of case actions (a signed vault note each; ``vault verify`` checks the signature).
CASE_TOPIC = frames.VAULT_TOPIC + "case"
ACTIONS = {
    # action: (role that may take it, statuses it may start from, status after, reason required)
    "acknowledge": ("venue", ("new",), "acknowledged", True),
    "confirm": ("authority", ("new", "acknowledged"), "confirmed", True),
    "dismiss": ("authority", ("new", "acknowledged"), "dismissed", True),
}


class CaseError(ValueError):
    """An action that cannot be taken (unknown case, wrong role or status, no reason)."""


@dataclass
class StoreSink:
    """Writes the rulebook's case changes through ``conn`` (the rulebook's transaction)."""

    conn: sa.Connection
    notify: NotifySection | None
    now: float

    def open(self, cond: Condition, rule: Rule, span: Span, evidence: list[list[Any]]) -> int:
        clause = {**rule.clause.model_dump(), "also": [c.model_dump() for c in rule.also]}
        row = {"venue_id": cond.venue_id, "rule_id": rule.id, "title": rule.title, "clause": clause,
               "severity": span.severity, "subject": cond.subject, "room": cond.room, "session_id": span.session_id,
               "agent_id": cond.agent_id, "state": "open", "status": "new", "first_seen": span.start,
               "last_seen": max(span.start, cond.last_seen), "opened_at": span.start, "closed_at": None,
               "events": cond.events, "version": 1}
        case_id = int(self.conn.execute(schema.cases.insert().values(**row)).inserted_primary_key[0])
        self._evidence(case_id, evidence)
        self._action(case_id, "opened", span.start, {"severity": span.severity, "session_id": span.session_id,
                                                     "subject": cond.subject, "rule_file": rule.file.name})
        self._announce(case_id, "opened")
        return case_id

    def update(self, case_id: int, cond: Condition, evidence: list[list[Any]]) -> None:
        c = schema.cases.c
        self.conn.execute(schema.cases.update().where(c.id == case_id).values(
            last_seen=sa.func.max(c.last_seen, cond.last_seen) if self._sqlite else sa.func.greatest(c.last_seen, cond.last_seen),
            events=cond.events))
        self._evidence(case_id, evidence)

    def escalate(self, case_id: int, severity: str, at: float) -> None:
        self._change(case_id, {"severity": severity})
        self._action(case_id, "escalated", at, {"severity": severity})
        self._announce(case_id, "escalated")

    def affects(self, case_id: int, session_id: str) -> None:
        self._change(case_id, {"session_id": session_id})

    def close(self, case_id: int, at: float) -> None:
        self._change(case_id, {"state": "closed", "closed_at": at})
        self._action(case_id, "closed", at, {})
        self._announce(case_id, "closed")

    @property
    def _sqlite(self) -> bool:
        return self.conn.dialect.name == "sqlite"

    def _change(self, case_id: int, values: dict[str, Any]) -> None:
        c = schema.cases.c
        self.conn.execute(schema.cases.update().where(c.id == case_id).values(**values, version=c.version + 1))

    def _evidence(self, case_id: int, evidence: list[list[Any]]) -> None:
        if not evidence:
            return
        have = {r for (r,) in self.conn.execute(sa.select(schema.case_evidence.c.record_id).where(
            schema.case_evidence.c.case_id == case_id, schema.case_evidence.c.record_id.in_([e[0] for e in evidence])))}
        rows = [{"case_id": case_id, "record_id": rid, "vault_index": vi, "kind": kind, "at": at, "agent_id": agent,
                 "seq": seq} for rid, vi, kind, at, agent, seq in evidence if rid not in have]
        if rows:
            self.conn.execute(schema.case_evidence.insert(), rows)

    def _action(self, case_id: int, action: str, at: float, data: dict[str, Any]) -> None:
        record_action(self.conn, case_id, action, "rulebook", "rulebook", "", at, data)

    def _announce(self, case_id: int, change: str) -> None:
        if self.notify is None:
            return
        from collector import notify

        row = self.conn.execute(sa.select(schema.cases).where(schema.cases.c.id == case_id)).mappings().one()
        notify.enqueue(self.conn, dict(row), change, self.notify, self.now)


def record_action(conn: sa.Connection, case_id: int, action: str, actor: str, role: str, reason: str, at: float,
                  data: dict[str, Any]) -> int:
    """A ``case_actions`` row, to be sealed into the vault by the running collector."""
    res = conn.execute(schema.case_actions.insert().values(case_id=case_id, action=action, actor=actor, role=role,
                                                           reason=reason, at=at, data=data, vault_index=None))
    return int(res.inserted_primary_key[0])


def act(store: Store, case_id: int, action: str, actor: str, reason: str, now: float,
        notify_cfg: NotifySection | None = None) -> dict[str, Any]:
    """A person's action on a case; returns the case as it is now. Raises CaseError when not allowed."""
    if action not in ACTIONS:
        raise CaseError(f"unknown action {action!r}; one of: {', '.join(ACTIONS)}")
    role, starts, after, needs_reason = ACTIONS[action]
    if not actor.strip():
        raise CaseError("who acts must be named (--by)")
    if needs_reason and not reason.strip():
        raise CaseError(f"{action} needs a reason (--reason)")
    c = schema.cases.c
    with store.engine.begin() as conn:
        row = conn.execute(sa.select(schema.cases).where(c.id == case_id)).mappings().first()
        if row is None:
            raise CaseError(f"no case {case_id}")
        if row["status"] not in starts:
            raise CaseError(f"case {case_id} is {row['status']}; {action} applies to {', '.join(starts)} cases only")
        conn.execute(schema.cases.update().where(c.id == case_id).values(status=after, version=c.version + 1))
        record_action(conn, case_id, action, actor, role, reason, now, {"status_before": row["status"], "status": after})
        fresh = dict(conn.execute(sa.select(schema.cases).where(c.id == case_id)).mappings().one())
        if notify_cfg is not None:
            from collector import notify

            notify.enqueue(conn, fresh, {"acknowledge": "acknowledged", "confirm": "confirmed",
                                         "dismiss": "dismissed"}[action], notify_cfg, now)
    return fresh


def seal_actions(store: Store, vault: Vault, now: float, limit: int = 1000) -> int:
    """Write case actions not yet in the vault as signed vault notes; return how many.

    Runs in the collector's writer thread (the vault has one writer); actions taken by the CLI or
    the pages wait in the table until then.
    """
    a = schema.case_actions
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(a, schema.cases.c.venue_id, schema.cases.c.rule_id).join(
            schema.cases, schema.cases.c.id == a.c.case_id).where(a.c.vault_index.is_(None)).order_by(a.c.id).limit(limit)
        ).mappings().all()
    if not rows:
        return 0
    notes = []
    for r in rows:
        doc = {"kind": "case.action", "action_id": r["id"], "case_id": r["case_id"], "venue_id": r["venue_id"],
               "rule_id": r["rule_id"], "action": r["action"], "actor": r["actor"], "role": r["role"],
               "reason": r["reason"], "at": r["at"], "data": r["data"]}
        note = frames.sign_note(vault.key, doc) if vault.key is not None else {**doc, "key": "", "sig": ""}
        notes.append((now, CASE_TOPIC, canonical_json(note).decode()))
    indexes = vault.append(notes)
    with store.engine.begin() as conn:
        for r, idx in zip(rows, indexes):
            conn.execute(a.update().where(a.c.id == r["id"]).values(vault_index=idx))
    return len(rows)


# -- reading -------------------------------------------------------------------------------------

def cases(store: Store, venue_id: str | None = None, state: str | None = None, status: str | None = None,
          limit: int = 500) -> list[dict[str, Any]]:
    """Cases, newest first."""
    c = schema.cases.c
    q = sa.select(schema.cases).order_by(c.opened_at.desc(), c.id.desc()).limit(limit)
    for col, value in ((c.venue_id, venue_id), (c.state, state), (c.status, status)):
        if value is not None:
            q = q.where(col == value)
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]


def case_detail(store: Store, case_id: int) -> dict[str, Any]:
    """One case with its evidence and its actions (CaseError when there is none)."""
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(schema.cases).where(schema.cases.c.id == case_id)).mappings().first()
        if row is None:
            raise CaseError(f"no case {case_id}")
        e, a = schema.case_evidence, schema.case_actions
        evidence = [dict(r) for r in conn.execute(sa.select(e).where(e.c.case_id == case_id).order_by(e.c.at, e.c.record_id)).mappings()]
        actions = [dict(r) for r in conn.execute(sa.select(a).where(a.c.case_id == case_id).order_by(a.c.id)).mappings()]
        # By vault leaf, not record id: a rebuilt index numbers its records anew, the vault never does.
        r = schema.records.c
        leaves = sorted({x["vault_index"] for x in evidence})
        data = {(row.vault_index, row.kind, row.at): row.data for row in conn.execute(
            sa.select(r.vault_index, r.kind, r.at, r.data).where(r.vault_index.in_(leaves)))} if leaves else {}
    for x in evidence:
        x["data"] = data.get((x["vault_index"], x["kind"], x["at"]), {})
    return {**dict(row), "evidence": evidence, "actions": actions}


def annual_counts(store: Store, year: int | None = None, tz: str = "Asia/Shanghai") -> dict[str, dict[int, int]]:
    """Confirmed cases per venue and calendar year (by the time of the confirmation)."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(tz)
    a, c = schema.case_actions, schema.cases
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(c.c.venue_id, a.c.at).join(a, a.c.case_id == c.c.id).where(
            a.c.action == "confirm", c.c.status == "confirmed")).all()
    out: dict[str, dict[int, int]] = {}
    for venue_id, at in rows:
        y = dt.datetime.fromtimestamp(at, zone).year
        if year is None or y == year:
            out.setdefault(venue_id, {}).setdefault(y, 0)
            out[venue_id][y] += 1
    return out
