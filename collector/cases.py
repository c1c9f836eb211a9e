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
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from collector.config import NotifySection
from collector.rulebook import Condition, Span
from collector.rulefiles import Rule
from collector.store import Store, insert_with_conflicts
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
    """Writes the rulebook's case changes through ``conn`` (the rulebook's transaction).

    A step may open or touch cases for every one of thousands of events, so nothing is written
    one statement per change: a new case gets its id at once (the rulebook keeps it) from ids
    reserved in blocks, and every change is noted; :meth:`flush` then reads the existing cases the
    step touched in one query (locked on PostgreSQL against people's actions), replays the changes
    on them in order — each notice is a snapshot of its case at its own version — and writes new
    cases, changed cases, evidence, actions and notices with one statement each.
    """

    conn: sa.Connection
    notify: NotifySection | None
    now: float
    _new: dict[int, dict[str, Any]] = field(default_factory=dict)  # cases opened in this step, by id
    _changes: list[tuple[int, dict[str, Any], str]] = field(default_factory=list)  # (case, values, notice or "")
    _evidence: list[dict[str, Any]] = field(default_factory=list)
    _actions: list[dict[str, Any]] = field(default_factory=list)
    _ids: list[int] = field(default_factory=list)  # reserved case ids, next last
    _block: int = 1
    _top: int | None = None  # SQLite: the highest case id

    def open(self, cond: Condition, rule: Rule, span: Span, evidence: list[list[Any]]) -> int:
        clause = {**rule.clause.model_dump(), "also": [c.model_dump() for c in rule.also]}
        case_id = self._next_id()
        self._new[case_id] = {
            "id": case_id, "venue_id": cond.venue_id, "rule_id": rule.id, "title": rule.title, "clause": clause,
            "severity": span.severity, "subject": cond.subject, "room": cond.room, "session_id": span.session_id,
            "agent_id": cond.agent_id, "state": "open", "status": "new", "first_seen": span.start,
            "last_seen": max(span.start, cond.last_seen), "opened_at": span.start, "closed_at": None,
            "events": cond.events, "version": 1}
        self._changes.append((case_id, {}, "opened"))
        self._add_evidence(case_id, evidence)
        self._action(case_id, "opened", span.start, {"severity": span.severity, "session_id": span.session_id,
                                                     "subject": cond.subject, "rule_file": rule.file.name})
        return case_id

    def update(self, case_id: int, cond: Condition, evidence: list[list[Any]]) -> None:
        self._changes.append((case_id, {"last_seen": cond.last_seen, "events": cond.events}, ""))
        self._add_evidence(case_id, evidence)

    def escalate(self, case_id: int, severity: str, at: float) -> None:
        self._changes.append((case_id, {"severity": severity, "version": 1}, "escalated"))
        self._action(case_id, "escalated", at, {"severity": severity})

    def affects(self, case_id: int, session_id: str) -> None:
        self._changes.append((case_id, {"session_id": session_id, "version": 1}, ""))

    def close(self, case_id: int, at: float, withdrawn: bool = False) -> None:
        self._changes.append((case_id, {"state": "closed", "closed_at": at, "version": 1}, "closed"))
        # withdrawn: evidence that came late showed the stretch was never a case (see Rulebook._withdraw)
        self._action(case_id, "closed", at, {"withdrawn": True} if withdrawn else {})

    def flush(self) -> None:
        """Write what the step collected; call once, before the step's transaction commits."""
        rows = {**self._existing({cid for cid, _, _ in self._changes} - set(self._new)), **self._new}
        bumps: dict[int, int] = {}
        notices = []
        for cid, values, notice in self._changes:
            row = rows[cid]
            for name, value in values.items():
                if name == "version":
                    row["version"] += 1
                    bumps[cid] = bumps.get(cid, 0) + 1
                elif name == "last_seen":
                    row["last_seen"] = max(row["last_seen"], value)
                else:
                    row[name] = value
            if notice and self.notify is not None:
                notices.append((dict(row), notice))
        if self._new:
            self.conn.execute(schema.cases.insert(), list(self._new.values()))
        changed = [{"cid": cid, "bump": bumps.get(cid, 0), **{k: row[k] for k in _WRITTEN}}
                   for cid, row in sorted(rows.items()) if cid not in self._new]
        if changed:
            self.conn.execute(_UPDATE_CASE[self.conn.dialect.name == "sqlite"], changed)
        if self._evidence:
            # ON CONFLICT DO NOTHING: evidence re-sent after a restore is already there
            self.conn.execute(insert_with_conflicts(self.conn, schema.case_evidence).on_conflict_do_nothing(),
                              self._evidence)
        if self._actions:
            self.conn.execute(schema.case_actions.insert(), self._actions)
        if notices:
            from collector import notify

            for case, change in notices:
                notify.enqueue(self.conn, case, change, self.notify, self.now)
        self._new.clear()
        self._changes.clear()
        self._evidence.clear()
        self._actions.clear()

    def _existing(self, ids: set[int]) -> dict[int, dict[str, Any]]:
        """Cases opened in earlier steps, as stored (locked on PostgreSQL until the step commits)."""
        out: dict[int, dict[str, Any]] = {}
        ordered = sorted(ids)
        for i in range(0, len(ordered), 500):
            q = sa.select(schema.cases).where(schema.cases.c.id.in_(ordered[i:i + 500]))
            if self.conn.dialect.name == "postgresql":
                q = q.with_for_update()
            out.update((r["id"], dict(r)) for r in self.conn.execute(q).mappings())
        return out

    def _add_evidence(self, case_id: int, evidence: list[list[Any]]) -> None:
        # Conditions saved before clusters hold six fields: their leaves are in the vault "main".
        self._evidence += [{"case_id": case_id, "record_id": rid, "vault_index": vi, "kind": kind, "at": at,
                            "agent_id": agent, "seq": seq, "vault_id": vault_id[0] if vault_id else "main"}
                           for rid, vi, kind, at, agent, seq, *vault_id in evidence]

    def _action(self, case_id: int, action: str, at: float, data: dict[str, Any]) -> None:
        self._actions.append({"case_id": case_id, "action": action, "actor": "rulebook", "role": "rulebook",
                              "reason": "", "at": at, "data": data, "vault_index": None})

    def _next_id(self) -> int:
        """A case id, reserved from the sequence (PostgreSQL) in doubling blocks, or past the
        highest (SQLite, where the rulebook's transaction is the only writer of cases)."""
        if not self._ids:
            if self.conn.dialect.name == "postgresql":
                found = self.conn.execute(sa.text("SELECT nextval(pg_get_serial_sequence('cases', 'id')) "
                                                  "FROM generate_series(1, :n)"), {"n": self._block}).scalars()
                self._ids = sorted(found, reverse=True)
                self._block = min(self._block * 2, 1024)
            else:
                if self._top is None:
                    self._top = self.conn.execute(sa.select(sa.func.max(schema.cases.c.id))).scalar() or 0
                self._top += 1
                self._ids = [self._top]
        return self._ids.pop()


#: What the rulebook writes back to a case it touched; ``status`` is people's, and ``version``
#: moves by the step's own changes (so an action taken meanwhile is never undone).
_WRITTEN = ("severity", "session_id", "state", "closed_at", "last_seen", "events")
_UPDATE_CASE = {  # by "is it SQLite?": the larger of two values is max() there, greatest() elsewhere
    on_sqlite: schema.cases.update().where(schema.cases.c.id == sa.bindparam("cid")).values(
        {**{k: sa.bindparam(k) for k in _WRITTEN},
         "last_seen": (sa.func.max if on_sqlite else sa.func.greatest)(schema.cases.c.last_seen, sa.bindparam("last_seen")),
         "version": schema.cases.c.version + sa.bindparam("bump")})
    for on_sqlite in (True, False)}


def record_action(conn: sa.Connection, case_id: int, action: str, actor: str, role: str, reason: str, at: float,
                  data: dict[str, Any]) -> int:
    """A ``case_actions`` row, to be sealed into the vault by the running collector."""
    res = conn.execute(schema.case_actions.insert().values(case_id=case_id, action=action, actor=actor, role=role,
                                                           reason=reason, at=at, data=data, vault_index=None))
    return int(res.inserted_primary_key[0])


def act(store: Store, case_id: int, action: str, actor: str, reason: str, now: float,
        notify_cfg: NotifySection | None = None, *, role: str | None = None) -> dict[str, Any]:
    """A person's action on a case; returns the case as it is now. Raises CaseError when not allowed.
    ``role`` is the actor's real role for the record (the pages pass the user's: an authority admin
    may acknowledge); without it, the role the action belongs to."""
    if action not in ACTIONS:
        raise CaseError(f"unknown action {action!r}; one of: {', '.join(ACTIONS)}")
    usual_role, starts, after, needs_reason = ACTIONS[action]
    role = role or usual_role
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


def seal_actions(store: Store, vault: Vault, now: float, limit: int = 1000, vault_id: str = "main") -> int:
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
            conn.execute(a.update().where(a.c.id == r["id"]).values(vault_index=idx, vault_id=vault_id))
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
        data = {(row.vault_id, row.vault_index, row.kind, row.at): row.data for row in conn.execute(
            sa.select(r.vault_id, r.vault_index, r.kind, r.at, r.data).where(r.vault_index.in_(leaves)))} if leaves else {}
    for x in evidence:
        x["data"] = data.get((x["vault_id"], x["vault_index"], x["kind"], x["at"]), {})
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
