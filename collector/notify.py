"""Notices of case changes over MQTT, e-mail and webhooks: queued once, delivered in the background.

The cases code calls :func:`enqueue` inside the transaction that changes a case, so a notice
exists exactly when the change is committed, and the unique key (case, version, channel) makes a
repeated call for the same change queue nothing: *at most once per state change and channel*.
Delivery is the :class:`Notifier`'s job, on its own thread, so a slow SMTP or webhook server never
holds up ingest. A notice that cannot be delivered is retried with a growing delay and, after
``max_attempts``, marked failed: the row stays, with its attempts and last error, for the pages.
"""

from __future__ import annotations

import hashlib
import json
import logging
import smtplib
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from collector.config import NotifySection
from collector.store import insert_with_conflicts, schema
from collector.strings import t

__all__ = ["CHANGES", "Notifier", "Outcome", "PahoPublisher", "enqueue", "notice_state", "render_body",
           "render_subject", "webhook_channel"]

log = logging.getLogger("venueguard.notify")

#: How severities compare; ``min_severity`` keeps this rank and above.
SEVERITY_RANK = {"notice": 1, "warning": 2, "violation": 3}

#: The case changes the cases code announces.
CHANGES = ("opened", "escalated", "closed", "reopened", "acknowledged", "confirmed", "dismissed")

#: Asia/Shanghai as a fixed offset: China has kept UTC+8 without DST since 1991, and a fixed
#: offset needs no tz database on the host.
CHINA = timezone(timedelta(hours=8), "Asia/Shanghai")

#: Due notices handled per round, so one round stays short even after a long outage.
ROUND_LIMIT = 100

#: ``publish(topic, payload)``: hands an MQTT notice to the broker, raises when it was not taken.
Publish = Callable[[str, bytes], None]


class DeliveryError(Exception):
    """A notice was not delivered this time; the message is recorded as ``last_error``."""


class GiveUp(DeliveryError):
    """A notice can never be delivered as configured now (e.g. its webhook was removed)."""


@dataclass(frozen=True)
class Outcome:
    """What one delivery attempt did."""

    id: int
    channel: str
    delivered: bool
    error: str = ""  # why it failed, or a note on a delivery (e.g. recipients the mail server refused)
    failed: bool = False  # the notice reached max_attempts (or cannot be sent) and is now failed


# -- queueing (in the caller's transaction) -------------------------------------------------


def webhook_channel(url: str) -> str:
    """Channel name of one webhook URL: stable when the list is reordered, and it keeps the URL
    (which often carries an access token) out of the table; fits the 16-character column."""
    return "webhook:" + hashlib.sha256(url.encode()).hexdigest()[:8]


def channels(cfg: NotifySection) -> list[str]:
    """The channels a notice goes to under ``cfg``: one row is queued for each."""
    names = ["mqtt"] if cfg.mqtt_topic else []
    names += [webhook_channel(url) for url in dict.fromkeys(cfg.webhooks)]
    if cfg.email_to:
        names.append("email")
    return names


def wanted(severity: str, cfg: NotifySection) -> bool:
    """Whether a case of ``severity`` is announced at all."""
    if severity not in SEVERITY_RANK:
        raise ValueError(f"unknown case severity {severity!r}; expected one of {sorted(SEVERITY_RANK)}")
    return SEVERITY_RANK[severity] >= SEVERITY_RANK[cfg.min_severity]


def enqueue(conn: sa.Connection, case: Mapping[str, Any], change: str, cfg: NotifySection, now: float) -> int:
    """Queue notices of one case change in the caller's transaction; returns how many rows were queued.

    Called by the cases code in the same transaction that writes the new ``cases.version``, so a
    rolled-back change announces nothing. A second call for the same version queues nothing.
    """
    if change not in CHANGES:
        raise ValueError(f"unknown case change {change!r}; expected one of {CHANGES}")
    names = channels(cfg)
    if not names or not wanted(case["severity"], cfg):
        return 0
    notice = build_notice(case, change, _venue_name(conn, case["venue_id"]), cfg)
    rows = [{"case_id": case["id"], "case_version": case["version"], "channel": name, "payload": notice,
             "created_at": now, "attempts": 0} for name in names]
    return _insert_new(conn, rows)


def build_notice(case: Mapping[str, Any], change: str, venue_name: str, cfg: NotifySection) -> dict[str, Any]:
    """The notice as JSON-ready data: what MQTT and webhook receivers get, and what e-mail renders.

    It is a snapshot of the case at this version, so a late retry still says what was true when
    the change happened; ``case_id`` + ``case_version`` let a receiver drop a redelivery.
    """
    clause = case.get("clause") or {}
    base = cfg.web_base_url.rstrip("/")
    return {
        "case_id": case["id"], "case_version": case["version"], "change": change,
        "venue_id": case["venue_id"], "venue_name": venue_name, "rule_id": case["rule_id"], "title": case["title"],
        "clause": {k: clause.get(k, "") for k in ("source", "article", "text")},
        "severity": case["severity"], "state": case["state"], "status": case["status"],
        "subject": case.get("subject", ""), "room": case.get("room", ""), "session_id": case.get("session_id", ""),
        "agent_id": case.get("agent_id", ""), "events": case.get("events", 0),
        "first_seen": case["first_seen"], "first_seen_iso": iso(case["first_seen"]),
        "last_seen": case["last_seen"], "last_seen_iso": iso(case["last_seen"]),
        "closed_at": case.get("closed_at"), "closed_at_iso": iso(case.get("closed_at")),
        "link": f"{base}/cases/{case['id']}",
    }


def iso(at: float | None) -> str:
    """Epoch seconds as ISO 8601 in Asia/Shanghai (what the authority reads); '' for None."""
    return "" if at is None else datetime.fromtimestamp(at, CHINA).isoformat(timespec="seconds")


def _venue_name(conn: sa.Connection, venue_id: str) -> str:
    """The venue's registered name (the id when unknown), so the notice is readable by people."""
    name = conn.scalar(sa.select(schema.venues.c.name).where(schema.venues.c.id == venue_id))
    return name or venue_id


def _insert_new(conn: sa.Connection, rows: list[dict[str, Any]]) -> int:
    """Insert rows, skipping those whose (case, version, channel) exists; returns how many went in.

    ON CONFLICT DO NOTHING never raises, so the caller's transaction stays usable (PostgreSQL
    aborts a transaction on a unique violation); other databases fall back to one savepoint per row.
    """
    table = schema.notifications
    keys = ["case_id", "case_version", "channel"]
    dialect = conn.dialect.name
    if dialect in ("sqlite", "postgresql"):
        statement = insert_with_conflicts(conn, table).on_conflict_do_nothing(index_elements=keys).returning(table.c.id)
        return sum(len(conn.execute(statement.values(row)).all()) for row in rows)  # rowcount is -1 on psycopg
    added = 0
    for row in rows:
        try:
            with conn.begin_nested():
                conn.execute(table.insert().values(row))
            added += 1
        except sa.exc.IntegrityError:
            pass
    return added


# -- what people read ----------------------------------------------------------------------------


def _label(kind: str, value: str) -> str:
    """The operator's word for a severity, change, state or status (the raw value if unknown)."""
    return t(f"notify_{kind}_{value}", default=value)


def render_subject(notice: Mapping[str, Any]) -> str:
    """The e-mail subject: venue, rule, title, severity and change on one line."""
    return t("notify_subject", venue=notice["venue_name"], rule_id=notice["rule_id"], title=notice["title"],
             severity=_label("severity", notice["severity"]), change=_label("change", notice["change"]))


def render_body(notice: Mapping[str, Any]) -> str:
    """The plain-text e-mail body listing every field of the notice."""
    clause = notice.get("clause") or {}
    dash = t("notify_none")
    return t("notify_body", venue=notice["venue_name"], venue_id=notice["venue_id"], rule_id=notice["rule_id"],
             title=notice["title"], clause_source=clause.get("source", ""), clause_article=clause.get("article", ""),
             clause_text=clause.get("text", ""), severity=_label("severity", notice["severity"]),
             change=_label("change", notice["change"]), state=_label("state", notice["state"]),
             status=_label("status", notice["status"]), subject=notice.get("subject") or dash,
             room=notice.get("room") or dash, session_id=notice.get("session_id") or dash,
             agent_id=notice.get("agent_id") or dash, events=notice.get("events", 0),
             first_seen=notice["first_seen_iso"], last_seen=notice["last_seen_iso"],
             closed_at=notice.get("closed_at_iso") or dash, case_id=notice["case_id"],
             version=notice["case_version"], link=notice["link"])


def notice_state(row: Mapping[str, Any]) -> str:
    """'sent', 'failed' or 'pending' for a ``notifications`` row (for pages and tests)."""
    if row["sent_at"] is not None:
        return "sent"
    return "failed" if row["failed_at"] is not None else "pending"


# -- delivery (the Notifier's thread) --------------------------------------------------------


class Notifier:
    """Delivers queued notices on a daemon thread, retrying with a growing delay.

    Args:
        engine: the store's engine (``Store.engine``).
        cfg: the ``[notify]`` section.
        publish: sends an MQTT notice (e.g. a :class:`PahoPublisher` on the collector's client);
            None leaves MQTT notices pending with an error until one is given.
        poll_seconds: how often due notices are looked for.
        clock: epoch seconds; tests may pass their own.
    """

    def __init__(self, engine: Engine, cfg: NotifySection, publish: Publish | None = None, *,
                 poll_seconds: float = 1.0, clock: Callable[[], float] = time.time,
                 active: Callable[[], bool] = lambda: True) -> None:
        self.engine = engine
        self.active = active  # in a cluster only the leader sends, or two collectors would send each notice
        self.cfg = cfg
        self.publish = publish
        self.poll_seconds = poll_seconds
        self.clock = clock
        self._webhooks = {webhook_channel(url): url for url in cfg.webhooks}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start delivering in the background."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop after the send in progress (bounded by the send timeout); pending rows stay queued."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.cfg.send_timeout + 5 if timeout is None else timeout)
            self._thread = None

    def _run(self) -> None:
        """One round per ``poll_seconds``; a database outage only costs rounds, never the thread."""
        while not self._stop.is_set():
            try:
                if self.active():
                    self.deliver_due()
            except Exception:  # noqa: BLE001 - keep delivering once the database is back
                log.exception("notification round failed; retrying in %.0f s", self.poll_seconds)
            self._stop.wait(self.poll_seconds)

    def deliver_due(self, now: float | None = None) -> list[Outcome]:
        """Try every notice that is due at ``now`` once, and record each outcome.

        No transaction is held while sending, so a slow server does not lock the store. After one
        failure a channel is skipped for the rest of the round (without counting an attempt), so a
        server that times out costs one timeout per round, not one per queued notice.
        """
        outcomes: list[Outcome] = []
        broken: set[str] = set()
        for row in self._due(self.clock() if now is None else now):
            if self._stop.is_set() and self._thread is not None:
                break
            if row["channel"] in broken:
                continue
            outcome = self._record(row, self._attempt(row), self.clock() if now is None else now)  # after a slow send
            if not outcome.delivered:
                broken.add(row["channel"])
            outcomes.append(outcome)
        return outcomes

    def _due(self, now: float) -> list[dict[str, Any]]:
        """Unsent, not failed notices whose retry time has come, oldest first."""
        n = schema.notifications.c
        query = (sa.select(schema.notifications)
                 .where(n.sent_at.is_(None), n.failed_at.is_(None), sa.or_(n.next_at.is_(None), n.next_at <= now))
                 .order_by(n.id).limit(ROUND_LIMIT))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def _attempt(self, row: Mapping[str, Any]) -> Outcome:
        """Send one notice on its channel; any error becomes the outcome, never an exception."""
        try:
            note = self._send(row["channel"], row["payload"])
        except GiveUp as exc:
            return Outcome(row["id"], row["channel"], False, str(exc), failed=True)
        except Exception as exc:  # noqa: BLE001 - every failure is recorded and retried
            return Outcome(row["id"], row["channel"], False, _describe(exc))
        return Outcome(row["id"], row["channel"], True, note)

    def _send(self, channel: str, notice: Mapping[str, Any]) -> str:
        """Route a notice to its channel's sender; returns a note worth keeping on a delivery."""
        if channel == "mqtt":
            self._send_mqtt(notice)
        elif channel == "email":
            return self._send_email(notice)
        elif channel.startswith("webhook:"):
            url = self._webhooks.get(channel)
            if url is None:
                raise GiveUp(f"{channel} is no longer among [notify] webhooks")
            self._send_webhook(url, notice)
        else:
            raise GiveUp(f"unknown channel {channel!r}")
        return ""

    def _send_mqtt(self, notice: Mapping[str, Any]) -> None:
        """Publish to the configured topic through the collector's client."""
        if not self.cfg.mqtt_topic:
            raise GiveUp("[notify] mqtt_topic is no longer set")
        if self.publish is None:
            raise DeliveryError("no MQTT client was given to the notifier")
        self.publish(self.cfg.mqtt_topic, _json(notice))

    def _send_webhook(self, url: str, notice: Mapping[str, Any]) -> None:
        """POST the notice as JSON; only a 2xx answer counts as delivered."""
        request = urllib.request.Request(url, data=_json(notice), method="POST", headers={
            "Content-Type": "application/json; charset=utf-8", "User-Agent": "VenueGuard-notify/1"})
        host = urlsplit(url).netloc.rpartition("@")[2]  # the error names the host, never a token
        try:
            with _WEBHOOK_OPENER.open(request, timeout=self.cfg.send_timeout) as answer:  # http(s) only, validated
                status = answer.status
        except urllib.error.HTTPError as exc:
            raise DeliveryError(f"webhook {host} answered HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise DeliveryError(f"webhook {host} unreachable: {getattr(exc, 'reason', exc)}") from None
        if not 200 <= status < 300:
            raise DeliveryError(f"webhook {host} answered HTTP {status}")

    def _send_email(self, notice: Mapping[str, Any]) -> str:
        """One message to all recipients; recipients the server refused are noted, not resent
        (a resend would duplicate the mail for everyone who got it)."""
        cfg = self.cfg
        if not cfg.email_to:
            raise GiveUp("[notify] email_to is no longer set")
        message = EmailMessage()
        message["Subject"] = render_subject(notice)
        message["From"] = cfg.smtp_from
        message["To"] = ", ".join(cfg.email_to)
        message["Date"] = formatdate(localtime=True)
        message["Message-ID"] = make_msgid(f"case{notice['case_id']}.v{notice['case_version']}")
        message.set_content(render_body(notice))
        smtp_class = smtplib.SMTP_SSL if cfg.smtp_security == "ssl" else smtplib.SMTP
        with smtp_class(cfg.smtp_host, cfg.smtp_port, timeout=cfg.send_timeout) as smtp:
            if cfg.smtp_security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if cfg.smtp_user:
                smtp.login(cfg.smtp_user, self._smtp_password())
            refused = smtp.send_message(message)
        return f"the mail server refused {', '.join(refused)}" if refused else ""

    def _smtp_password(self) -> str:
        """Read at send time, so a rotated password needs no restart and never sits in the config."""
        if self.cfg.smtp_password_file is None:
            return ""
        return self.cfg.smtp_password_file.read_text(encoding="utf-8").strip()

    def _record(self, row: Mapping[str, Any], outcome: Outcome, now: float) -> Outcome:
        """Store the attempt: sent, or the error with the next retry time, or failed for good."""
        attempts = row["attempts"] + 1
        values: dict[str, Any] = {"attempts": attempts}
        if outcome.delivered:
            values["sent_at"] = now
            if outcome.error:
                values["last_error"] = outcome.error[:2000]
        else:
            values["last_error"] = outcome.error[:2000]
            values["next_at"] = now + self.cfg.retry_seconds * attempts
            if outcome.failed or attempts >= self.cfg.max_attempts:
                values["failed_at"] = now
                outcome = Outcome(outcome.id, outcome.channel, False, outcome.error, failed=True)
        n = schema.notifications.c
        with self.engine.begin() as conn:
            conn.execute(schema.notifications.update().where(n.id == row["id"], n.sent_at.is_(None)).values(values))
        _log(row, outcome, attempts)
        return outcome


def _log(row: Mapping[str, Any], outcome: Outcome, attempts: int) -> None:
    """One log line per attempt that did not simply succeed."""
    where = f"case {row['case_id']} v{row['case_version']} via {row['channel']}"
    if outcome.failed:
        log.error("notice of %s FAILED after %d attempts: %s", where, attempts, outcome.error)
    elif outcome.delivered and outcome.error:
        log.warning("notice of %s delivered, but %s", where, outcome.error)
    elif not outcome.delivered:
        log.warning("notice of %s not delivered (attempt %d): %s", where, attempts, outcome.error)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: urllib would follow a 301/302 with a GET without the body, and its 200
    would count a notice as delivered that nobody received; the 3xx is recorded instead."""

    def redirect_request(self, *_: Any, **__: Any) -> None:
        return None


_WEBHOOK_OPENER = urllib.request.build_opener(_NoRedirect)


def _json(notice: Mapping[str, Any]) -> bytes:
    """The wire form of a notice: UTF-8 JSON with Chinese kept readable."""
    return json.dumps(notice, ensure_ascii=False, sort_keys=True).encode("utf-8")


def _describe(exc: BaseException) -> str:
    """An error as one line: its type and message."""
    return str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"


# -- MQTT through the collector's paho client ------------------------------------------------


class PahoPublisher:
    """``publish(topic, payload)`` over an existing paho v2 MQTT v5 client: QoS 1, not retained.

    It waits for the PUBACK and raises when none comes or its reason code is ≥ 0x80 (a v5 broker's
    "not authorised"), so such a notice is retried instead of counted as sent. It chains itself
    in front of the client's ``on_publish``; paho calls that before it releases the waiter, so the
    reason code of our message is known when ``wait_for_publish`` returns.
    """

    def __init__(self, client: Any, timeout: float = 10.0) -> None:
        self.client = client
        self.timeout = timeout
        self._reasons: dict[int, Any] = {}
        self._previous = client.on_publish
        client.on_publish = self._on_publish

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        self._reasons[mid] = reason
        if self._previous is not None:
            self._previous(client, userdata, mid, reason, properties)

    def __call__(self, topic: str, payload: bytes) -> None:
        """Publish and wait for the broker; while disconnected nothing is queued in paho (it would
        go out later, after this attempt was already recorded as failed, and arrive twice)."""
        if not self.client.is_connected():
            raise DeliveryError("not connected to the MQTT broker")
        info = self.client.publish(topic, payload, qos=1, retain=False)
        info.wait_for_publish(self.timeout)
        if not info.is_published():
            raise DeliveryError(f"no PUBACK from the broker within {self.timeout:.0f} s")
        reason = self._reasons.pop(info.mid, None)
        if reason is not None and getattr(reason, "is_failure", False):
            raise DeliveryError(f"broker refused the notice on {topic}: {reason} (0x{reason.value:02x})")
