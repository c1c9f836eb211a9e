#!/usr/bin/env python3
"""Scale-out: a reconnect storm of N simulated agents (mutual TLS, MQTT v5, persistent sessions)
after a broker restart, beside the same agents on plain TCP; and sustained ingest through one vs
two real collectors, beside mosquitto_sub's raw rate in the same share group; all in one run.

Per transport, a fresh Mosquitto on loopback: for TLS the shipped production config
(``deploy/mosquitto/mosquitto.conf`` + ``acl``, only paths, port and run-as user replaced, as the
tests do) with a throwaway CA made by :class:`collector.pki.Pki` and one client certificate per
agent (CN = agent id); for TCP the same ACL, persistence and queue limits with user names instead of
certificates. A collector stand-in (a child process, so it does not share the agents' CPU) holds
a persistent session on ``vg/v1/+/ev`` and answers each record with an ack on ``vg/v1/<agent>/ack``,
as the collector does. Then:

1. fresh connect: every agent connects (new session) and subscribes to its ack topic;
2. restart: the broker is stopped (SIGTERM, it saves its sessions), every agent queues
   ``--records`` records in its outbox while the broker is away, the broker is started again, and
   we time broker start -> listening -> every agent reconnected (session present) -> every queued
   record at the collector -> every agent holding the ack of its last record (outbox drained).
   Policies: ``at-once`` (retry every 0.5 s: the stampede the issue asks about) and ``agent`` (the
   agent uplink's full-jitter exponential back-off, 1 s .. 60 s, first attempt jittered too).
3. raw: ``mosquitto_pub -l`` into a ``$share`` group read by one, then two ``mosquitto_sub``: the
   broker's ceiling for sustained ingest by one or two collectors.
4. ingest: one burst of pre-signed envelopes from enrolled simulated agents (bench/ingest.py's
   builder and paho publisher), on plain TCP to a fresh Mosquitto, drained by real collectors
   (``python -m collector.cli --config X run``) into a fresh PostgreSQL schema: one collector
   without [cluster], a cluster of one (node a), and two nodes (a + b: one share group, one
   database, b with a's collector.key); beside ``mosquitto_sub -q 1`` in the same share group
   (one and two) for the same burst. The burst is queued in the broker while the consumers are
   paused (SIGSTOP), then they drain it. Records/s from the ``records`` row count sampled over
   time (steady: 10 % -> 90 %), and CPU seconds per process (psutil), so rates per CPU compare.

The agents are a small asyncio MQTT v5 client in this one process: paho with one loop thread per
client connected only 340 of 1,000 plain-TCP clients within 120 s here (1,001 threads).
Bounded: every wait has a deadline, everything is on 127.0.0.1 and in a temporary folder.

    .venv/bin/python bench/scale.py                        # everything: 5,000 agents, 100,000 records
    .venv/bin/python bench/scale.py --quick                # 500 agents; ingest 200 agents, 40,000 records
    .venv/bin/python bench/scale.py --phase ingest --quick # only the sustained-ingest phase
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import multiprocessing as mp
import random
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import psutil
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from collector.broker import free_port, mosquitto_binary
from collector.pki import Pki

from pgschema import PG_DEFAULT
from scale_ingest import ingest_phase, ingest_report  # bench/ is on sys.path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CONF = ROOT / "deploy" / "mosquitto" / "mosquitto.conf"
SHIPPED_ACL = ROOT / "deploy" / "mosquitto" / "acl"
ETC = "/etc/mosquitto/venueguard/"
COLLECTOR_ID = "venueguard-collector"  # the CN the shipped ACL gives the collector's rights
SESSION_EXPIRY = 7 * 24 * 3600
KEEPALIVE = 600  # longer than any phase: no PINGREQ needed


# -- MQTT v5, the few packets an agent and a collector stand-in need ------------------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(s: str) -> bytes:
    b = s.encode()
    return len(b).to_bytes(2, "big") + b


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    n, mult = 0, 1
    while True:
        b = buf[i]
        i += 1
        n += (b & 0x7F) * mult
        if b < 0x80:
            return n, i
        mult *= 128


def connect_packet(client_id: str, username: str | None, clean_start: bool) -> bytes:
    """CONNECT, MQTT v5, a persistent session (Session Expiry Interval) and Receive Maximum 1000."""
    flags = (0x02 if clean_start else 0) | (0x80 if username else 0)
    props = bytes([0x11]) + SESSION_EXPIRY.to_bytes(4, "big") + bytes([0x21]) + (1000).to_bytes(2, "big")
    body = _utf8("MQTT") + bytes([5, flags]) + KEEPALIVE.to_bytes(2, "big") + _varint(len(props)) + props
    return _packet(0x10, body + _utf8(client_id) + (_utf8(username) if username else b""))


class MqttLost(Exception):
    """The connection ended (or was refused)."""


class MiniClient:
    """One MQTT v5 connection on asyncio: QoS 1 both ways, nothing else. Cheap enough for 5,000
    in one process, which is why it exists (paho needs a thread or an external loop per client)."""

    def __init__(self, client_id: str, ctx: ssl.SSLContext | None, username: str | None,
                 on_message: Callable[[str, bytes], None]) -> None:
        self.client_id, self.ctx, self.username, self.on_message = client_id, ctx, username, on_message
        self._writer: asyncio.StreamWriter | None = None
        self._next_id = 0
        self._waiting: dict[int, asyncio.Future[bytes]] = {}
        self.lost = asyncio.Event()

    async def connect(self, port: int) -> bool:
        """Open, CONNECT, await CONNACK; return session present. Raises MqttLost or OSError."""
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", port, ssl=self.ctx, server_hostname="127.0.0.1" if self.ctx else None), 90)
        writer.write(connect_packet(self.client_id, self.username, clean_start=False))
        try:
            first, body = await asyncio.wait_for(_read_packet(reader), 90)
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, OSError) as exc:
            writer.close()  # e.g. the broker gave up on a slow handshake ("exceeded timeout")
            raise MqttLost(f"no CONNACK: {exc!r}") from exc
        if first >> 4 != 2 or body[1] >= 0x80:
            writer.close()
            raise MqttLost(f"CONNACK refused: {body[1:2].hex()}")
        self._writer, self.lost = writer, asyncio.Event()
        asyncio.get_running_loop().create_task(self._read_loop(reader))
        return bool(body[0] & 1)

    async def subscribe(self, topic_filter: str) -> int:
        """SUBSCRIBE at QoS 1; return the SUBACK reason code."""
        pid = self._pid()
        body = await self._request(pid, _packet(0x82, pid.to_bytes(2, "big") + b"\x00" + _utf8(topic_filter) + b"\x01"))
        _, i = _read_varint(body, 2)
        return body[i]

    def publish(self, topic: str, payload: bytes) -> asyncio.Future[bytes]:
        """PUBLISH at QoS 1; the future completes with the PUBACK body."""
        pid = self._pid()
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[pid] = fut
        self._send(_packet(0x32, _utf8(topic) + pid.to_bytes(2, "big") + b"\x00" + payload))
        return fut

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def _pid(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    def _send(self, data: bytes) -> None:
        if self._writer is None or self.lost.is_set():
            raise MqttLost("not connected")
        self._writer.write(data)

    async def _request(self, pid: int, data: bytes) -> bytes:
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[pid] = fut
        self._send(data)
        return await asyncio.wait_for(fut, 90)

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                first, body = await _read_packet(reader)
                kind = first >> 4
                if kind == 3:
                    self._on_publish(first, body)
                elif kind in (4, 9):  # PUBACK, SUBACK
                    fut = self._waiting.pop(int.from_bytes(body[:2], "big"), None)
                    if fut is not None and not fut.done():
                        fut.set_result(body)
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            self.lost.set()
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(MqttLost("connection lost"))
            self._waiting.clear()
            if self._writer is not None:
                self._writer.close()

    def _on_publish(self, first: int, body: bytes) -> None:
        tlen = int.from_bytes(body[:2], "big")
        topic = body[2:2 + tlen].decode()
        i = 2 + tlen
        pid = None
        if (first >> 1) & 3:
            pid, i = int.from_bytes(body[i:i + 2], "big"), i + 2
        plen, i = _read_varint(body, i)
        self.on_message(topic, body[i + plen:])
        if pid is not None and self._writer is not None:
            self._writer.write(_packet(0x40, pid.to_bytes(2, "big")))


async def _read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first = (await reader.readexactly(1))[0]
    n, mult = 0, 1
    while True:
        b = (await reader.readexactly(1))[0]
        n += (b & 0x7F) * mult
        if b < 0x80:
            break
        mult *= 128
    return first, (await reader.readexactly(n)) if n else b""


# -- certificates -------------------------------------------------------------------------------

def make_pki(folder: Path, agents: list[str]) -> Pki:
    """A throwaway CA (``Pki.init``: broker + collector certificates) and one client certificate per
    agent, written as ``agents/<id>.pem`` (cert + key). Signed here rather than by
    ``Pki.issue_agent``, which rewrites the ledger and CRL per agent (quadratic for 5,000)."""
    pki = Pki(folder)
    pki.init(["127.0.0.1"], COLLECTOR_ID)
    ca = x509.load_pem_x509_certificate(pki.path("ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key(pki.path("ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    (folder / "agents").mkdir()
    now = dt.datetime.now(dt.timezone.utc)
    for agent_id in agents:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, agent_id)]))
                .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        (folder / "agents" / f"{agent_id}.pem").write_bytes(pem)
    return pki


def client_context(ca: Path, chain: Path, key: Path | None = None) -> ssl.SSLContext:
    """What ``protocol.tls`` builds: TLS >= 1.2, our CA only, host name checked, our certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile=str(ca))
    ctx.load_cert_chain(str(chain), str(key) if key else None)
    return ctx


# -- the broker -----------------------------------------------------------------------------------

class Broker:
    """Mosquitto on 127.0.0.1 with the production config (tls) or its plain twin (tcp)."""

    def __init__(self, workdir: Path, transport: str, pki: Pki) -> None:
        self.workdir, self.transport, self.pki, self.port = workdir, transport, pki, free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True)
        (workdir / "mosquitto.conf").write_text(self._config())

    def _config(self) -> str:
        text = SHIPPED_CONF.read_text()
        swaps = [(f"acl_file {ETC}acl", f"acl_file {SHIPPED_ACL}"), (ETC, f"{self.pki.folder}/"),
                 ("persistence_location /var/lib/mosquitto/", f"persistence_location {self.workdir}/"),
                 ("log_dest file /var/log/mosquitto/mosquitto.log", f"log_dest file {self.workdir / 'mosquitto.log'}"),
                 ("\nlistener 8883\n", f"\nlistener {self.port} 127.0.0.1\n")]
        for old, new in swaps:
            if old not in text:
                raise SystemExit(f"{SHIPPED_CONF} no longer contains {old!r}: update bench/scale.py")
            text = text.replace(old, new)
        if self.transport == "tls-nodelay":  # the shipped config plus Nagle off (measured: 65 -> ~10 ms a handshake)
            text = "set_tcp_nodelay true\n" + text
        if self.transport == "tcp":  # same ACL, persistence and limits; user names instead of certificates
            head = text.split("\nlistener ")[0].replace("allow_anonymous false", "allow_anonymous true")
            text = head + f"\nlistener {self.port} 127.0.0.1\nprotocol mqtt\n"
        return f"user {getpass.getuser()}\n" + text

    def start(self) -> None:
        self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(self.workdir / "mosquitto.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_listening(self, timeout: float = 60.0) -> float:
        """Monotonic time at which the listener accepted a TCP connection."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return time.monotonic()
            except OSError:
                time.sleep(0.01)
        raise SystemExit(f"mosquitto did not listen on {self.port} within {timeout:.0f} s; see {self.workdir}/mosquitto.log")

    def stop(self) -> None:
        """SIGTERM: Mosquitto writes its sessions to the persistence file, then exits."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
            self.proc = None

    def cpu(self) -> float:
        if self.proc is None:
            return 0.0
        t = psutil.Process(self.proc.pid).cpu_times()
        return t.user + t.system


# -- the collector stand-in (child process) -------------------------------------------------------

@dataclass
class Shared:
    """Counters the collector stand-in shares with the bench process."""

    target: Any  # records expected so far (set by the bench)
    stored: Any  # distinct records received
    t_all: Any  # monotonic time the target was reached (0: not yet)
    cpu: Any  # the child's CPU seconds
    stop: Any


def collector_main(port: int, transport: str, pki_dir: str, shared: Shared) -> None:
    """Child process: persistent session on vg/v1/+/ev, an ack per record, counts."""
    asyncio.run(_collector(port, transport, Path(pki_dir), shared))


async def _collector(port: int, transport: str, pki_dir: Path, shared: Shared) -> None:
    seen: set[tuple[str, bytes]] = set()
    ctx = (client_context(pki_dir / "ca.crt", pki_dir / "collector.crt", pki_dir / "collector.key")
           if transport != "tcp" else None)
    client: MiniClient

    def on_message(topic: str, payload: bytes) -> None:
        agent = topic.split("/")[2]
        seen.add((agent, payload))
        shared.stored.value = len(seen)
        if shared.target.value and len(seen) >= shared.target.value and not shared.t_all.value:
            shared.t_all.value = time.monotonic()
        try:
            client.publish(f"vg/v1/{agent}/ack", payload).add_done_callback(lambda f: f.exception())
        except MqttLost:
            pass  # the agent resends after reconnecting; it is acked then

    client = MiniClient("bench-collector", ctx, None if ctx else COLLECTOR_ID, on_message)
    subscribed = False
    while not shared.stop.is_set():
        shared.cpu.value = time.process_time()
        try:
            present = await client.connect(port)
        except (OSError, MqttLost, asyncio.TimeoutError, ssl.SSLError):
            await asyncio.sleep(0.1)
            continue
        if not (present and subscribed):
            code = await client.subscribe("vg/v1/+/ev")
            if code >= 0x80:
                raise SystemExit(f"the broker refused the collector's subscription: reason 0x{code:02x}")
            subscribed = True
        while not client.lost.is_set() and not shared.stop.is_set():
            shared.cpu.value = time.process_time()
            await asyncio.sleep(0.1)
    client.close()


# -- the agents -----------------------------------------------------------------------------------

@dataclass
class Phase:
    """What one phase measures: when each agent connected and when its outbox drained."""

    start: float  # monotonic time of the broker (re)start
    connected: dict[str, float] = field(default_factory=dict)
    present: int = 0
    drained: dict[str, float] = field(default_factory=dict)
    attempts: int = 0
    failures: int = 0


class SimAgent:
    """A simulated agent: a persistent session, an outbox of seqs, deleted only on the ack."""

    def __init__(self, agent_id: str, ctx: ssl.SSLContext | None, port: int) -> None:
        self.agent_id, self.port = agent_id, port
        self.client = MiniClient(agent_id, ctx, None if ctx else agent_id, self._on_ack)
        self.outbox: list[int] = []
        self.next_seq = 1
        self.acked = 0
        self.policy = "at-once"
        self.phase: Phase | None = None
        self.subscribed = False

    def queue(self, n: int) -> None:
        """Records produced while the broker is away."""
        self.outbox += range(self.next_seq, self.next_seq + n)
        self.next_seq += n

    async def run(self) -> None:
        """Connect, publish the outbox, wait for loss; again, with the back-off of ``policy``."""
        attempt = 0
        while True:
            if self.phase is None:
                await asyncio.sleep(0.05)
                continue
            await asyncio.sleep(self._delay(attempt))
            attempt += 1
            phase = self.phase
            phase.attempts += 1
            try:
                present = await self.client.connect(self.port)
            except (OSError, MqttLost, asyncio.TimeoutError, ssl.SSLError):
                phase.failures += 1
                continue
            attempt = 0
            phase.connected[self.agent_id] = time.monotonic()
            phase.present += present
            try:
                await self._session(present)
            except (MqttLost, asyncio.TimeoutError):
                pass
            await self.client.lost.wait()

    def _delay(self, attempt: int) -> float:
        if self.policy == "agent":  # agent/uplink.py: full jitter, 1 s .. 60 s, the first attempt too
            return random.uniform(0, min(60.0, 2.0 ** attempt))
        return 0.0 if attempt == 0 else 0.5 + random.uniform(0, 0.05)

    async def _session(self, present: bool) -> None:
        if not (present and self.subscribed):
            code = await self.client.subscribe(f"vg/v1/{self.agent_id}/ack")
            if code >= 0x80:
                raise SystemExit(f"the broker refused {self.agent_id}'s ack subscription: reason 0x{code:02x}")
            self.subscribed = True
        for seq in self.outbox:
            self.client.publish(f"vg/v1/{self.agent_id}/ev", str(seq).encode()).add_done_callback(_pub_done)
        self._check_drained()

    def _on_ack(self, _topic: str, payload: bytes) -> None:
        self.acked = max(self.acked, int(payload))
        self.outbox = [s for s in self.outbox if s > self.acked]
        self._check_drained()

    def _check_drained(self) -> None:
        if not self.outbox and self.phase is not None and self.agent_id not in self.phase.drained:
            self.phase.drained[self.agent_id] = time.monotonic()


def _agent_died(task: asyncio.Task[None]) -> None:
    """A simulated agent must never stop by itself: say why it did, and stop the bench."""
    if not task.cancelled() and task.exception() is not None:
        raise SystemExit(f"a simulated agent crashed: {task.exception()!r}")


def _pub_done(fut: asyncio.Future[bytes]) -> None:
    """A PUBACK reason >= 0x80 (e.g. 0x87 denied by the ACL) is a failure the bench must not hide."""
    if fut.cancelled() or fut.exception() is not None:
        return  # lost with the connection: resent after the reconnect
    body = fut.result()
    if len(body) > 2 and body[2] >= 0x80:
        raise SystemExit(f"PUBACK reason 0x{body[2]:02x}: the broker refused an agent's record")


# -- one transport ----------------------------------------------------------------------------------

@dataclass
class Result:
    """Figures of one phase, seconds from the broker (re)start."""

    name: str
    listening: float
    connected: float
    p50: float
    p95: float
    present: int
    stored: float
    drained: float
    attempts: int
    failures: int
    broker_cpu: float
    agents_cpu: float
    collector_cpu: float
    overflows: int


async def run_transport(transport: str, n: int, records: int, pki: Pki, work: Path, timeout: float,
                        down: float) -> list[Result]:
    """Fresh connect, then a restart per policy, for one transport; return the figures."""
    broker = Broker(work / f"broker-{transport}", transport, pki)
    ids = [f"bench-{i:05d}" for i in range(n)]
    ctxs = ([client_context(pki.path("ca.crt"), pki.folder / "agents" / f"{a}.pem") for a in ids]
            if transport != "tcp" else [None] * n)
    agents = [SimAgent(a, c, broker.port) for a, c in zip(ids, ctxs)]
    mpc = mp.get_context("fork")
    shared = Shared(mpc.Value("q", 0), mpc.Value("q", 0), mpc.Value("d", 0.0), mpc.Value("d", 0.0), mpc.Event())
    broker.start()
    broker.wait_listening()
    child = mpc.Process(target=collector_main, args=(broker.port, transport, str(pki.folder), shared), daemon=True)
    child.start()
    tasks = [asyncio.get_running_loop().create_task(a.run()) for a in agents]
    for t in tasks:
        t.add_done_callback(_agent_died)
    results = []
    try:
        phases = [("fresh connect", "at-once", 0)] + [("restart, " + p, p, records) for p in
                                                      (("at-once", "agent") if transport == "tls" else ("at-once",))]
        for name, policy, k in phases:
            results.append(await _phase(f"{transport}: {name}", broker, agents, shared, policy, k, timeout, down))
    finally:
        for t in tasks:
            t.cancel()
        for a in agents:
            a.client.close()
        shared.stop.set()
        child.join(10)
        if child.is_alive():
            child.kill()
        broker.stop()
    return results


async def _phase(name: str, broker: Broker, agents: list[SimAgent], shared: Shared, policy: str, k: int,
                 timeout: float, down: float) -> Result:
    """Restart the broker (unless it is the first connect), then wait for every agent and record.

    The records are queued and the phase handed to the agents before the broker stops, so they
    back off (and fail) through the downtime as real agents do, and a late ack of the previous
    phase cannot mark an agent drained."""
    phase = Phase(0.0)
    cpu0 = (broker.cpu(), time.process_time(), shared.cpu.value)
    overflows0 = listen_overflows()
    if k:
        for a in agents:
            a.queue(k)
        shared.target.value += k * len(agents)
        shared.t_all.value = 0.0
    for a in agents:
        a.policy, a.phase = policy, phase
    if k:
        await asyncio.to_thread(broker.stop)
        await asyncio.sleep(down)
        broker.start()
        cpu0 = (0.0, *cpu0[1:])
    start = phase.start = time.monotonic()
    listening = await asyncio.to_thread(broker.wait_listening)
    deadline = start + timeout
    while time.monotonic() < deadline and (len(phase.connected) < len(agents) or len(phase.drained) < len(agents)
                                           or (k and not shared.t_all.value)):
        await asyncio.sleep(0.5)
        print(f"\r  {name}: {time.monotonic() - start:5.1f} s, connected {len(phase.connected)}/{len(agents)}, "
              f"drained {len(phase.drained)}/{len(agents)}, records at the collector {shared.stored.value}/"
              f"{shared.target.value}   ", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    if len(phase.connected) < len(agents) or len(phase.drained) < len(agents) or (k and not shared.t_all.value):
        raise SystemExit(f"{name}: not done within {timeout:.0f} s (connected {len(phase.connected)}, drained "
                         f"{len(phase.drained)}, records {shared.stored.value}/{shared.target.value}); see "
                         f"{broker.workdir}/mosquitto.log")
    lat = sorted(t - start for t in phase.connected.values())
    return Result(name, listening - start, lat[-1], statistics.median(lat), lat[int(0.95 * (len(lat) - 1))],
                  phase.present, (shared.t_all.value - start) if k else 0.0, max(phase.drained.values()) - start,
                  phase.attempts, phase.failures, broker.cpu() - cpu0[0], time.process_time() - cpu0[1],
                  shared.cpu.value - cpu0[2], listen_overflows() - overflows0)


def listen_overflows() -> int:
    """The kernel's count of connections dropped because a listen queue was full (this network
    namespace, every process): Mosquitto 2.0.11 listens with a backlog of 100 (``ss -ltn``), so
    a storm's SYNs beyond it are dropped and retried by the clients' kernels after 1, 3, 7 ... s."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split()[1:], values.split()[1:]))["ListenOverflows"])
    return 0


# -- the raw ceiling of sustained ingest: mosquitto_sub in one shared group ---------------------------

def raw_share_rate(work: Path, pki: Pki, messages: int, members: int, timeout: float = 120.0) -> float:
    """Records/s that ``members`` ``mosquitto_sub`` processes in one ``$share`` group receive from one
    ``mosquitto_pub -l`` (QoS 1, 200-byte payloads) through the plain-TCP broker: the broker's
    ceiling for sustained ingest by one or two collectors, measured in this run."""
    missing = [tool for tool in ("mosquitto_sub", "mosquitto_pub") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"{', '.join(missing)} not found: `apt-get install mosquitto-clients`, or pass --raw-messages 0")
    broker = Broker(work / f"broker-raw-{members}", "tcp", pki)
    broker.start()
    broker.wait_listening()
    subs = [subprocess.Popen(["mosquitto_sub", "-p", str(broker.port), "-h", "127.0.0.1", "-V", "mqttv5", "-q", "1",
                              "-u", COLLECTOR_ID, "-i", f"raw-{k}", "-t", "$share/vg-collectors/vg/v1/+/ev"],
                             stdout=subprocess.PIPE) for k in range(members)]
    counts = [0] * members
    done = [threading.Event() for _ in subs]

    def count(k: int) -> None:
        assert subs[k].stdout is not None
        for _ in subs[k].stdout:
            counts[k] += 1
            if sum(counts) >= messages:
                break
        done[k].set()

    threads = [threading.Thread(target=count, args=(k,), daemon=True) for k in range(members)]
    for t in threads:
        t.start()
    time.sleep(1.0)  # the subscriptions are in place
    lines = work / "raw-lines.txt"
    lines.write_text(("x" * 200 + "\n") * messages)
    start = time.monotonic()
    with lines.open("rb") as fh:
        pub = subprocess.Popen(["mosquitto_pub", "-p", str(broker.port), "-h", "127.0.0.1", "-V", "mqttv5", "-q", "1",
                                "-u", "bench-00000", "-i", "raw-pub", "-t", "vg/v1/bench-00000/ev", "-l"], stdin=fh)
        deadline = start + timeout
        while sum(counts) < messages and time.monotonic() < deadline:
            time.sleep(0.01)
        elapsed = time.monotonic() - start
        pub.wait(60)
    for p in subs:
        p.terminate()
        p.wait(10)
    broker.stop()
    if sum(counts) < messages:
        raise SystemExit(f"raw share rate: {sum(counts)} of {messages} messages reached {members} mosquitto_sub "
                         f"within {timeout:.0f} s (mosquitto_pub exit status {pub.returncode}); see {broker.workdir}")
    return messages / elapsed


def _raise_nofile(n: int) -> None:
    """Each agent is a socket here and in the broker (which inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 2 * n + 1024))
    if want < n + 256:
        raise SystemExit(f"open-file limit {hard} is too low for {n} agents: raise `ulimit -Hn` (as root) first")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def report(rows: list[Result], n: int, records: int) -> None:
    """The figures as a table, then TLS against plain TCP."""
    if not rows:
        return
    print(f"\n{n} agents, {records} records each queued while the broker was down; seconds from broker start")
    head = ("phase", "listen", "all conn.", "p50", "p95", "sess.present", "records in", "acks out",
            "attempts", "failed", "listen overflows", "broker CPU", "agents CPU", "collector CPU")
    print(" | ".join(head))
    for r in rows:
        vals = (r.name, f"{r.listening:.2f}", f"{r.connected:.2f}", f"{r.p50:.2f}", f"{r.p95:.2f}", str(r.present),
                f"{r.stored:.2f}" if r.stored else "-", f"{r.drained:.2f}", str(r.attempts), str(r.failures),
                str(r.overflows), f"{r.broker_cpu:.1f}", f"{r.agents_cpu:.1f}", f"{r.collector_cpu:.1f}")
        print(" | ".join(vals))
    by = {r.name: r for r in rows}
    tls, tcp = by.get("tls: restart, at-once"), by.get("tcp: restart, at-once")
    if tls and tcp:
        print(f"\nrestart, at once: all drained in {tls.drained:.2f} s with TLS vs {tcp.drained:.2f} s on plain TCP "
              f"(x{tls.drained / max(tcp.drained, 1e-6):.1f}); broker CPU {tls.broker_cpu:.1f} s vs {tcp.broker_cpu:.1f} s")


def parse_args() -> argparse.Namespace:
    """The command line; --quick shrinks every phase to a few minutes on the 2-CPU VM."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--phase", choices=("all", "storm", "raw", "ingest"), default="all",
                    help="storm: the reconnect storm (--transports); raw: mosquitto_pub -> $share group; ingest: "
                         "sustained ingest through one and two real collectors; all: every one of them")
    ap.add_argument("--agents", type=int, default=5000)
    ap.add_argument("--quick", action="store_true",
                    help="500 agents in the storm; 200 agents and 8,000 envelopes in ingest")
    ap.add_argument("--records", type=int, default=5, help="records each agent queues while the broker is down")
    ap.add_argument("--down", type=float, default=3.0, help="seconds the broker stays down")
    ap.add_argument("--timeout", type=float, default=300.0, help="give up a phase after this many seconds")
    ap.add_argument("--transports", default="tls,tcp",
                    help="comma-separated: tls (the shipped config), tcp (baseline), tls-nodelay (shipped + "
                         "set_tcp_nodelay); '' runs only the raw shared-subscription rate")
    ap.add_argument("--raw-messages", type=int, default=20_000,
                    help="messages for the raw shared-subscription rate (0: skip); at 100,000 Mosquitto 2.0.11 "
                         "disconnects mosquitto_pub -l -q 1 'due to out of memory' after ~35,000")
    ap.add_argument("--ingest-agents", type=int, default=1000, help="ingest: simulated agents, enrolled, one key each")
    ap.add_argument("--ingest-envelopes", type=int, default=20_000, help="ingest: envelopes in the burst")
    ap.add_argument("--records-per-envelope", type=int, default=5)
    ap.add_argument("--ingest-setups", default="alone,a,ab",
                    help="ingest: comma-separated collector setups: alone (no [cluster]), a (a cluster of one), "
                         "ab (two nodes in one share group)")
    ap.add_argument("--ingest-rounds", type=int, default=1, help="ingest: repeat every setup this many times, "
                    "interleaved; the ratios then compare medians")
    ap.add_argument("--db", default=PG_DEFAULT,
                    help="ingest: PostgreSQL server (a fresh schema per setup, dropped after)")
    args = ap.parse_args()
    if args.quick:
        args.agents, args.ingest_agents, args.ingest_envelopes = 500, 200, 8000
    return args


def main() -> None:
    args = parse_args()
    n = args.agents
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up (brokers, children, schema, temp folder) on kill
    storm, raw, ingest = (args.phase in ("all", p) for p in ("storm", "raw", "ingest"))
    with tempfile.TemporaryDirectory(prefix="vg-scale-") as tmp:
        work = Path(tmp)
        if storm or (raw and args.raw_messages):
            storm = storm and bool(args.transports)
            if storm:
                _raise_nofile(n)
            t = time.perf_counter()
            pki = make_pki(work / "pki", [f"bench-{i:05d}" for i in range(n if storm else 1)])
            print(f"setup: CA and {n if storm else 1} agent certificates in {time.perf_counter() - t:.1f} s (EC P-256)",
                  file=sys.stderr)
        rows: list[Result] = []
        for transport in filter(None, args.transports.split(",") if storm else []):
            if transport not in ("tls", "tcp", "tls-nodelay"):
                raise SystemExit(f"--transports: unknown transport {transport!r} (tls, tcp, tls-nodelay)")
            rows += asyncio.run(run_transport(transport, n, args.records, pki, work, args.timeout, args.down))
        report(rows, n, args.records)
        if raw and args.raw_messages:
            one, two = (raw_share_rate(work, pki, args.raw_messages, m) for m in (1, 2))
            print(f"\nraw ceiling for sustained ingest ({args.raw_messages} QoS-1 records of 200 B, mosquitto_pub -> "
                  f"$share group, plain TCP): 1 mosquitto_sub {one:,.0f} records/s, 2 mosquitto_sub {two:,.0f} "
                  f"records/s (x{two / one:.2f})")
        if ingest:
            runs, size = ingest_phase(work, args)
            ingest_report(runs, size, args.db)
            if any(r.done < r.expected for r in runs):
                sys.exit(1)


if __name__ == "__main__":
    main()
