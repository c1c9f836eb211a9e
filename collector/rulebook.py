"""The rulebook: events in, case changes out, by the rule files in ``rules/``.

Each rule keeps one *condition* per venue and subject (the camera, the recorder's disk, the log
source, the agent...). A state rule's condition runs from a matching event to a ``cleared_by``
event for the same subject; a point rule's condition is a burst of matching events, no two
further apart than the rule's quiet time. A case is a stretch of a condition that

- belongs to a condition that lasted ``held.seconds`` (debounce: a camera down for 20 s is no
  case; one down for longer is a case from its first moment),
- lies inside one of the rule's periods when the rule applies ``only_during`` them
  (exam windows with lead and lag, from the schedule),
- lies outside the venue's approved maintenance windows (特殊情况),

with stretches closer than ``settle_seconds`` merged (flapping is one case). The severity is the
highest the stretch reaches: the rule's own outside its periods, the period's inside.

Everything is computed from event times and the calendar, never from when the collector happened
to look, so a replay of the same day gives the same cases; :meth:`Rulebook.advance` only tells the
engine how far time has moved, for stretches that open or close with no event (an exam window
opening on a camera that is still off).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from collector.eventkinds import ROOM_SCOPED, subject_fields
from collector.rulefiles import Match, Rule
from collector.rulewindows import Calendar

SEVERITY_RANK = {"notice": 1, "warning": 2, "violation": 3}
#: Evidence kept per condition; ``events`` still counts every one.
MAX_EVIDENCE = 200


@dataclass(frozen=True)
class Event:
    """An indexed event, as the rulebook reads it from the store."""

    record_id: int
    venue_id: str
    agent_id: str
    kind: str
    at: float
    data: dict[str, Any]
    vault_index: int
    seq: int | None = None
    vault_id: str = "main"  # whose vault holds the leaf (one per collector of a cluster)

    def evidence(self) -> list[Any]:
        return [self.record_id, self.vault_index, self.kind, self.at, self.agent_id, self.seq, self.vault_id]


@dataclass(frozen=True)
class Span:
    """A stretch of a condition that is (or was) a case."""

    start: float
    end: float
    severity: str
    session_id: str
    final: bool  # ended for good: the case closes at ``end``


@dataclass
class CaseRef:
    """The case opened for one span of a condition."""

    id: int
    severity: str
    closed: bool = False
    evidence_sent: int = 0  # how much of the condition's evidence the case already holds
    events_sent: int = 0  # the condition's event count the case last showed
    session_id: str = ""


@dataclass
class Condition:
    """One rule's working memory about one subject at one venue."""

    venue_id: str
    rule_id: int
    subject: str
    agent_id: str
    room: str
    since: float
    until: float | None = None
    last_seen: float = 0.0
    events: int = 0
    # Point rules: each event is judged at its own time (in a period? excused?) as it comes; the
    # applicable ones are summed up here, so a chatty burst costs no memory: [first, last, severity, session].
    hits: list[Any] | None = None
    evidence: list[list[Any]] = field(default_factory=list)
    cases: list[CaseRef] = field(default_factory=list)

    @property
    def key(self) -> str:
        return condition_key(self.venue_id, self.rule_id, self.subject)

    def add(self, event: Event) -> None:
        self.events += 1
        self.last_seen = max(self.last_seen, event.at)
        if len(self.evidence) < MAX_EVIDENCE:
            self.evidence.append(event.evidence())

    def to_json(self) -> dict[str, Any]:
        """The condition as JSON-ready data, sharing its lists (saved at once, so no copy is needed:
        ``asdict`` deep-copied up to ``MAX_EVIDENCE`` entries per condition on every save)."""
        return {"venue_id": self.venue_id, "rule_id": self.rule_id, "subject": self.subject, "agent_id": self.agent_id,
                "room": self.room, "since": self.since, "until": self.until, "last_seen": self.last_seen,
                "events": self.events, "hits": self.hits, "evidence": self.evidence,
                "cases": [vars(c) for c in self.cases]}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Condition:
        return cls(**{**doc, "cases": [CaseRef(**c) for c in doc["cases"]]})


class CaseSink(Protocol):
    """Where case changes go (collector/cases.py keeps them in the store)."""

    def open(self, cond: Condition, rule: Rule, span: Span, evidence: list[list[Any]]) -> int: ...
    def update(self, case_id: int, cond: Condition, evidence: list[list[Any]]) -> None: ...
    def escalate(self, case_id: int, severity: str, at: float) -> None: ...
    def affects(self, case_id: int, session_id: str) -> None: ...
    def close(self, case_id: int, at: float, withdrawn: bool = False) -> None: ...


def condition_key(venue_id: str, rule_id: int, subject: str) -> str:
    return f"{venue_id}|{rule_id}|{subject}"


def subject_of(event: Event, fields: tuple[str, ...] | None = None) -> str:
    """What the event is about, as text: ``mac=…`` or, for agent-wide kinds, ``agent=…``."""
    names = subject_fields(event.kind) if fields is None else fields
    if not names:
        return f"agent={event.agent_id}"
    return "|".join(f"{n}={event.data.get(n, '')}" for n in names)


def matches(m: Match, data: dict[str, Any]) -> bool:
    """All of an entry's filters hold (README: eq, ne, in, not_in, exists)."""
    return all(_holds(flt, name in data, data.get(name)) for name, flt in m.where.items())


def _holds(flt: Any, present: bool, value: Any) -> bool:
    if not hasattr(flt, "model_fields_set"):
        return present and value == flt  # a bare value means equal
    op = next(iter(flt.model_fields_set))
    if op == "eq":
        return present and value == flt.eq
    if op == "ne":
        return not present or value != flt.ne
    if op == "in_":
        return present and value in flt.in_
    if op == "not_in":
        return not present or value not in flt.not_in
    return present == flt.exists


def _stronger(a: str, b: str) -> str:
    return a if SEVERITY_RANK[a] >= SEVERITY_RANK[b] else b


class Rulebook:
    """Conditions and their cases for one rule set; fed events in order, told the time."""

    def __init__(self, rules: list[Rule], calendar: Calendar) -> None:
        self.calendar = calendar
        self.conditions: dict[str, Condition] = {}
        self.counts: dict[str, list[float]] = {}  # count rules: recent event times per venue, rule, group
        self.absent_seen: dict[str, float] = {}  # absent rules: last awaited event per venue, rule, agent
        self.dirty: set[str] = set()  # condition keys changed since the last save
        self.removed: set[str] = set()
        self.aux_dirty = False  # counts or absent_seen changed since the last save
        self.load_rules(rules)

    # -- rules -----------------------------------------------------------------------------------

    def load_rules(self, rules: list[Rule]) -> None:
        """Index rules by the kinds they react to (a reload keeps conditions of rules that remain)."""
        self.rules = {r.id: r for r in rules}
        self.absent_rules = [r for r in rules if r.absent is not None]
        self.openers: dict[str, list[tuple[Rule, Match]]] = {}
        self.clearers: dict[str, list[Rule]] = {}
        for r in rules:
            for m in r.match:
                self.openers.setdefault(m.event, []).append((r, m))
            for kind in r.cleared_by + (r.absent.events if r.absent else []):
                self.clearers.setdefault(kind, []).append(r)
        self.kinds = frozenset(self.openers) | frozenset(self.clearers)  # event kinds some rule reads
        for key in [k for k, c in self.conditions.items() if c.rule_id not in self.rules]:
            self._drop(key)

    # -- events ----------------------------------------------------------------------------------

    def feed(self, event: Event, sink: CaseSink) -> None:
        """Apply one event: clear conditions it ends, then start or extend those it matches."""
        for rule in self.clearers.get(event.kind, ()):
            if rule.absent is not None:
                self._awaited(rule, event, sink)
            else:
                self._clear(rule, event, sink)
        seen: set[int] = set()
        for rule, m in self.openers.get(event.kind, ()):
            if rule.id in seen or not matches(m, event.data):
                continue
            seen.add(rule.id)
            if rule.count is not None:
                self._counted(rule, event, sink)
            elif rule.is_state:
                self._state_event(rule, event, sink)
            else:
                self._point_event(rule, event, subject_of(event), sink)

    def _clear(self, rule: Rule, event: Event, sink: CaseSink) -> None:
        cond = self.conditions.get(condition_key(event.venue_id, rule.id, subject_of(event)))
        if cond is None or cond.until is not None:
            return
        cond.until = max(event.at, cond.since)
        cond.add(event)
        self._settle(cond, rule, event.at, sink)

    def _state_event(self, rule: Rule, event: Event, sink: CaseSink) -> None:
        key = condition_key(event.venue_id, rule.id, subject_of(event))
        cond = self.conditions.get(key)
        if cond is not None and cond.until is not None and event.at - cond.until < rule.settle:
            cond.until = None  # back within the settle time: the same episode goes on (flapping)
        elif cond is None or cond.until is not None:
            if cond is not None:
                self._settle(cond, rule, max(event.at, cond.until + rule.settle), sink)  # finish the old one
            cond = self._new(rule, event, key)
        cond.add(event)
        self._settle(cond, rule, event.at, sink)

    def _point_event(self, rule: Rule, event: Event, subject: str, sink: CaseSink) -> None:
        key = condition_key(event.venue_id, rule.id, subject)
        cond = self.conditions.get(key)
        if cond is not None and event.at - cond.last_seen >= rule.settle:
            self._settle(cond, rule, cond.last_seen + rule.settle, sink)  # the earlier burst is over
            cond = self.conditions.get(key)
        if cond is None:
            cond = self._new(rule, event, key, subject)
        severity, session = self._at(cond, rule, event.at)
        if severity is not None:
            h = cond.hits
            cond.hits = [event.at, event.at, severity, session] if h is None else \
                [h[0], max(h[1], event.at), _stronger(h[2], severity), h[3] or session]
        cond.add(event)
        self._settle(cond, rule, event.at, sink)

    def _counted(self, rule: Rule, event: Event, sink: CaseSink) -> None:
        """Wazuh frequency/timeframe: a point event on the at_least-th event within the period."""
        assert rule.count is not None
        group = "|".join(f"{n}={event.data.get(n, '')}" for n in rule.count.same) or f"agent={event.agent_id}"
        key = condition_key(event.venue_id, rule.id, group)
        times = [t for t in self.counts.get(key, []) if event.at - t < rule.count.within_seconds] + [event.at]
        self.counts[key] = times
        self.aux_dirty = True
        if len(times) >= rule.count.at_least:
            self._point_event(rule, event, group, sink)

    def _awaited(self, rule: Rule, event: Event, sink: CaseSink) -> None:
        """An awaited event came: the silence (if any) ends, the deadline starts again."""
        key = condition_key(event.venue_id, rule.id, f"agent={event.agent_id}")
        self.absent_seen[key] = max(self.absent_seen.get(key, event.at), event.at)
        self.aux_dirty = True
        cond = self.conditions.get(key)
        if cond is not None and cond.until is None:
            cond.until = max(event.at, cond.since)
            cond.add(event)
            self._settle(cond, rule, event.at, sink)

    def watch_agent(self, venue_id: str, agent_id: str, now: float) -> None:
        """Start the deadlines of absent rules for an agent the rulebook has not heard of."""
        for rule in self.absent_rules:
            key = condition_key(venue_id, rule.id, f"agent={agent_id}")
            if key not in self.absent_seen:
                self.absent_seen[key] = now
                self.aux_dirty = True

    def _new(self, rule: Rule, event: Event, key: str, subject: str | None = None) -> Condition:
        room = str(event.data.get("room") or "") if event.kind in ROOM_SCOPED else ""
        cond = Condition(event.venue_id, rule.id, subject or subject_of(event), event.agent_id, room, event.at,
                         last_seen=event.at)
        self.conditions[key] = cond
        self.removed.discard(key)
        return cond

    # -- time ------------------------------------------------------------------------------------

    def advance(self, now: float, sink: CaseSink) -> None:
        """Open, escalate and close cases that time alone decides, up to ``now``."""
        self._check_absences(now, sink)
        self._forget_old_counts(now)
        for cond in list(self.conditions.values()):
            rule = self.rules.get(cond.rule_id)
            if rule is not None:
                self._settle(cond, rule, now, sink)

    def _forget_old_counts(self, now: float) -> None:
        """Drop count groups whose events all fell out of their period (memory stays bounded)."""
        for key in [k for k, times in self.counts.items() if not times or now - times[-1] >= self._within(k)]:
            del self.counts[key]
            self.aux_dirty = True

    def _within(self, key: str) -> float:
        rule = self.rules.get(int(key.split("|", 2)[1]))
        return rule.count.within_seconds if rule is not None and rule.count is not None else 0.0

    def _check_absences(self, now: float, sink: CaseSink) -> None:
        for key, last in list(self.absent_seen.items()):
            venue_id, rule_id, subject = key.split("|", 2)
            rule = self.rules.get(int(rule_id))
            if rule is None or rule.absent is None:
                del self.absent_seen[key]
                self.aux_dirty = True
                continue
            due = last + rule.absent.within_seconds
            cond = self.conditions.get(key)
            if now >= due and (cond is None or (cond.until is not None and cond.until < due)):
                if cond is not None:
                    self._settle(cond, rule, now, sink)
                agent_id = subject.split("=", 1)[1]
                self.conditions[key] = Condition(venue_id, rule.id, subject, agent_id, "", due, last_seen=due)
                self.removed.discard(key)
                self.dirty.add(key)

    def _settle(self, cond: Condition, rule: Rule, now: float, sink: CaseSink) -> None:
        """Bring the condition's cases in line with its spans as of ``now``."""
        self.dirty.add(cond.key)
        spans = self.spans(cond, rule, now)
        for i, span in enumerate(spans):
            if i == len(cond.cases):
                cid = sink.open(cond, rule, span, cond.evidence)
                cond.cases.append(CaseRef(cid, span.severity, False, len(cond.evidence), cond.events, span.session_id))
            ref = cond.cases[i]
            if ref.closed:
                continue
            if ref.events_sent < cond.events:
                sink.update(ref.id, cond, cond.evidence[ref.evidence_sent:])
                ref.evidence_sent, ref.events_sent = len(cond.evidence), cond.events
            if SEVERITY_RANK[span.severity] > SEVERITY_RANK[ref.severity]:
                sink.escalate(ref.id, span.severity, min(now, span.end))
                ref.severity = span.severity
            if span.session_id and not ref.session_id:
                sink.affects(ref.id, span.session_id)  # the stretch reached an exam after it opened
                ref.session_id = span.session_id
            if span.final:
                sink.close(ref.id, span.end)
                ref.closed = True
        self._withdraw(cond, len(spans), sink)
        if self._finished(cond, rule, now):
            self._drop(cond.key)

    def _withdraw(self, cond: Condition, kept: int, sink: CaseSink) -> None:
        """Close cases whose stretch no longer exists, at the condition's end.

        A case opens as soon as the evidence in hand shows its stretch; a clearing event that comes
        later from an agent's backlog, with an earlier time, can show the condition never lasted
        ``held`` or ended before the exam window. Such a case is closed (and marked withdrawn)
        rather than left open for ever; it is kept, because it may already have been announced.
        """
        if cond.until is None:
            return  # still going: fewer spans only means ``now`` is an earlier event's time
        for ref in cond.cases[kept:]:
            if not ref.closed:
                sink.close(ref.id, cond.until, withdrawn=True)
                ref.closed = True

    def _finished(self, cond: Condition, rule: Rule, now: float) -> bool:
        if not all(c.closed for c in cond.cases):
            return False
        if rule.is_state:
            return cond.until is not None and now - cond.until >= rule.settle
        return now - cond.last_seen >= rule.settle

    def _drop(self, key: str) -> None:
        self.conditions.pop(key, None)
        self.dirty.discard(key)
        self.removed.add(key)

    # -- spans -----------------------------------------------------------------------------------

    def spans(self, cond: Condition, rule: Rule, now: float) -> list[Span]:
        """The stretches of the condition that are cases, as of ``now``."""
        if not rule.is_state:
            return self._point_spans(cond, rule, now)
        end = cond.until if cond.until is not None else now
        if end - cond.since < (rule.held.seconds if rule.held else 0):
            return []  # not (yet) held long enough; once it is, the case covers it from its start
        pieces = self._pieces(cond, rule, cond.since, end)
        out = []
        for a, b, severity, session in pieces:
            ended = b < end or cond.until is not None
            out.append(Span(a, b, severity, session, ended and now - b >= rule.settle))
        return out

    def _point_spans(self, cond: Condition, rule: Rule, now: float) -> list[Span]:
        if cond.hits is None:
            return []
        first, last, severity, session = cond.hits
        return [Span(first, last, severity, session, now - cond.last_seen >= rule.settle)]

    def _at(self, cond: Condition, rule: Rule, t: float) -> tuple[str | None, str]:
        """Severity of the rule at instant ``t`` (None: it does not apply) and the exam session then."""
        if self.calendar.excused(cond.venue_id, rule.id, t, t):
            return None, ""
        severity, session = (None if rule.only_during else rule.severity), ""
        for period in rule.during:
            weight = period.severity or rule.severity
            for w in self.calendar.windows(cond.venue_id, cond.room or None, period, t, t):
                severity = weight if severity is None else _stronger(severity, weight)
                session = session or w.session_id
        return severity, session

    def _pieces(self, cond: Condition, rule: Rule, a: float, b: float) -> list[tuple[float, float, str, str]]:
        """[a, b] cut to the rule's periods (when only_during), minus excuses, close pieces merged."""
        windows = [(w.start, w.end, period.severity or rule.severity, w.session_id)
                   for period in rule.during
                   for w in self.calendar.windows(cond.venue_id, cond.room or None, period, a, b)]
        cover = [(max(a, s), min(b, e)) for s, e, _, _ in windows] if rule.only_during else [(a, b)]
        cover = _union([c for c in cover if c[0] <= c[1]])
        cover = _subtract(cover, self.calendar.excused(cond.venue_id, rule.id, a, b))
        merged: list[tuple[float, float]] = []
        for s, e in cover:
            if merged and s - merged[-1][1] < rule.settle:
                merged[-1] = (merged[-1][0], e)
            else:
                merged.append((s, e))
        out = []
        for s, e in merged:
            severity, session = (None if rule.only_during else rule.severity), ""
            for ws, we, sev, sid in windows:
                if ws <= e and we >= s:
                    severity = sev if severity is None else _stronger(severity, sev)
                    session = session or sid
            out.append((s, e, severity or rule.severity, session))
        return out

    # -- persistence -----------------------------------------------------------------------------

    def take_changes(self) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """Conditions to save and keys to delete since the last call."""
        saved = {k: self.conditions[k].to_json() for k in self.dirty if k in self.conditions}
        removed = set(self.removed)
        self.dirty.clear()
        self.removed.clear()
        return saved, removed

    def restore(self, conditions: list[dict[str, Any]], counts: dict[str, list[float]],
                absent_seen: dict[str, float]) -> None:
        for doc in conditions:
            cond = Condition.from_json(doc)
            self.conditions[cond.key] = cond
        self.counts, self.absent_seen = counts, absent_seen


def _union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for s, e in sorted(intervals):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _subtract(cover: list[tuple[float, float]], holes: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """``cover`` minus the open interiors of ``holes`` (what is left on either side stays)."""
    for hs, he in holes:
        nxt: list[tuple[float, float]] = []
        for s, e in cover:
            if he <= s or hs >= e:
                nxt.append((s, e))
                continue
            if s < hs:
                nxt.append((s, hs))
            if e > he:
                nxt.append((he, e))
        cover = nxt
    return cover
