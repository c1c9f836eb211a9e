"""Runs the readiness check inside the collector: opens rounds, sends the signed commands, reads
the agents' reports behind ingest, completes venue reports, seals, and vaults each venue report.

It runs in the ingest worker thread (:meth:`IngestService.add_periodic`) for two reasons: the
vault has one writer, and the reports it reads were indexed by that same thread, so every report
received before a deadline has been indexed before the deadline is judged. Only this runner
publishes commands; the CLI and the pages merely request rounds.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector import readiness_store as rs
from collector.config import ReadinessSection
from collector.configpush import Outgoing
from collector.store import Store
from collector.vault import Vault, frames
from protocol.envelope import canonical_json
from protocol.readiness import Command, command_message

log = logging.getLogger("venueguard.collector.readiness")

#: Vault topic of venue reports (a signed vault note each; ``vault verify`` checks the signature).
READINESS_TOPIC = frames.VAULT_TOPIC + "readiness"
#: The schedule is looked at this often (it is a few indexed queries).
SCHEDULE_SECONDS = 10.0


class ReadinessRunner:
    """The collector's readiness loop.

    Args:
        store: the index (rounds, reports, seals; the agents' reports arrive as ``records``).
        vault: the legal record, for the venue reports (this runner must run in its writer thread).
        key: the collector key that signs commands (the agents' bundles trust it).
        cfg: the [readiness] section.
        tz: the [schedule] time zone: exam days and the round time are local to it.
        connected: whether the broker connection is up; commands wait for it rather than queue.
        vault_id: the name of ``vault`` (the venue reports' leaves are in it).
    """

    def __init__(self, store: Store, vault: Vault, key: Ed25519PrivateKey, cfg: ReadinessSection, tz: str,
                 connected: Callable[[], bool] = lambda: True, clock: Callable[[], float] = time.time,
                 vault_id: str = "main") -> None:
        self.store, self.vault, self.key, self.cfg, self.tz = store, vault, key, cfg, tz
        self.vault_id = vault_id
        self.connected, self.clock = connected, clock
        self._scheduled = float("-inf")

    def tick(self, now: float | None = None) -> list[Outgoing]:
        """One pass: schedule (when due), send, read reports, complete, vault; returns the commands
        to publish (the service publishes them right after)."""
        now = self.clock() if now is None else now
        mono = time.monotonic()
        if self.cfg.scheduled and mono - self._scheduled >= SCHEDULE_SECONDS:
            self._scheduled = mono
            self.schedule(now)
        out = self.send(now) if self.connected() else []
        rs.take_reports(self.store)
        self.complete(now)
        self.vault_reports(now)
        return out

    def schedule(self, now: float) -> list[int]:
        """Open the rounds the exam schedule makes due at ``now``."""
        opened = rs.open_scheduled_rounds(self.store, now, self.tz, self.cfg.time)
        if opened:
            log.info("readiness: %d scheduled rounds opened", len(opened))
        return opened

    def send(self, now: float) -> list[Outgoing]:
        """Commands for every requested round, to each non-revoked agent of its venue.

        The round is marked sent before the service publishes: a collector killed in between
        leaves a round whose agents stay silent, which its deadline turns into 无报告 — visible,
        never a silent pass.
        """
        out: list[Outgoing] = []
        deadline = now + self.cfg.deadline_minutes * 60
        requested = rs.rounds(self.store, state=rs.REQUESTED)
        by_venue = rs.agents_by_venue(self.store) if requested else {}
        for rnd in requested:
            agents = by_venue.get(rnd["venue_id"], [])
            cmd = Command(rnd["id"], rnd["venue_id"], rnd["exam_day"], deadline, now)
            out += [command_message(self.key, agent_id, cmd) for agent_id in agents]
            rs.mark_sent(self.store, rnd["id"], agents, now, deadline)
            log.info("readiness round %d (%s, exam day %s, by %s) sent to %d agents", rnd["id"], rnd["venue_id"],
                     rnd["exam_day"], rnd["requested_by"], len(agents))
        return out

    def complete(self, now: float) -> list[int]:
        """Venue reports for rounds that every agent answered or whose deadline passed."""
        done = []
        for rnd in rs.due_rounds(self.store, now):
            report_id = rs.complete_round(self.store, rnd, self.tz, now)
            if report_id is not None:
                done.append(report_id)
                log.info("readiness round %d of %s complete: venue report %d", rnd["id"], rnd["venue_id"], report_id)
        return done

    def vault_reports(self, now: float) -> int:
        """Write venue reports not yet in the vault as signed vault notes; return how many."""
        reports = rs.unvaulted_reports(self.store)
        if not reports:
            return 0
        notes = [(now, READINESS_TOPIC, canonical_json(self._note(r)).decode()) for r in reports]
        indexes = self.vault.append(notes)
        rs.set_vault_index(self.store, [(r["id"], idx) for r, idx in zip(reports, indexes)], self.vault_id)
        return len(reports)

    def _note(self, rep: dict[str, Any]) -> dict[str, Any]:
        """The vault note of a venue report: the verdict, every item per agent with the agents'
        envelopes as vault leaves, who asked and when, and the seal it made."""
        rnd, seal = rep["round"], rep["seal"]
        doc = {"kind": "readiness.venue_report", "report_id": rep["id"], "round_id": rep["round_id"],
               "venue_id": rep["venue_id"], "exam_day": rep["exam_day"], "requested_by": rnd["requested_by"],
               "requested_at": rnd["requested_at"], "sent_at": rnd["sent_at"], "deadline": rnd["deadline"],
               "completed_at": rep["completed_at"], "result": rep["result"], "items": rep["items"],
               "agents": rep["agents"], "fixed": rep["fixed"],
               "seal": None if seal is None else {k: seal[k] for k in ("id", "sealed_at", "until", "baseline", "changes")}}
        if self.vault.key is None:
            return {**doc, "key": "", "sig": ""}
        return frames.sign_note(self.vault.key, doc)
