"""Runs the samples each rule file carries (its ``tests``) through the real rulebook.

A sample is one event at one moment, inside an exam window, a sealed period or outside every
period; the rulebook is given just that rule, a calendar with one exam (or one seal) around the
moment when the sample says ``during: exam`` (``sealed``), the event, and then enough time for any ``held`` debounce. The case it opens
(or that none opens) must be what the sample expects. ``rules check`` runs them, so a rule edited
into saying something else than its samples is refused before it is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from collector.rulebook import Condition, Event, Rulebook, Span
from collector.rulefiles import Rule, Sample
from collector.rulewindows import ExamSession, MemoryCalendar

#: Samples happen at this moment (any fixed time: only relative times matter).
SAMPLE_AT = 1_800_000_000.0
VENUE, AGENT, ROOM = "sample-venue", "sample-agent", "第1考场"


@dataclass
class MemorySink:
    """Keeps case changes in memory: for samples, and for tests that look at the engine alone."""

    cases: dict[int, dict[str, Any]] = field(default_factory=dict)

    def open(self, cond: Condition, rule: Rule, span: Span, evidence: list[list[Any]]) -> int:
        cid = len(self.cases) + 1
        self.cases[cid] = {"rule": rule.id, "severity": span.severity, "opened": span.start, "closed": None,
                           "session": span.session_id, "subject": cond.subject, "evidence": list(evidence)}
        return cid

    def update(self, case_id: int, cond: Condition, evidence: list[list[Any]]) -> None:
        self.cases[case_id]["evidence"] += evidence

    def escalate(self, case_id: int, severity: str, at: float) -> None:
        self.cases[case_id]["severity"] = severity

    def affects(self, case_id: int, session_id: str) -> None:
        self.cases[case_id]["session"] = session_id

    def close(self, case_id: int, at: float, withdrawn: bool = False) -> None:
        self.cases[case_id]["closed"] = at


def outcome(rule: Rule, sample: Sample) -> str:
    """The severity of the case the sample's event opens, or ``none``."""
    at = sample.event.at or SAMPLE_AT
    sessions, seals = [], {}
    if sample.during == "exam":
        sessions = [ExamSession(VENUE, str(sample.event.data.get("room") or ROOM), at - 600, at + 3600, "sample")]
    elif sample.during == "sealed":
        seals = {VENUE: [(at - 600, at + 3600)]}
    book = Rulebook([rule], MemoryCalendar(sessions, seals=seals))
    sink = MemorySink()
    event = Event(1, VENUE, AGENT, sample.event.kind, at, dict(sample.event.data), 0)
    book.feed(event, sink)
    book.advance(at + (rule.held.seconds if rule.held else 0), sink)
    severities = {c["severity"] for c in sink.cases.values()}
    return max(severities, key=["notice", "warning", "violation"].index) if severities else "none"


def failures(rules: list[Rule]) -> list[str]:
    """``file: sample: expected X, got Y`` for every sample that does not come out as written."""
    out = []
    for rule in rules:
        for sample in rule.tests:
            got = outcome(rule, sample)
            if got != sample.expect:
                out.append(f"{rule.file}: tests: {sample.name}: expected {sample.expect}, the rulebook gives {got}")
    return out
