"""``venueguard-collector doctor``: is this collector fit to run? One row per dependency.

Checks the broker (an MQTT v5 CONNECT with the configured identity and TLS), the database
(reachable, Alembic revision current), InfluxDB (``/health``, when configured), the vault
(folders writable, checkpoints fresh), the signing keys, the TLS certificates (when configured)
and the clock (against whatever independent clock is at hand). It reads only: no migration, no
key creation, no vault lock, so it is safe beside the running service. The table is in Chinese
(``collector/strings``), like ``venueguard-agent check``; exit 0 when nothing failed, else 1.

``[broker] tls_*`` and ``[influx]`` are read with ``getattr`` and defaults, so a config without
them (an older file, or a plain namespace in tests) is checked too.
"""

from __future__ import annotations

import argparse
import datetime as dt
import email.utils
import json
import os
import ssl
import statistics
import stat
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table
from rich.text import Text

from collector.config import CollectorConfig
from collector.pki import DOCTOR_ID
from collector.strings import t

MIGRATIONS = Path(__file__).parent / "store" / "migrations"
#: Certificates expiring sooner than this are reported, leaving time to re-issue and roll out.
CERT_WARN_DAYS = 30
#: A checkpoint older than this many intervals means the collector is not sealing.
STALE_INTERVALS = 3
#: Agents whose clocks are compared must have been seen this recently (seconds).
AGENT_RECENT = 3600
MIN_AGENTS = 3
TIMEOUT = 10.0
#: A shared subscription nobody uses: a broker that grants it to the doctor's identity grants any
#: client a place in the collectors' group (Mosquitto's acl_file checks no SUBSCRIBE).
SHARE_PROBE = "$share/vg-doctor-probe/vg/v1/doctor-probe/ev"
STYLES = {"pass": "green", "fail": "bold red", "skip": "dim", "note": "yellow"}


@dataclass(frozen=True)
class Finding:
    """One row: which dependency, the verdict (pass / fail / skip / note) and what to do."""

    item: str
    result: str
    detail: str


@dataclass
class Context:
    """What checks share: the config, its path for fix commands, and clock readings they made."""

    cfg: CollectorConfig
    cmd: str  # how to call the collector with this config, for the fixes we suggest
    clocks: list[tuple[str, float, float]]  # (source label, offset seconds = theirs - ours, resolution)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``doctor`` on the collector CLI."""
    sub.add_parser("doctor", help="check broker, database, InfluxDB, vault, keys, certificates, cluster and clock")


def handler(cfg: CollectorConfig, args: argparse.Namespace) -> int:
    """Run every check, print the table; 0 when nothing failed, 1 otherwise."""
    cmd = f"venueguard-collector --config {args.config}" if args.config else "venueguard-collector"
    findings = run_checks(Context(cfg, cmd, []))
    render(findings, Console(), t("doctor.title", config=args.config or t("doctor.default_config")))
    return 1 if any(f.result == "fail" for f in findings) else 0


def run_checks(ctx: Context) -> list[Finding]:
    """Every check in table order; the clock last, as it uses readings the others made."""
    checks: list[tuple[str, Callable[[Context], tuple[str, str]]]] = [
        ("broker", check_broker), ("database", check_database), ("influx", check_influx),
        ("vault", check_vault), ("keys", check_keys), ("certs", check_certificates), ("cluster", check_cluster),
        ("clock", check_clock)]
    out = []
    for item, check in checks:
        try:
            result, detail = check(ctx)
        except Exception as exc:  # a check must never hide the others
            result, detail = "fail", t("doctor.crashed", error=f"{type(exc).__name__}: {exc}")
        out.append(Finding(item, result, detail))
    return out


def render(findings: list[Finding], console: Console, title: str) -> None:
    """The table (项目 / 结果 / 说明与整改) and a summary line."""
    console.print(Text(title))
    table = Table(show_lines=True)
    for column in ("doctor.col.item", "doctor.col.result", "doctor.col.detail"):
        table.add_column(t(column), overflow="fold")
    for f in findings:  # Text, not markup: "[broker]" in a hint is not a style tag
        table.add_row(Text(t(f"doctor.item.{f.item}")), Text(t(f"doctor.result.{f.result}"), style=STYLES[f.result]),
                      Text(f.detail))
    console.print(table)
    counts = Counter(f.result for f in findings)
    verdict = "bad" if counts["fail"] else "ok"
    console.print(Text(t("doctor.summary", total=len(findings), passed=counts["pass"], failed=counts["fail"],
                         skipped=counts["skip"], noted=counts["note"], verdict=t(f"doctor.verdict.{verdict}")),
                       style="bold red" if counts["fail"] else "green"))


# -- broker ---------------------------------------------------------------------------------------

def _tls_files(cfg: CollectorConfig) -> tuple[Path, Path, Path] | None:
    """The broker TLS files when configured (``[broker] tls_ca, tls_cert, tls_key``)."""
    names = [getattr(cfg.broker, f"tls_{n}", None) for n in ("ca", "cert", "key")]
    if not all(names):
        return None
    return Path(names[0]), Path(names[1]), Path(names[2])  # type: ignore[arg-type]


def check_broker(ctx: Context) -> tuple[str, str]:
    """An MQTT v5 CONNECT (clean, no session left behind) under a client id of its own."""
    from protocol.tls import context_from_files

    b = ctx.cfg.broker
    address = f"{b.host}:{b.port}"
    files = _tls_files(ctx.cfg)
    if files:
        # Never the collector's own certificate: its CN is the running collector's client id.
        ca, cert, _ = files
        files = ca, cert.with_name(f"collector-{DOCTOR_ID}.crt"), cert.with_name(f"collector-{DOCTOR_ID}.key")
        if not files[1].exists() or not files[2].exists():
            return "note", t("doctor.broker.no_identity", cert=files[1], id=DOCTOR_ID)
    try:
        answer = _connect_once(b.host, b.port, f"{ctx.cfg.client_id}-doctor-{uuid.uuid4().hex[:8]}",
                               context_from_files(*files) if files else None,
                               SHARE_PROBE if ctx.cfg.cluster.enabled else None)
    except ssl.SSLError as exc:
        return "fail", t("doctor.broker.tls_error", address=address, error=exc)
    except Exception as exc:  # OSError, ProtocolError from bad TLS files, socket.gaierror …
        return "fail", t("doctor.broker.unreachable", address=address, error=getattr(exc, "detail", None) or exc)
    if "reason" not in answer and "closed" in answer:
        # With TLS 1.3 a refused client certificate shows only as the broker closing the connection.
        key = "doctor.broker.tls_rejected" if files else "doctor.broker.closed"
        return "fail", t(key, address=address, reason=str(answer["closed"]))
    if "reason" not in answer:
        return "fail", t("doctor.broker.no_answer", address=address, seconds=int(TIMEOUT))
    if answer["reason"].is_failure:
        return "fail", t("doctor.broker.refused", address=address, reason=str(answer["reason"]))
    if answer.get("probe_granted"):
        return "fail", t("doctor.broker.share_open", address=address, probe=SHARE_PROBE)
    mode = t("doctor.broker.mode_tls") if files else t("doctor.broker.mode_plain")
    return "pass", t("doctor.broker.ok", address=address, mode=mode)


def _connect_once(host: str, port: int, client_id: str, tls: ssl.SSLContext | None,
                  probe: str | None = None) -> dict[str, Any]:
    """Connect, wait for CONNACK or a hang-up, disconnect: ``{"reason": …}`` and/or ``{"closed": …}``;
    with ``probe``, also SUBSCRIBE to it and say whether the broker granted it (``probe_granted``).

    Raises what the TCP connect or TLS handshake raises.
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    answer: dict[str, Any] = {}
    done = threading.Event()

    def on_connect(client: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        answer["reason"] = reason
        if probe is None or reason.is_failure:
            done.set()
        else:
            client.subscribe(probe, qos=1)

    def on_subscribe(_c: Any, _u: Any, _m: Any, codes: list[Any], _p: Any) -> None:
        answer["probe_granted"] = not codes[0].is_failure
        done.set()

    def on_disconnect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        answer.setdefault("closed", reason)  # before any CONNACK: the broker hung up on us
        done.set()

    client.on_connect, client.on_disconnect, client.on_subscribe = on_connect, on_disconnect, on_subscribe
    if tls is not None:
        client.tls_set_context(tls)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    client.connect(host, port, keepalive=10, clean_start=True, properties=props)
    client.loop_start()
    try:
        done.wait(TIMEOUT)
    finally:
        client.disconnect()
        client.loop_stop()
    return answer


# -- database -------------------------------------------------------------------------------------

def _scripts() -> Any:
    """The Alembic revisions this program ships."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg)


def check_database(ctx: Context) -> tuple[str, str]:
    """Reachable and at the newest revision; never migrates (that is ``migrate``'s job)."""
    from alembic.runtime.migration import MigrationContext

    url = sa.engine.make_url(ctx.cfg.database_url)
    shown = url.render_as_string(hide_password=True)
    fix = {"url": shown, "cmd": ctx.cmd}
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        return "fail", t("doctor.db.missing", **fix)
    engine = sa.create_engine(url, connect_args={"connect_timeout": int(TIMEOUT)} if url.get_backend_name() == "postgresql" else {})
    try:
        with engine.connect() as conn:
            revision = MigrationContext.configure(conn).get_current_revision()
            if url.get_backend_name() == "postgresql":
                _read_db_clock(conn, ctx)
    except sa.exc.SQLAlchemyError as exc:
        error = str(getattr(exc, "orig", exc) or exc).strip().splitlines()[0]
        return "fail", t("doctor.db.unreachable", url=shown, error=error)
    finally:
        engine.dispose()
    scripts = _scripts()
    head = str(scripts.get_current_head())
    if revision is None:
        return "fail", t("doctor.db.not_migrated", **fix)
    if revision != head:
        known = {r.revision for r in scripts.walk_revisions()}
        key = "doctor.db.outdated" if revision in known else "doctor.db.unknown_revision"
        return "fail", t(key, revision=revision, head=head, **fix)
    return "pass", t("doctor.db.ok", url=shown, revision=revision)


def check_cluster(ctx: Context) -> tuple[str, str]:
    """In a cluster: a leader holds the lock (else rules, readiness and notices stand still), and
    this collector's vault id is not claimed by another host."""
    from collector.leader import LEADER_KEY
    from collector.vault.wiring import vault_host

    cfg = ctx.cfg
    if not cfg.cluster.enabled:
        return "skip", t("doctor.cluster.alone")
    engine = sa.create_engine(cfg.database_url, connect_args={"connect_timeout": int(TIMEOUT)})
    try:
        with engine.connect() as conn:
            holder, epoch = conn.execute(sa.text("SELECT holder, epoch FROM cluster_leader WHERE id = 1")).one()
            held = conn.execute(sa.text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = :key "
                "AND objid = hashtext(current_schema())::oid AND objsubid = 2"), {"key": LEADER_KEY}).scalar()
            claimed = conn.execute(sa.text("SELECT host FROM vaults WHERE id = :id"), {"id": cfg.vault_id}).scalar()
    except sa.exc.SQLAlchemyError as exc:
        return "fail", t("doctor.cluster.unreadable", error=str(getattr(exc, "orig", exc)).strip().splitlines()[0])
    finally:
        engine.dispose()
    host = vault_host(cfg)
    if claimed and claimed != host:
        return "fail", t("doctor.cluster.vault_claimed", vault=cfg.vault_id, holder=claimed, host=host)
    if not held:
        return "fail", t("doctor.cluster.no_leader", last=holder or "—", epoch=epoch)
    return "pass", t("doctor.cluster.ok", node=cfg.cluster.node_id, leader=holder, epoch=epoch,
                     group=cfg.cluster.share_group, vault=cfg.vault_id)


def _read_db_clock(conn: sa.Connection, ctx: Context) -> None:
    """The database server's clock, an independent one when PostgreSQL runs on another host."""
    before = time.time()
    theirs = float(conn.execute(sa.text("SELECT EXTRACT(EPOCH FROM clock_timestamp())")).scalar_one())
    after = time.time()
    ctx.clocks.append((t("doctor.clock.src_db"), theirs - (before + after) / 2, (after - before) / 2))


# -- InfluxDB -------------------------------------------------------------------------------------

def check_influx(ctx: Context) -> tuple[str, str]:
    """``GET /health`` (InfluxDB 2.x and VictoriaMetrics both answer it) and the token file."""
    section = getattr(ctx.cfg, "influx", None)
    url = str(getattr(section, "url", "") or "")
    if not url:
        return "skip", t("doctor.influx.skip")
    token_file = getattr(section, "token_file", None)
    if token_file:
        try:
            if not Path(token_file).read_text(encoding="utf-8").strip():
                return "fail", t("doctor.influx.token_empty", path=token_file)
        except OSError as exc:
            return "fail", t("doctor.influx.token_unreadable", path=token_file, error=exc.strerror or exc)
    try:
        before = time.time()
        with urllib.request.urlopen(f"{url}/health", timeout=TIMEOUT) as resp:  # noqa: S310 - configured URL
            body, date = resp.read(4096), resp.headers.get("Date")
        after = time.time()
    except (urllib.error.URLError, OSError) as exc:
        return "fail", t("doctor.influx.bad", url=url, error=getattr(exc, "reason", None) or exc)
    if date:
        theirs = email.utils.parsedate_to_datetime(date).timestamp()
        ctx.clocks.append((t("doctor.clock.src_influx"), theirs + 0.5 - (before + after) / 2, 1.0))
    return "pass", t("doctor.influx.ok", url=url, status=_health_status(body))


def _health_status(body: bytes) -> str:
    """InfluxDB answers JSON with a status; VictoriaMetrics a bare ``OK``."""
    try:
        doc = json.loads(body)
        return str(doc.get("status", "ok")) if isinstance(doc, dict) else "ok"
    except ValueError:
        return body.decode(errors="replace").strip()[:40] or "ok"


# -- vault ----------------------------------------------------------------------------------------

def _probe_write(folder: Path) -> str | None:
    """None when a file can be created, synced and removed in ``folder`` (or its first existing parent)."""
    target = folder
    while not target.exists() and target != target.parent:
        target = target.parent
    try:
        fd, name = tempfile.mkstemp(prefix=".doctor-", dir=target)
        try:
            os.write(fd, b"x")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as exc:
        return f"{exc.strerror or exc} ({target})"
    return None


def check_vault(ctx: Context) -> tuple[str, str]:
    """Vault and witness folders writable; the newest signed checkpoint younger than 3 intervals."""
    from collector.vault import checkpoints
    from collector.vault.wiring import vault_dir, witness_dir

    folder, witness = vault_dir(ctx.cfg), witness_dir(ctx.cfg)
    interval = ctx.cfg.vault.checkpoint_interval
    for path, key in ((folder, "doctor.vault.unwritable"), (witness, "doctor.vault.witness_unwritable")):
        error = _probe_write(path)
        if error:
            return "fail", t(key, dir=path, error=error)
    found = checkpoints.files(folder / checkpoints.FOLDER)
    if not found:
        return "note", t("doctor.vault.new", dir=folder, interval=int(interval))
    try:
        newest = checkpoints.read(found[-1])
    except (OSError, ValueError) as exc:
        return "fail", t("doctor.vault.bad_checkpoint", path=found[-1], error=exc, cmd=ctx.cmd)
    age = time.time() - float(newest["time"])
    if age > STALE_INTERVALS * interval:
        return "fail", t("doctor.vault.stale", age=int(age), interval=int(interval))
    return "pass", t("doctor.vault.ok", dir=folder, witness=witness, age=int(age), n=newest["n"])


# -- keys -----------------------------------------------------------------------------------------

def check_keys(ctx: Context) -> tuple[str, str]:
    """The vault and collector signing keys: readable, private to their owner, valid Ed25519."""
    from collector.vault.wiring import VAULT_KEY
    from protocol.keys import load_private_pem

    data = ctx.cfg.collector.data_dir
    problems, missing, good = [], [], []
    for path in (data / VAULT_KEY, data / "collector.key"):
        if not path.exists():
            missing.append(str(path))
            continue
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
            load_private_pem(path.read_text(encoding="utf-8"))
        except OSError as exc:
            problems.append(t("doctor.keys.unreadable", path=path, error=exc.strerror or exc))
            continue
        except Exception as exc:  # malformed PEM, wrong key type
            problems.append(t("doctor.keys.bad", path=path, error=exc))
            continue
        if mode & 0o077:
            problems.append(t("doctor.keys.open_mode", path=path, mode=f"{mode:04o}"))
        else:
            good.append(str(path))
    if problems:
        return "fail", "\n".join(problems)
    if missing:
        return "note", t("doctor.keys.missing", paths="、".join(missing))
    return "pass", t("doctor.keys.ok", paths="、".join(good))


# -- certificates ---------------------------------------------------------------------------------

def check_certificates(ctx: Context) -> tuple[str, str]:
    """Broker TLS files: readable, not expiring within 30 days, key matches, issued by the CA."""
    files = _tls_files(ctx.cfg)
    if files is None:
        return "skip", t("doctor.certs.skip")
    ca_path, cert_path, key_path = files
    try:
        ca, cert = _load_cert(ca_path), _load_cert(cert_path)
        key = _load_key(key_path)
    except _Unusable as exc:
        return "fail", str(exc)
    problems = [p for p in (_expiry(ca_path, ca), _expiry(cert_path, cert)) if p]
    if not _same_public_key(cert.public_key(), key.public_key()):
        problems.append(t("doctor.certs.key_mismatch", keyfile=key_path, cert=cert_path))
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # InvalidSignature, wrong issuer name, unsupported key type
        problems.append(t("doctor.certs.not_issued", cert=cert_path, ca=ca_path))
    if problems:
        return "fail", "\n".join(problems)
    days = min(_days_left(ca), _days_left(cert))
    return "pass", t("doctor.certs.ok", paths=f"{ca_path}、{cert_path}、{key_path}", days=days)


class _Unusable(Exception):
    """A certificate or key file that cannot be read or parsed; the message is operator text."""


def _load_cert(path: Path) -> Any:
    """One PEM certificate."""
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise _Unusable(t("doctor.certs.unreadable", path=path, error=exc.strerror or exc)) from exc
    except ValueError as exc:
        raise _Unusable(t("doctor.certs.unreadable", path=path, error=exc)) from exc


def _load_key(path: Path) -> Any:
    """One unencrypted PEM private key (the service cannot type a passphrase)."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        return load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise _Unusable(t("doctor.certs.unreadable", path=path, error=exc.strerror or exc)) from exc
    except (ValueError, TypeError) as exc:
        raise _Unusable(t("doctor.certs.unreadable", path=path, error=exc)) from exc


def _same_public_key(a: Any, b: Any) -> bool:
    """Whether two public keys are the same (compared as DER)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return a.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo) == \
        b.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _days_left(cert: Any) -> int:
    """Whole days until ``cert`` expires (negative once expired)."""
    return int((cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)).total_seconds() // 86400)


def _expiry(path: Path, cert: Any) -> str | None:
    """Operator text when ``cert`` expired or expires within CERT_WARN_DAYS."""
    days, date = _days_left(cert), cert.not_valid_after_utc.date().isoformat()
    if days < 0:
        return t("doctor.certs.expired", path=path, date=date)
    if days < CERT_WARN_DAYS:
        return t("doctor.certs.expiring", path=path, date=date, days=days)
    return None


# -- clock ----------------------------------------------------------------------------------------

def check_clock(ctx: Context) -> tuple[str, str]:
    """Our clock against the database server, InfluxDB's Date header, the agents' median and NTP state.

    Evidence times are the collector's clock, so a wrong clock misdates every case. No single
    source is authoritative; each is named with its offset so the operator sees what was compared.
    """
    readings = list(ctx.clocks) + _agent_clock(ctx.cfg)
    limit = ctx.cfg.ingest.max_clock_skew
    ntp = _ntp_synchronized()
    if ntp is False:
        return "fail", t("doctor.clock.ntp_off")
    if not readings:
        return ("pass", t("doctor.clock.ntp_only")) if ntp else ("note", t("doctor.clock.none"))
    seen = "、".join(f"{name}（{offset:+.2f} 秒）" for name, offset, _res in readings)
    for name, offset, resolution in readings:
        if abs(offset) > limit + resolution:
            return "fail", t("doctor.clock.off", source=name, offset=f"{offset:+.2f}", limit=limit)
    return "pass", t("doctor.clock.ok", sources=seen, limit=limit)


def _agent_clock(cfg: CollectorConfig) -> list[tuple[str, float, float]]:
    """The median offset of recently seen agents: if most agents agree, we are the odd one out.

    The store keeps ``clock_offset = collector - agent``; the reading is agent - collector.
    """
    url = sa.engine.make_url(cfg.database_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        return []
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT clock_offset FROM agents WHERE clock_offset IS NOT NULL "
                                        "AND last_seen > :since"), {"since": time.time() - AGENT_RECENT}).all()
    except sa.exc.SQLAlchemyError:
        return []  # not migrated or unreachable: the database row already says so
    finally:
        engine.dispose()
    offsets = [float(r[0]) for r in rows]
    if len(offsets) < MIN_AGENTS:
        return []
    return [(t("doctor.clock.src_agents", n=len(offsets)), -statistics.median(offsets), 0.0)]


def _ntp_synchronized() -> bool | None:
    """``timedatectl``'s NTPSynchronized, or None where there is no systemd to ask (containers)."""
    try:
        out = subprocess.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = out.stdout.strip()
    return {"yes": True, "no": False}.get(value) if out.returncode == 0 else None
