"""Uplink: the only code on the agent that speaks MQTT.

Sends outbox records in signed envelopes over MQTT v5 at QoS 1, and deletes them only when the
collector's signed application ack says they are durable in its vault. A broker PUBACK is not
enough (brokers drop queued messages; paho keeps unacknowledged ones only in memory), but a PUBACK
reason code >= 0x80 (e.g. 0x87 not authorised) is a failure that pauses sending and is counted.

Everything runs on one thread that drives paho's ``loop()`` itself, so paho is never touched
from two threads and reconnects use our own full-jitter back-off (5,000 hosts must not stampede
a restarted broker).
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from agent import __version__
from agent.config import UplinkSection
from agent.outbox import Outbox, Row
from protocol import topics
from protocol.envelope import MAX_PAYLOAD_BYTES, Envelope, decode, record
from protocol.errors import ProtocolError
from protocol.keys import Bundle
from protocol.tls import context_from_pem

log = logging.getLogger("venueguard.agent.uplink")

#: Envelopes are cut well below the collector's payload limit.
_ENVELOPE_BUDGET = MAX_PAYLOAD_BYTES // 2


@dataclass
class UplinkStatus:
    """What the uplink knows about itself; goes into heartbeats and ``check``."""

    connected: bool = False
    connects: int = 0
    publish_failures: int = 0
    last_failure: str = ""
    acked_seq: int = 0
    sent_upto: int = 0
    resends: int = 0
    bad_acks: int = 0


class Uplink:
    """Drains the outbox to the broker and applies the collector's acks.

    Args:
        bundle: the agent's identity, key, collector key and broker.
        cfg: the ``[uplink]`` section.
        outbox: where records wait.
        heartbeat_interval: seconds between heartbeats.
        boot: id of this agent run, in every envelope.
    """

    def __init__(self, bundle: Bundle, cfg: UplinkSection, outbox: Outbox, heartbeat_interval: float, boot: str,
                 on_config: Callable[[bytes], None] = lambda _payload: None,
                 config_version: Callable[[], int] = lambda: 0,
                 on_command: Callable[[bytes], None] = lambda _payload: None) -> None:
        self.bundle = bundle
        self.cfg = cfg
        self.outbox = outbox
        self.heartbeat_interval = heartbeat_interval
        self.boot = boot
        self.on_config = on_config
        self.on_command = on_command  # must not block: the readiness check runs on its own thread
        self.config_version = config_version
        self.status = UplinkStatus(acked_seq=outbox.acked_seq())
        self.wake = threading.Event()  # set when records were committed: look at the outbox now
        self._next_poll = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="uplink", daemon=True)
        self._client: mqtt.Client | None = None
        self._attempt = 0
        self._sent_upto = self.status.acked_seq
        self._last_progress = time.monotonic()
        self._next_heartbeat = 0.0
        self._blocked_until = 0.0
        self._failure_backoff = cfg.reconnect_min
        self._resend: list[tuple[int, int]] = []
        self._resent_at: dict[int, float] = {}
        self._inflight: dict[int, str] = {}  # mid -> topic, to name the topic of a refused publish
        self._started = time.time()
        self._clock_saved_at = float("-inf")
        self._tls: ssl.SSLContext | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the uplink thread."""
        self._thread.start()

    def stop(self, flush_seconds: float = 0.0) -> None:
        """Stop; wait up to ``flush_seconds`` for outstanding records to be acknowledged first."""
        deadline = time.monotonic() + flush_seconds
        while time.monotonic() < deadline and self.outbox.depth() and self.status.connected:
            time.sleep(0.05)
        self._stop.set()
        self.wake.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        """The thread: connect with back-off, then pump until stopped."""
        while not self._stop.is_set():
            if self._client is None:
                if self._stop.wait(self._backoff()):
                    break
                self._connect()
                continue
            rc = self._client.loop(timeout=0.05)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                self._lost(f"network loop returned {mqtt.error_string(rc)}")
            elif self.status.connected:
                self._pump()
        self._disconnect()

    def _backoff(self) -> float:
        """Full-jitter exponential back-off; the first attempt is jittered too."""
        cap = min(self.cfg.reconnect_max, self.cfg.reconnect_min * (2 ** self._attempt))
        self._attempt += 1
        return random.uniform(0, cap)

    # -- connection ----------------------------------------------------------------------------

    def _connect(self) -> None:
        """Open a connection with a freshly signed Last Will; CONNACK arrives in ``_on_connect``."""
        host = self.cfg.broker_host or self.bundle.broker_host
        port = self.cfg.broker_port or self.bundle.broker_port
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.bundle.agent_id, protocol=mqtt.MQTTv5)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.max_queued_messages_set(0)
        if self.bundle.has_tls:
            try:
                client.tls_set_context(self._tls_context())
            except ProtocolError as exc:
                log.error("cannot use the enrollment bundle for TLS: %s; enroll the agent again", exc.detail)
                self.status.last_failure = f"TLS setup: {exc.detail}"
                return
        death = self._envelope("state", [record("death", time.time(), {"online": False})])
        client.will_set(topics.topic(self.bundle.agent_id, "state"), death.encode(), qos=1, retain=True)
        try:
            client.connect(host, port, keepalive=self.cfg.keepalive, clean_start=True)
        except ssl.SSLError as exc:
            log.error("TLS with broker %s:%s failed: %s (is the broker certificate from our CA, for this host "
                      "name, and this agent's certificate not revoked?)", host, port, exc)
            self.status.last_failure = f"TLS with {host}:{port}: {exc}"
            return
        except OSError as exc:
            log.warning("cannot reach broker %s:%s: %s", host, port, exc)
            self.status.last_failure = f"connect {host}:{port}: {exc}"
            return
        self._client = client

    def _tls_context(self) -> ssl.SSLContext:
        """Mutual TLS from the bundle's CA, certificate and key; built once per run."""
        if self._tls is None:
            self._tls = context_from_pem(self.bundle.tls_ca, self.bundle.tls_cert, self.bundle.tls_key)
        return self._tls

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        """CONNACK: on success subscribe, send birth, resend everything unacknowledged."""
        if reason.is_failure:
            self.status.last_failure = f"broker refused connection: {reason}"
            log.error("broker refused connection: %s", reason)
            return
        self._attempt = 0
        self.status.connected = True
        self.status.connects += 1
        for stream in topics.COLLECTOR_STREAMS:
            client.subscribe(topics.topic(self.bundle.agent_id, stream), qos=1)
        birth = record("birth", time.time(), {"online": True, "version": __version__,
                                                "heartbeat_interval": self.heartbeat_interval,
                                                "config_version": self.config_version()})
        self._publish("state", [birth], retain=True)
        self._sent_upto = self.status.acked_seq  # whatever was in flight may be lost: resend
        self._last_progress = time.monotonic()
        self._next_heartbeat = 0.0
        self.wake.set()
        log.info("connected to broker as %s (boot %s)", self.bundle.agent_id, self.boot)

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not self.status.connected and self.bundle.has_tls:
            # Under TLS 1.3 the broker's verdict on our certificate arrives after the handshake:
            # a connection closed before any CONNACK is that verdict, not a network blip.
            self.status.last_failure = (f"broker closed the TLS connection before accepting us ({reason}): "
                                        "this agent's certificate is revoked, expired or not from the broker's CA")
            log.error("%s; enroll the agent again (`venueguard-collector enroll`)", self.status.last_failure)
            return
        self.status.connected = False
        log.warning("disconnected from broker: %s", reason)

    def _lost(self, why: str) -> None:
        """Drop the client; the run loop reconnects after a back-off."""
        self.status.connected = False
        self.status.last_failure = why
        self._disconnect()

    def _disconnect(self) -> None:
        """Close the connection; on a deliberate stop ask the broker to publish our Last Will,
        so the collector sees this run end at once (a plain DISCONNECT would suppress it)."""
        if self._client is not None:
            try:
                if self.status.connected and self._stop.is_set():
                    self._client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=0x04))
                else:
                    self._client.disconnect()
                self._client.loop(timeout=0.1)
            except Exception:  # noqa: BLE001 - best effort on a dying socket
                pass
            self._client = None
        self._inflight.clear()
        self.status.connected = False

    # -- sending -------------------------------------------------------------------------------

    def _pump(self) -> None:
        """One round: heartbeat when due, resend on timeout or request, then new records."""
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self._heartbeat()
            self._next_heartbeat = now + self.heartbeat_interval
        if now < self._blocked_until:
            return
        if self._sent_upto > self.status.acked_seq and now - self._last_progress > self.cfg.ack_timeout:
            log.info("no ack progress for %.0fs: resending from seq %d", self.cfg.ack_timeout, self.status.acked_seq + 1)
            self.status.resends += 1
            self._sent_upto = self.status.acked_seq
            self._last_progress = now
            self.wake.set()
        while self._resend:
            first, last = self._resend.pop(0)
            self._send_rows(self.outbox.pending(first - 1, last - first + 1))
        if self.wake.is_set() or now >= self._next_poll:
            self.wake.clear()
            self._next_poll = now + 1.0  # appends by another process are picked up within a second
            self._send_new()
        self.status.sent_upto = self._sent_upto

    def _send_new(self) -> None:
        """Send records after ``_sent_upto`` while the window allows."""
        while self.status.connected and not self._stop.is_set():
            room = self.cfg.window_records - (self._sent_upto - self.status.acked_seq)
            if room <= 0:
                return
            rows = self.outbox.pending(self._sent_upto, min(room, self.cfg.batch_records * 10))
            if not rows:
                return
            if self._sent_upto <= self.status.acked_seq:
                # Nothing was outstanding: the ack timeout runs from this send, not from an ack long
                # ago (else a quiet agent would resend every new record at once).
                self._last_progress = time.monotonic()
            self._sent_upto = self._send_rows(rows) or self._sent_upto

    def _send_rows(self, rows: list[Row]) -> int:
        """Publish rows as envelopes of one stream and consecutive seqs; return the last seq sent."""
        last = 0
        batch: list[Row] = []
        size = 0
        for row in rows:
            row_size = row.size
            contiguous = batch and row.stream == batch[-1].stream and row.seq == batch[-1].seq + 1
            if batch and (not contiguous or len(batch) >= self.cfg.batch_records or size + row_size > _ENVELOPE_BUDGET):
                last = self._publish_rows(batch)
                batch, size = [], 0
            batch.append(row)
            size += row_size
        if batch:
            last = self._publish_rows(batch)
        return last

    def _publish_rows(self, batch: list[Row]) -> int:
        self._publish(batch[0].stream, [r.record for r in batch], seq=batch[0].seq)
        return batch[-1].seq

    def _heartbeat(self) -> None:
        """Liveness, outbox depth and the agent clock; the envelope seq is the last committed seq."""
        data = {
            "interval": self.heartbeat_interval, "clock": time.time(), "uptime": time.time() - self._started,
            "outbox_depth": self.outbox.depth(), "acked_seq": self.status.acked_seq,
            "publish_failures": self.status.publish_failures, "dropped_total": self.outbox.dropped_total(),
            "version": __version__,
        }
        self._publish("hb", [record("heartbeat", time.time(), data)], seq=self.outbox.last_seq(), qos=0)
        self.outbox.save_state("alive", time.time())

    def _envelope(self, stream: str, records: list[dict[str, Any]], seq: int | None = None) -> Envelope:
        seq = self.outbox.last_seq() if seq is None else seq
        env = Envelope(self.bundle.agent_id, self.boot, seq, round(time.time(), 3), stream, tuple(records))
        return env.signed(self.bundle.private_key)

    def _publish(self, stream: str, records: list[dict[str, Any]], *, seq: int | None = None,
                 qos: int = 1, retain: bool = False) -> None:
        assert self._client is not None
        name = topics.topic(self.bundle.agent_id, stream)
        info = self._client.publish(name, self._envelope(stream, records, seq).encode(), qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self._lost(f"publish on {name} failed: {mqtt.error_string(info.rc)}")
            return
        if qos:
            self._inflight[info.mid] = name

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        """PUBACK: a reason code >= 0x80 means the broker did not take the message."""
        name = self._inflight.pop(mid, "?")
        if not reason.is_failure:
            self._failure_backoff = self.cfg.reconnect_min
            return
        self.status.publish_failures += 1
        self.status.last_failure = f"broker refused publish on {name}: {reason} (0x{reason.value:02x})"
        log.error("%s; check the broker ACL for agent %s", self.status.last_failure, self.bundle.agent_id)
        self._blocked_until = time.monotonic() + self._failure_backoff
        self._failure_backoff = min(self._failure_backoff * 2, self.cfg.reconnect_max)
        self._sent_upto = self.status.acked_seq
        self.wake.set()

    # -- acks and commands ---------------------------------------------------------------------

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        """Collector → agent traffic: configs and commands go to their keepers (which check them),
        acks are applied here."""
        if msg.topic == topics.topic(self.bundle.agent_id, "cfg"):
            self.on_config(msg.payload)
            return
        if msg.topic == topics.topic(self.bundle.agent_id, "cmd"):
            self.on_command(msg.payload)
            return
        try:
            env = decode(msg.payload)
        except ProtocolError as exc:
            self.status.bad_acks += 1
            log.error("unreadable message on %s: %s", msg.topic, exc)
            return
        if env.agent_id != self.bundle.agent_id or not env.verify(self.bundle.collector_public_key):
            self.status.bad_acks += 1
            log.error("message on %s is not signed by our collector for us: ignored", msg.topic)
            return
        if env.stream == "ack":
            self._note_clock(env.sent_at)
            for rec in env.records:
                self._apply_ack(rec["data"])

    def _note_clock(self, sent_at: float) -> None:
        """Keep the collector − host clock offset seen at an ack (at most once a minute), so a local
        readiness check (``venueguard-agent check``) can judge the host clock without the collector."""
        now = time.time()
        if now - self._clock_saved_at < 60.0:
            return
        self._clock_saved_at = now
        self.outbox.save_state("collector_clock", {"offset": round(sent_at - now, 3), "at": round(now, 3)})

    def _apply_ack(self, data: dict[str, Any]) -> None:
        """Delete what the collector holds; schedule the ranges it says are missing."""
        acked = int(data.get("acked", 0))
        if acked > self.outbox.last_seq():
            log.error("collector holds seqs up to %d but this outbox only reached %d: it was replaced; "
                      "renumbering pending records after %d", acked, self.outbox.last_seq(), acked)
            self.outbox.rebase(acked)
            self.status.acked_seq = self._sent_upto = acked
            self._last_progress = time.monotonic()
            self.wake.set()
            return
        if acked > self.status.acked_seq:
            self.outbox.ack(acked)
            self.status.acked_seq = acked
            self._sent_upto = max(self._sent_upto, acked)
            self._last_progress = time.monotonic()
            self.wake.set()  # the window has room again
            self._resent_at = {k: v for k, v in self._resent_at.items() if k > acked}
        now = time.monotonic()
        for first, last in data.get("missing", []):
            if first <= self._sent_upto and now - self._resent_at.get(first, 0) > self.cfg.ack_timeout / 2:
                self._resent_at[first] = now
                self._resend.append((int(first), min(int(last), self._sent_upto)))


def new_boot() -> str:
    """Id of one agent run."""
    return uuid.uuid4().hex
