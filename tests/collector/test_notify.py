"""Case notices reach a real SMTP server (aiosmtpd), a real HTTP webhook and real Mosquitto, at
most once per case state change; failures are retried, recorded, and finally marked failed; a slow
receiver never holds up the code that queues notices. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import email
import json
import threading
import time
from email import policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import paho.mqtt.client as mqtt
import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import ValidationError

from collector.broker import Mosquitto, free_port
from collector.config import NotifySection
from collector.notify import Notifier, PahoPublisher, enqueue, notice_state, webhook_channel
from collector.store import Store, schema
from tests.support import wait_for

VENUE = ("GZ-TH01", "广州市天河区安全生产考试点")
T0 = 1_800_000_000.0  # 2027-01-15 16:00:00 +08:00
CLAUSE = {"source": "粤应急规〔2023〕3号", "article": "三(二)5", "text": "考场网络存在非考试设备接入的"}


# -- real receivers ----------------------------------------------------------------------------


class Mailbox:
    """aiosmtpd handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[Any] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          options: list[str]) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        self.envelopes.append(envelope)
        self.messages.append(email.message_from_bytes(envelope.original_content, policy=policy.default))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[int, Mailbox]]:
    """A real SMTP server on a free loopback port."""
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller.port, box
    controller.stop()


class Hook:
    """A real HTTP webhook receiver: answers the scripted statuses (then 200), optionally slowly."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []  # every POST, whatever was answered
        self.answered: list[int] = []
        self.statuses: list[int] = []
        self.delay = 0.0
        self.busy = threading.Event()  # set once a request is being handled
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's hook name
                hook.busy.set()
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(hook.delay)
                status = hook.statuses.pop(0) if hook.statuses else 200
                hook.bodies.append({"json": json.loads(body.decode("utf-8")), "type": self.headers["Content-Type"]})
                hook.answered.append(status)
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook?access_token=s3cret"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def delivered(self) -> list[dict[str, Any]]:
        """The notices answered with 2xx."""
        return [b["json"] for b, s in zip(self.bodies, self.answered) if 200 <= s < 300]


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.server.shutdown()
    h.server.server_close()


def mqtt_client(port: int, name: str) -> mqtt.Client:
    """A connected paho v5 client with its network loop running."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    wait_for(client.is_connected, 10, what=f"{name} to connect")
    return client


# -- store helpers -----------------------------------------------------------------------------


@pytest.fixture
def db(store: Store) -> Store:
    """A migrated store (SQLite and PostgreSQL) with one venue."""
    store.add_venue(*VENUE)
    return store


def add_case(store: Store, **values: Any) -> dict[str, Any]:
    """Insert a case row as the cases code would, and return it as a dict."""
    row = {"venue_id": VENUE[0], "rule_id": 110, "title": "考场网络存在非考试设备接入", "clause": CLAUSE,
           "severity": "violation", "subject": "mac=02:11:22:33:44:55", "room": "第1考场", "session_id": "S-0115-AM",
           "agent_id": "gz-th01-srv1", "state": "open", "status": "new", "first_seen": T0, "last_seen": T0 + 30,
           "opened_at": T0 + 31, "closed_at": None, "events": 2, "version": 1} | values
    with store.engine.begin() as conn:
        row["id"] = conn.execute(schema.cases.insert().values(row)).inserted_primary_key[0]
    return row


def change_case(store: Store, case: dict[str, Any], **values: Any) -> dict[str, Any]:
    """A new version of the case (the cases code bumps ``version`` on every change)."""
    new = case | values | {"version": case["version"] + 1}
    with store.engine.begin() as conn:
        conn.execute(schema.cases.update().where(schema.cases.c.id == case["id"])
                     .values({k: v for k, v in new.items() if k != "id"}))
    return new


def queue(store: Store, case: dict[str, Any], change: str, cfg: NotifySection, now: float = T0) -> int:
    """enqueue() in its own transaction, as the cases code would call it."""
    with store.engine.begin() as conn:
        return enqueue(conn, case, change, cfg, now)


def notices(store: Store) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(schema.notifications).order_by(schema.notifications.c.id))
        return [dict(r._mapping) for r in rows]


def settings(**values: Any) -> NotifySection:
    """A [notify] section with small retry delays; no channel unless given."""
    return NotifySection(**({"mqtt_topic": "", "retry_seconds": 0.05, "max_attempts": 3, "send_timeout": 5}
                            | values))


# -- tests -------------------------------------------------------------------------------------


def test_violation_reaches_every_channel_once_per_state_change(
        db: Store, smtp: tuple[int, Mailbox], hook: Hook, broker_factory: Callable[..., Mosquitto]) -> None:
    """Opened → one notice per channel with the right content; the same version again → nothing;
    closed (a new version) → exactly one more per channel."""
    smtp_port, mailbox = smtp
    broker = broker_factory(persistence=False)
    received: list[mqtt.MQTTMessage] = []
    listener = mqtt_client(broker.port, "authority")
    listener.on_message = lambda _c, _u, msg: received.append(msg)
    listener.subscribe("vg/v1/authority/cases", qos=1)
    sender = mqtt_client(broker.port, "collector")
    cfg = settings(mqtt_topic="vg/v1/authority/cases", webhooks=[hook.url],
                   email_to=["kaowu@example.cn", "ju@example.cn"], smtp_host="127.0.0.1", smtp_port=smtp_port,
                   smtp_from="venueguard@example.cn", web_base_url="https://vg.example.cn/")
    notifier = Notifier(db.engine, cfg, PahoPublisher(sender))
    case = add_case(db)
    time.sleep(0.3)  # the subscription is in place

    assert queue(db, case, "opened", cfg) == 3
    assert queue(db, case, "opened", cfg) == 0  # same version: at most once
    assert {n["channel"] for n in notices(db)} == {"mqtt", "email", webhook_channel(hook.url)}
    outcomes = notifier.deliver_due(T0 + 1)
    assert [o.delivered for o in outcomes] == [True, True, True]
    assert notifier.deliver_due(T0 + 2) == []  # nothing left to send
    wait_for(lambda: len(received) == 1, 10, what="the MQTT notice")

    # MQTT: QoS 1, not retained, the JSON notice
    assert received[0].qos == 1 and not received[0].retain
    sent = json.loads(received[0].payload.decode("utf-8"))
    assert "广州市天河区" in received[0].payload.decode("utf-8")  # ensure_ascii=False
    assert sent["case_id"] == case["id"] and sent["case_version"] == 1 and sent["change"] == "opened"
    assert sent["venue_id"] == "GZ-TH01" and sent["venue_name"] == VENUE[1] and sent["rule_id"] == 110
    assert sent["clause"] == CLAUSE and sent["severity"] == "violation"
    assert (sent["state"], sent["status"], sent["room"], sent["session_id"], sent["agent_id"]) == \
        ("open", "new", "第1考场", "S-0115-AM", "gz-th01-srv1")
    assert sent["first_seen"] == T0 and sent["first_seen_iso"] == "2027-01-15T16:00:00+08:00"
    assert sent["last_seen_iso"] == "2027-01-15T16:00:30+08:00"
    assert sent["link"] == f"https://vg.example.cn/cases/{case['id']}"

    # webhook: the same JSON, as UTF-8
    assert hook.delivered() == [sent]
    assert hook.bodies[0]["type"] == "application/json; charset=utf-8"

    # e-mail: one message to both recipients, Chinese subject and body
    assert len(mailbox.messages) == 1
    mail = mailbox.messages[0]
    assert sorted(mailbox.envelopes[0].rcpt_tos) == ["ju@example.cn", "kaowu@example.cn"]
    assert mail["Subject"] == f"【考点合规监测】{VENUE[1]} 第110条规则：考场网络存在非考试设备接入（违规，新案件）"
    body = mail.get_content()
    for text in ("考点：广州市天河区安全生产考试点（GZ-TH01）", "粤应急规〔2023〕3号 三(二)5", "考场网络存在非考试设备接入的",
                 "级别：违规", "情况：持续中", "考场：第1考场", "首次发现：2027-01-15T16:00:00+08:00",
                 f"https://vg.example.cn/cases/{case['id']}"):
        assert text in body

    # the condition ends: version 2, one more notice per channel
    closed = change_case(db, case, state="closed", closed_at=T0 + 600, last_seen=T0 + 590)
    assert queue(db, closed, "closed", cfg, T0 + 600) == 3
    assert queue(db, closed, "closed", cfg, T0 + 601) == 0
    assert len(notifier.deliver_due(T0 + 602)) == 3
    wait_for(lambda: len(received) == 2, 10, what="the second MQTT notice")
    assert notifier.deliver_due(T0 + 603) == []
    assert len(mailbox.messages) == 2 and len(hook.delivered()) == 2
    assert "（违规，已关闭）" in mailbox.messages[1]["Subject"]
    assert json.loads(received[1].payload)["change"] == "closed"
    assert hook.delivered()[1]["closed_at_iso"] == "2027-01-15T16:10:00+08:00"
    assert all(notice_state(n) == "sent" and n["attempts"] == 1 for n in notices(db))
    for client in (listener, sender):
        client.disconnect()
        client.loop_stop()


def test_below_min_severity_queues_nothing(db: Store, hook: Hook) -> None:
    """A warning is not announced when min_severity is violation, but is when it is warning."""
    warning = add_case(db, severity="warning")
    assert queue(db, warning, "opened", settings(webhooks=[hook.url])) == 0
    assert notices(db) == []
    assert queue(db, warning, "opened", settings(webhooks=[hook.url], min_severity="warning")) == 1
    notice = add_case(db, severity="notice", subject="other")
    assert queue(db, notice, "opened", settings(webhooks=[hook.url], min_severity="warning")) == 0
    assert len(notices(db)) == 1


def test_each_webhook_url_is_its_own_channel(db: Store, hook: Hook) -> None:
    """Two URLs → two rows; reordering the list keeps their channel names (at most once per URL)."""
    other = "https://hooks.example.cn/venueguard"
    case = add_case(db)
    assert queue(db, case, "opened", settings(webhooks=[hook.url, other])) == 2
    assert queue(db, case, "opened", settings(webhooks=[other, hook.url])) == 0
    assert all(len(n["channel"]) <= 16 and "s3cret" not in n["channel"] for n in notices(db))


def test_webhook_500_then_200_is_retried_and_delivered_once(db: Store, hook: Hook) -> None:
    """The first POST gets 500: recorded, retried after the backoff, then delivered once."""
    hook.statuses = [500]
    cfg = settings(webhooks=[hook.url], retry_seconds=10)
    notifier = Notifier(db.engine, cfg)
    queue(db, add_case(db), "opened", cfg)

    [first] = notifier.deliver_due(T0 + 1)
    assert not first.delivered and "HTTP 500" in first.error and "s3cret" not in first.error
    [row] = notices(db)
    assert (row["attempts"], row["sent_at"], row["next_at"], notice_state(row)) == (1, None, T0 + 11, "pending")
    assert "HTTP 500" in row["last_error"]
    assert notifier.deliver_due(T0 + 5) == []  # backing off
    [second] = notifier.deliver_due(T0 + 11)
    assert second.delivered
    assert notifier.deliver_due(T0 + 100) == []
    [row] = notices(db)
    assert (row["attempts"], row["sent_at"], notice_state(row)) == (2, T0 + 11, "sent")
    assert hook.answered == [500, 200] and len(hook.delivered()) == 1


def test_a_redirect_is_not_delivery(db: Store, hook: Hook) -> None:
    """A 302 is recorded as a failed attempt instead of being followed with a bodiless GET."""
    hook.statuses = [302]
    cfg = settings(webhooks=[hook.url])
    queue(db, add_case(db), "opened", cfg)
    [outcome] = Notifier(db.engine, cfg).deliver_due(T0)
    assert not outcome.delivered and "HTTP 302" in outcome.error
    assert hook.answered == [302]


def test_refused_recipient_is_noted_and_not_resent(db: Store, smtp: tuple[int, Mailbox]) -> None:
    """One recipient refused: the others get the mail once, and the refusal is kept on the row."""
    port, mailbox = smtp
    cfg = settings(email_to=["kaowu@example.cn", "nobody@example.cn"], smtp_host="127.0.0.1", smtp_port=port,
                   smtp_from="venueguard@example.cn")
    queue(db, add_case(db), "opened", cfg)
    [outcome] = Notifier(db.engine, cfg).deliver_due(T0)
    [row] = notices(db)
    assert outcome.delivered and notice_state(row) == "sent" and "nobody@example.cn" in row["last_error"]
    assert [e.rcpt_tos for e in mailbox.envelopes] == [["kaowu@example.cn"]]


def test_a_dead_channel_costs_one_attempt_per_round(db: Store, smtp: tuple[int, Mailbox]) -> None:
    """A webhook that is down fails once per round; its other notices wait (no attempt counted),
    and e-mail is delivered meanwhile."""
    port, mailbox = smtp
    cfg = settings(webhooks=[f"http://127.0.0.1:{free_port()}/down"], email_to=["kaowu@example.cn"],
                   smtp_host="127.0.0.1", smtp_port=port, smtp_from="venueguard@example.cn")
    queue(db, add_case(db), "opened", cfg)
    queue(db, add_case(db, subject="mac=02:00:00:00:00:99"), "opened", cfg)
    outcomes = Notifier(db.engine, cfg).deliver_due(T0)
    assert sorted((o.channel, o.delivered) for o in outcomes) == [("email", True), ("email", True),
                                                                  (webhook_channel(cfg.webhooks[0]), False)]
    hooks = [n for n in notices(db) if n["channel"].startswith("webhook:")]
    assert sorted(n["attempts"] for n in hooks) == [0, 1] and "unreachable" in hooks[0]["last_error"]
    assert len(mailbox.messages) == 2


def test_dead_smtp_server_fails_after_max_attempts_and_keeps_the_row(db: Store) -> None:
    """Nothing listens on the SMTP port: every attempt is recorded; after max_attempts the notice
    is failed, kept with its last error, and not tried again."""
    cfg = settings(email_to=["kaowu@example.cn"], smtp_host="127.0.0.1", smtp_port=free_port(),
                   smtp_from="venueguard@example.cn", retry_seconds=1, max_attempts=3)
    notifier = Notifier(db.engine, cfg)
    queue(db, add_case(db), "opened", cfg)
    now = T0
    for attempt in (1, 2, 3):
        [outcome] = notifier.deliver_due(now)
        assert not outcome.delivered and outcome.failed == (attempt == 3)
        [row] = notices(db)
        assert row["attempts"] == attempt and "ConnectionRefusedError" in row["last_error"]
        now += cfg.retry_seconds * attempt
    [row] = notices(db)
    assert notice_state(row) == "failed" and row["failed_at"] == T0 + 3 and row["sent_at"] is None
    assert row["payload"]["rule_id"] == 110  # the notice itself is still there
    assert notifier.deliver_due(now + 3600) == []


def test_a_slow_webhook_never_blocks_enqueue(db: Store, hook: Hook) -> None:
    """While the notifier's thread waits on a webhook that takes 1 s, queueing the next case
    change returns at once; both notices are delivered afterwards."""
    hook.delay = 1.0
    cfg = settings(webhooks=[hook.url])
    notifier = Notifier(db.engine, cfg, poll_seconds=0.05)
    notifier.start()
    try:
        queue(db, add_case(db), "opened", cfg)
        assert hook.busy.wait(5), "the notifier did not start sending"
        started = time.monotonic()
        assert queue(db, add_case(db, subject="mac=02:00:00:00:00:99"), "opened", cfg) == 1
        assert time.monotonic() - started < 0.5
        wait_for(lambda: len(hook.delivered()) == 2, 15, what="both notices")
        wait_for(lambda: all(notice_state(n) == "sent" for n in notices(db)), 5, what="both recorded as sent")
    finally:
        notifier.stop()


def test_mqtt_notice_without_a_connection_is_retried(db: Store, broker_factory: Callable[..., Mosquitto]) -> None:
    """A publisher that is not connected is a failed attempt (recorded), not a notice lost in paho."""
    broker = broker_factory(persistence=False)
    sender = mqtt_client(broker.port, "collector")
    sender.disconnect()
    sender.loop_stop()
    cfg = settings(mqtt_topic="vg/v1/authority/cases")
    notifier = Notifier(db.engine, cfg, PahoPublisher(sender))
    queue(db, add_case(db), "opened", cfg)
    [outcome] = notifier.deliver_due(T0)
    assert not outcome.delivered and "not connected" in outcome.error
    assert notices(db)[0]["attempts"] == 1


@pytest.mark.parametrize(("values", "message"), [
    ({"webhooks": ["ftp://example.cn/x"]}, "not an http:// or https:// URL"),
    ({"webhooks": ["example.cn/hook"]}, "not an http:// or https:// URL"),
    ({"web_base_url": "vg.example.cn"}, "not an http:// or https:// URL"),
    ({"email_to": ["kaowu.example.cn"], "smtp_host": "m", "smtp_from": "a@b"}, "not an e-mail address"),
    ({"email_to": ["kaowu@example.cn"]}, "smtp_host and smtp_from"),
    ({"smtp_user": "vg"}, "smtp_user and smtp_password_file go together"),
    ({"min_severity": "fatal"}, "min_severity"),
    ({"max_attempts": 0}, "max_attempts"),
])
def test_bad_notify_settings_are_refused_clearly(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        NotifySection(**values)


def test_unknown_change_is_a_programming_error(db: Store) -> None:
    with pytest.raises(ValueError, match="unknown case change"):
        queue(db, add_case(db), "exploded", settings(mqtt_topic="t"))
