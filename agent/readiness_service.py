"""The readiness check inside the running agent: the collector's command in, one report record out.

The uplink hands every message on ``vg/v1/<agent>/cmd`` to :meth:`ReadinessService.receive` on its
own thread, so nothing here may block: the command is verified (signed by this agent's collector,
addressed to it, for its venue, before its deadline) and the check runs on a thread of its own —
never in the watcher loop or the uplink. One check at a time; a repeat of the round being checked
(QoS 1 may deliver twice) is ignored, another round waits for the current one.

The report is committed as ONE sequenced record on the ``rpt`` stream, through the outbox like
every record, so it survives restarts and leaves only on the collector's end-to-end ack. A refused
command becomes one ``readiness.refused`` event with the reason, so the authority sees why an
agent did not answer rather than silence.
"""

from __future__ import annotations

import logging
import threading
import time
import zoneinfo
from typing import Any, Callable

from agent.config import AgentConfig
from agent.outbox import MAX_RECORD_BYTES, Outbox, Pending
from agent.readiness import CheckFn, ClockReading, Context, exam_day, run_check
from agent.remote_config import RemoteConfig
from agent.strings import t
from protocol.envelope import canonical_json, decode
from protocol.errors import ProtocolError
from protocol.keys import Bundle
from protocol.readiness import ITEMS, REPORT_KIND, Command, ItemResult, Report, parse_command

log = logging.getLogger("venueguard.agent.readiness")

Commit = Callable[[list[Pending]], None]


class ReadinessService:
    """Verifies readiness commands and runs the check for them, one at a time, in the background."""

    def __init__(self, cfg: AgentConfig, bundle: Bundle, remote: RemoteConfig, outbox: Outbox, commit: Commit,
                 check: CheckFn = run_check) -> None:
        self.cfg, self.bundle, self.remote, self.outbox = cfg, bundle, remote, outbox
        self._commit, self._check = commit, check
        self._lock = threading.Lock()
        self._running: Command | None = None
        self._queued: tuple[Command, float] | None = None
        self._thread: threading.Thread | None = None
        self._refused: set[tuple[str, int | None]] = set()

    def receive(self, payload: bytes, received_at: float | None = None) -> None:
        """A message on the ``cmd`` topic (uplink thread): refuse it, ignore it, or start the check."""
        received_at = time.time() if received_at is None else received_at
        try:
            cmd = self._verified(payload, received_at)
        except ProtocolError as exc:
            log.error("refused a readiness command: %s", exc)
            self._refuse(exc.reason, exc.detail, _round_of(payload))
            return
        self._start(cmd, received_at)

    def wait(self, timeout: float) -> None:
        """Let a check in progress finish and commit its report (the agent is stopping)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _verified(self, payload: bytes, received_at: float) -> Command:
        cmd = parse_command(payload, self.bundle.collector_public_key, self.bundle.agent_id)
        if cmd.venue_id != self.bundle.venue_id:
            raise ProtocolError("wrong_venue", f"command for venue {cmd.venue_id!r}; this agent is at {self.bundle.venue_id!r}")
        if received_at > cmd.deadline:
            raise ProtocolError("expired", f"round {cmd.round_id} had to be answered by {cmd.deadline:.0f}; "
                                           f"received at {received_at:.0f}")
        return cmd

    def _refuse(self, reason: str, detail: str, round_id: int | None) -> None:
        """One ``readiness.refused`` per reason and round in this run (a resent bad command is no news)."""
        if (reason, round_id) in self._refused:
            return
        if len(self._refused) > 1000:
            self._refused.clear()
        self._refused.add((reason, round_id))
        self._commit([Pending("ev", "readiness.refused", time.time(),
                              {"reason": reason, "detail": detail, "round_id": round_id})])

    def _start(self, cmd: Command, received_at: float) -> None:
        with self._lock:
            busy = self._running is not None
            repeat = busy and (cmd.round_id == self._running.round_id  # type: ignore[union-attr]
                               or (self._queued is not None and self._queued[0].round_id == cmd.round_id))
            if repeat:
                log.info("readiness round %d is already being checked: repeat ignored", cmd.round_id)
                return
            if busy:
                self._queued = (cmd, received_at)  # the latest round waits; an older waiting one is dropped
                return
            self._running = cmd
            self._thread = threading.Thread(target=self._work, args=(cmd, received_at), name="readiness", daemon=True)
            self._thread.start()

    def _work(self, cmd: Command, received_at: float) -> None:
        """Check, commit the report, then take the round that waited, if any."""
        current: tuple[Command, float] | None = (cmd, received_at)
        while current is not None:
            report = self._report(*current)
            self._commit([Pending("rpt", REPORT_KIND, time.time(), fitted(report))])
            log.info("readiness round %d: %s", report.round_id, report.result)
            with self._lock:
                current, self._queued = self._queued, None
                self._running = current[0] if current else None

    def _report(self, cmd: Command, received_at: float) -> Report:
        """The check for ``cmd``; if the check itself breaks, a report that says so, never silence."""
        ctx = self._context(cmd, received_at)
        try:
            return self._check(self.cfg, ctx, self.outbox)
        except Exception as exc:  # noqa: BLE001 - the collector must get an answer for the round
            log.exception("readiness check failed")
            items = tuple(ItemResult(i, "unknown", t("rd.check_failed", error=f"{type(exc).__name__}: {exc}"),
                                     t("rd.fix.watcher_failed")) for i in ITEMS)
            return Report(ctx.agent_id, cmd.round_id, cmd.exam_day, received_at, time.time(), items, {},
                          ctx.config_version, True)

    def _context(self, cmd: Command, received_at: float) -> Context:
        """The round's exam day and sessions from the signed config; the collector's clock from the
        command: ``issued_at`` (its clock) against our receipt (ours), network delay included."""
        zone = zoneinfo.ZoneInfo(self.cfg.readiness.timezone)
        day, sessions = exam_day(self.remote.sessions(), zone, cmd.exam_day, received_at)
        clock = ClockReading(cmd.issued_at - received_at, "command", received_at)
        return Context(self.bundle.agent_id, cmd.round_id, day, sessions, self.remote.inventory(), self.remote.version,
                       True, clock)


def fitted(report: Report, limit: int = MAX_RECORD_BYTES - 4096) -> dict[str, Any]:
    """The report's JSON, small enough for one outbox record (which would otherwise be replaced by
    a truncation notice): in a very large venue the items' evidence goes first, keeping verdicts,
    what was seen, the fixes and the baseline the seal needs."""
    doc = report.to_json()
    if len(canonical_json(doc)) <= limit:
        return doc
    for item in doc["items"]:
        item["evidence"] = {"trimmed": True, "keys": sorted(item["evidence"])}
    return doc


def _round_of(payload: bytes) -> int | None:
    """The round a refused command claims (its envelope seq), when it can be read at all."""
    try:
        return decode(payload).seq
    except ProtocolError:
        return None
