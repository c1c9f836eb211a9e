"""The ingest service: the collector's only MQTT code.

Subscribes to every agent stream with a persistent MQTT v5 session (so the broker queues while
the collector is down) and manual acknowledgement: a message is PUBACKed to the broker only
after the ingestor has vaulted and indexed it, so a collector killed mid-batch gets it again.
In a cluster each collector subscribes through the broker's MQTT v5 shared subscription
(``$share/<group>/…``), so each message goes to one of them.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collector.configpush import Outgoing
from collector.ingest import Ingestor, Message
from protocol import topics

log = logging.getLogger("venueguard.collector.service")


class IngestService:
    """Feeds MQTT messages to an :class:`Ingestor` in batches and publishes its acks.

    Args:
        ingestor: the verification and storage logic.
        host: broker host.
        port: broker port.
        client_id: the collector's MQTT identity (its persistent session is keyed on it).
        batch_max: messages handled per vault fsync at most.
        tls: client context for mutual TLS with the broker; None = plain MQTT.
        session_expiry: seconds the broker keeps the session (and queues for it) while away.
        share_group: subscribe through this shared-subscription group (a cluster); None = alone.
        leader: whether this collector runs the time-driven work (ingest's sweep and the periodic
            tasks: rules, readiness); in a cluster only the leader does.
    """

    def __init__(self, ingestor: Ingestor, host: str, port: int, client_id: str = "venueguard-collector",
                 batch_max: int = 1000, tls: ssl.SSLContext | None = None, *, session_expiry: int = 7 * 24 * 3600,
                 share_group: str | None = None, leader: Callable[[], bool] = lambda: True) -> None:
        self.ingestor = ingestor
        self.batch_max = batch_max
        self.share_group = share_group
        self._filters: list[str] = []
        self.leader = leader
        self.connected = threading.Event()
        self._queue: queue.Queue[tuple[Message, int, int]] = queue.Queue()
        self._stop = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._client.reconnect_delay_set(0.5, 10)
        if tls is not None:  # mutual TLS: collector.pki.broker_tls
            self._client.tls_set_context(tls)
        self._client.max_inflight_messages_set(1000)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = session_expiry
        props.ReceiveMaximum = 1000
        self._client.connect_async(host, port, keepalive=30, clean_start=False, properties=props)
        self._worker = threading.Thread(target=self._work, name="ingest", daemon=True)
        self._periodic: list[Callable[[], list[Outgoing] | None]] = []

    def add_periodic(self, fn: Callable[[], list[Outgoing] | None]) -> None:
        """Run ``fn`` in the worker thread between batches, with the ingestor's tick, while this
        collector is the leader (the rulebook: it writes cases and vaults case actions, and the
        vault has this one writer thread).
        Messages ``fn`` returns are published (e.g. the readiness commands)."""
        self._periodic.append(fn)

    def start(self) -> None:
        """Connect (retrying in the background) and start the worker."""
        self._client.loop_start()
        self._worker.start()

    def stop(self) -> None:
        """Finish the current batch, then disconnect."""
        self._stop.set()
        self._worker.join(timeout=30)
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the collector: %s", reason)
            return
        share = f"$share/{self.share_group}/" if self.share_group else ""
        self._filters = [f"{share}{topics.PREFIX}/+/{s}" for s in topics.AGENT_STREAMS]
        client.subscribe([(f, 1) for f in self._filters])
        self.connected.set()
        log.info("collector connected to the broker")

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, codes: list[Any], _p: Any) -> None:
        """A refused filter means streams nobody here receives: say which, and where rights are given."""
        refused = [f"{f} ({c})" for f, c in zip(self._filters, codes) if c.is_failure]
        if refused:
            log.error("broker refused the collector's subscriptions %s: grant this identity the collector's rights "
                      "(deploy/mosquitto/acl, or deploy/mosquitto/cluster/dynsec.py add-collector)", ", ".join(refused))

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.connected.clear()
        log.warning("collector lost the broker: %s", reason)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._queue.put((Message(msg.topic, msg.payload, time.time()), msg.mid, msg.qos))

    def _work(self) -> None:
        """Batch, handle, publish acks, then PUBACK; run the periodic checks between batches."""
        next_tick = 0.0
        while not self._stop.is_set():
            batch = self._take(timeout=0.2)
            if batch:
                self._handle(batch)
            if time.monotonic() >= next_tick:
                self.ingestor.vault.tick()  # a signed checkpoint when due, even when idle (same writer thread)
                next_tick = time.monotonic() + 0.5
                if not self.leader():
                    continue
                for fn in [self.ingestor.tick, *self._periodic]:
                    try:
                        self._publish(fn() or [])
                    except Exception:  # noqa: BLE001 - a rule or database fault must not stop ingest
                        log.exception("periodic task %s failed; ingest goes on", getattr(fn, "__name__", fn))

    def _handle(self, batch: list[tuple[Message, int, int]]) -> None:
        try:
            acks = self.ingestor.handle([m for m, _, _ in batch])
        except Exception:  # noqa: BLE001 - e.g. the vault's disk failed; keep running
            # Nothing is acknowledged: the agents resend after their ack timeout.
            log.exception("ingest batch failed; %d messages left unacknowledged", len(batch))
            time.sleep(1.0)
            return
        self._publish(acks)
        for _, mid, qos in batch:
            self._client.ack(mid, qos)

    @property
    def client(self) -> mqtt.Client:
        """The collector's MQTT client, shared by the notifier for case notices (paho is thread-safe)."""
        return self._client

    def _publish(self, messages: list[Outgoing]) -> None:
        for name, payload, retain in messages:
            self._client.publish(name, payload, qos=1, retain=retain)

    def _take(self, timeout: float) -> list[tuple[Message, int, int]]:
        try:
            items = [self._queue.get(timeout=timeout)]
        except queue.Empty:
            return []
        while len(items) < self.batch_max:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return items
