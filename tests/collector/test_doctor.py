"""``venueguard-collector doctor`` against real servers: Mosquitto, SQLite/PostgreSQL, VictoriaMetrics."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from collector import config, keys
from collector.broker import Mosquitto, free_port
from collector.cli import main
from collector.doctor import Context, Finding, check_certificates, check_clock, run_checks
from collector.store import Store
from collector.vault import checkpoints
from tests.support import ROOT, collector_toml



def _config(tmp_path: Path, broker_port: int, db_url: str, extra: str = "") -> Path:
    """A collector config file for the doctor."""
    path = tmp_path / "collector.toml"
    path.write_text(collector_toml(tmp_path / "data", broker_port, db_url, extra=extra), encoding="utf-8")
    return path


def _findings(path: Path) -> dict[str, Finding]:
    """Run every check of ``path``'s config; findings by item."""
    cmd = f"venueguard-collector --config {path}"
    return {f.item: f for f in run_checks(Context(config.load(path), cmd, []))}


def _migrated(path: Path) -> str:
    """Bring the database of config ``path`` to the newest schema, as `migrate` does; its URL."""
    cfg = config.load(path)
    cfg.collector.data_dir.mkdir(parents=True, exist_ok=True)
    url = cfg.database_url
    store = Store(url)
    store.migrate()
    store.close()
    return url


def test_all_good_exits_0_and_prints_the_table(tmp_path: Path, broker: Mosquitto, db_url: str,
                                               capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Live broker, migrated database, writable vault: nothing fails, exit 0, one row per item."""
    path = _config(tmp_path, broker.port, db_url)
    _migrated(path)
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setenv("VENUEGUARD_LANG", "zh-CN")
    assert main(["--config", str(path), "doctor"]) == 0
    out = capsys.readouterr().out
    for word in ("项目", "结果", "说明与整改", "消息服务器", "数据库", "证据库", "签名密钥", "TLS 证书", "时钟"):
        assert word in out
    assert "不通过 0" in out and "可以运行" in out
    found = _findings(path)
    assert found["broker"].result == "pass" and f"127.0.0.1:{broker.port}" in found["broker"].detail
    assert found["database"].result == "pass"
    assert found["influx"].result == "skip"
    assert found["vault"].result == "note"  # no checkpoint before the first start
    assert found["keys"].result == "note"
    if db_url.startswith("postgresql"):  # the database server's clock is compared
        assert found["clock"].result == "pass" and "数据库服务器" in found["clock"].detail


def test_broker_down_says_where_and_how_to_fix(tmp_path: Path, broker: Mosquitto, capsys: pytest.CaptureFixture[str]) -> None:
    """A stopped broker: the broker row fails naming the address, and the exit code is 1."""
    path = _config(tmp_path, broker.port, "")
    _migrated(path)
    broker.kill()
    found = _findings(path)
    assert found["broker"].result == "fail"
    assert f"127.0.0.1:{broker.port}" in found["broker"].detail and "systemctl status mosquitto" in found["broker"].detail
    assert found["database"].result == "pass"
    assert main(["--config", str(path), "doctor"]) == 1
    capsys.readouterr()


def test_not_an_mqtt_port_is_named(tmp_path: Path) -> None:
    """A port that accepts TCP but never answers CONNECT (e.g. TLS expected) is told apart from a dead one."""
    import socket

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        path = _config(tmp_path, srv.getsockname()[1], "")
        import collector.doctor as doctor

        old, doctor.TIMEOUT = doctor.TIMEOUT, 2.0
        try:
            found = _findings(path)
        finally:
            doctor.TIMEOUT = old
    assert found["broker"].result == "fail" and "CONNECT" in found["broker"].detail


def test_database_not_migrated(tmp_path: Path, broker: Mosquitto, db_url: str) -> None:
    """An empty database (or a missing SQLite file) fails and names the migrate command."""
    path = _config(tmp_path, broker.port, db_url)
    found = _findings(path)["database"]
    assert found.result == "fail"
    assert f"venueguard-collector --config {path} migrate" in found.detail


def test_database_unreachable(tmp_path: Path, broker: Mosquitto) -> None:
    """A PostgreSQL URL nobody listens on: the row names the host without the password."""
    url = f"postgresql+psycopg://vg:secret@127.0.0.1:{free_port()}/vg"
    found = _findings(_config(tmp_path, broker.port, url))["database"]
    assert found.result == "fail" and "127.0.0.1" in found.detail and "secret" not in found.detail


def test_database_outdated(tmp_path: Path, broker: Mosquitto) -> None:
    """A database one revision behind is told to migrate."""
    path = _config(tmp_path, broker.port, "")
    url = _migrated(path)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0001'"))
    engine.dispose()
    found = _findings(path)["database"]
    assert found.result == "fail" and "0001" in found.detail and "migrate" in found.detail


def test_unwritable_vault_fails(tmp_path: Path, broker: Mosquitto) -> None:
    """The vault on a read-only mount (as a remounted disk or a wrong WORM mount): doctor says so, exit 1.

    We run as root, which ignores file modes, so the folder is bind-mounted read-only inside a
    private mount namespace (``unshare --mount``) that only the doctor process sees.
    """
    if os.geteuid() != 0:
        pytest.fail("this test needs root for a private read-only mount (CI runs as root)")
    path = _config(tmp_path, broker.port, "")
    vault = tmp_path / "data" / "vault"
    vault.mkdir(parents=True)
    _migrated(path)
    script = (f"mount --bind -o ro {vault} {vault} && exec {sys.executable} -m collector.cli --config {path} doctor")
    env = dict(os.environ, PYTHONPATH=str(ROOT), VENUEGUARD_LANG="en", COLUMNS="400")
    out = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    row = next(line for line in out.stdout.splitlines() if "Vault" in line)
    assert "FAIL" in row and "not writable" in row and "Read-only file system" in row
    assert not list(vault.iterdir())  # the probe file never stays behind


def test_stale_checkpoint_and_open_key(tmp_path: Path, broker: Mosquitto) -> None:
    """A checkpoint older than 3 intervals means the collector is not sealing; a 0644 key is exposed."""
    path = _config(tmp_path, broker.port, "")
    data = tmp_path / "data"
    data.mkdir()
    key = keys.load_or_create(data / "vault.key")
    from collector.vault.merkle import CompactRange

    doc = checkpoints.make(key, None, CompactRange(), time.time() - 600, 60.0)
    checkpoints.write(data / "vault" / checkpoints.FOLDER, None, doc)
    keys.load_or_create(data / "collector.key")
    (data / "collector.key").chmod(0o644)
    found = _findings(path)
    assert found["vault"].result == "fail" and "systemctl status venueguard-collector" in found["vault"].detail
    assert found["keys"].result == "fail" and "chmod 600" in found["keys"].detail and "collector.key" in found["keys"].detail
    fresh = checkpoints.make(key, doc, CompactRange(), time.time(), 60.0)
    checkpoints.write(data / "vault" / checkpoints.FOLDER, None, fresh)
    (data / "collector.key").chmod(0o600)
    found = _findings(path)
    assert found["vault"].result == "pass" and found["keys"].result == "pass"


# -- InfluxDB (VictoriaMetrics speaks the same /health and v2 write API) ------------------------------

def test_influx_health_and_clock(tmp_path: Path, broker: Mosquitto, victoria: Any) -> None:
    """A live /health passes and its Date header is a clock source; a dead one fails naming the URL."""
    url = victoria.url
    extra = f'\n[influx]\nurl = "{url}"\n'
    path = _config(tmp_path, broker.port, "", extra=extra)
    found = _findings(path)
    assert found["influx"].result == "pass" and url in found["influx"].detail
    assert found["clock"].result == "pass" and "InfluxDB" in found["clock"].detail
    dead = f"http://127.0.0.1:{free_port()}"
    path = _config(tmp_path, broker.port, "", extra=f'\n[influx]\nurl = "{dead}"\n')
    found = _findings(path)
    assert found["influx"].result == "fail" and dead in found["influx"].detail


def test_clock_off_against_a_source(tmp_path: Path) -> None:
    """An offset beyond [ingest] max_clock_skew from any source fails and names that source."""
    cfg = config.CollectorConfig()
    ctx = Context(cfg, "venueguard-collector", [("数据库服务器", 42.0, 0.01)])
    result, detail = check_clock(ctx)
    assert result == "fail" and "数据库服务器" in detail and "+42.00" in detail


# -- certificates (files as `[broker] tls_ca, tls_cert, tls_key` name them) ----------------------------

def _cert(subject: str, key: Any, issuer: tuple[str, Any] | None, days: int) -> x509.Certificate:
    """A certificate for ``key``, signed by ``issuer`` (name, key) or self-signed."""
    now = dt.datetime.now(dt.timezone.utc)
    iname, ikey = issuer or (subject, key)
    builder = (x509.CertificateBuilder().subject_name(x509.Name.from_rfc4514_string(f"CN={subject}"))
               .issuer_name(x509.Name.from_rfc4514_string(f"CN={iname}")).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
               .not_valid_after(now + dt.timedelta(days=days)))
    return builder.sign(ikey, hashes.SHA256())


def _write(path: Path, obj: Any) -> Path:
    """PEM of a certificate or private key."""
    if isinstance(obj, x509.Certificate):
        path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    path.chmod(0o600)
    return path


def _tls_ctx(ca: Path, cert: Path, key: Path) -> Context:
    """A context whose broker section names TLS files (read with getattr, as the doctor does)."""
    broker = SimpleNamespace(tls_ca=str(ca), tls_cert=str(cert), tls_key=str(key))
    return Context(SimpleNamespace(broker=broker), "venueguard-collector", [])  # type: ignore[arg-type]


@pytest.mark.parametrize("case", ["good", "expiring", "expired", "mismatch", "foreign_ca", "unreadable"])
def test_certificates(tmp_path: Path, case: str) -> None:
    """Readable, not expiring within 30 days, key matches, issued by the configured CA."""
    ca_key, cert_key, other = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _cert("VenueGuard CA", ca_key, None, 3650)
    days = {"expiring": 10, "expired": -1}.get(case, 365)
    signer = ("Other CA", other) if case == "foreign_ca" else ("VenueGuard CA", ca_key)
    cert = _cert("venueguard-collector", cert_key, signer, days)
    ca_path, cert_path = _write(tmp_path / "ca.crt", ca), _write(tmp_path / "collector.crt", cert)
    key_path = _write(tmp_path / "collector.key", other if case == "mismatch" else cert_key)
    if case == "unreadable":
        key_path.write_text("not a key")
    result, detail = check_certificates(_tls_ctx(ca_path, cert_path, key_path))
    expected = {"good": "pass"}.get(case, "fail")
    assert result == expected, detail
    words = {"good": "天后到期", "expiring": "剩 9 天", "expired": "已于", "mismatch": "不匹配", "foreign_ca": "不是由",
             "unreadable": "无法读取"}[case]
    assert words in detail, detail


def test_strings_have_the_same_keys() -> None:
    """Every doctor text exists in both catalogues."""
    folder = ROOT / "collector" / "strings"
    zh, en = (json.loads((folder / f"{n}.json").read_text(encoding="utf-8")) for n in ("zh-CN", "en"))
    assert {k for k in zh if k.startswith("doctor.")} == {k for k in en if k.startswith("doctor.")}


# -- mutual TLS against a real Mosquitto ---------------------------------------------------------------

def test_broker_over_mutual_tls(tmp_path: Path) -> None:
    """Against the shipped production broker config (TLS, ACL, CRL): doctor connects over mutual TLS
    and checks the files; a certificate from a foreign CA is refused and said so."""
    from collector.pki import Pki
    from tests.tlsbroker import TlsBroker

    pki_dir = tmp_path / "data" / "pki"
    pki = Pki(pki_dir)
    pki.init(["127.0.0.1"], "venueguard-collector")
    broker = TlsBroker(tmp_path / "broker", pki).start()
    port = broker.port
    try:
        tls = (f'tls_ca = "{pki_dir / "ca.crt"}"\ntls_cert = "{pki_dir / "collector.crt"}"\n'
               f'tls_key = "{pki_dir / "collector.key"}"\n')
        path = tmp_path / "collector.toml"
        path.write_text(collector_toml(tmp_path / "data", port, "").replace(f"port = {port}\n", f"port = {port}\n{tls}", 1))
        found = _findings(path)
        assert found["broker"].result == "pass" and "TLS" in found["broker"].detail, found["broker"].detail
        assert found["certs"].result == "pass", found["certs"].detail
        other = tmp_path / "other" / "pki"
        Pki(other).init(["127.0.0.1"], "venueguard-collector")
        path.write_text(path.read_text().replace(str(pki_dir / "collector."), str(other / "collector.")))
        found = _findings(path)
        assert found["broker"].result == "fail", found["broker"].detail
        assert "不接受体检证书" in found["broker"].detail, found["broker"].detail
        assert found["certs"].result == "fail" and "不是由" in found["certs"].detail
    finally:
        broker.kill()


def test_doctor_never_takes_over_the_running_collectors_session(tmp_path: Path) -> None:
    """The broker makes a client's id its certificate CN: doctor connects under an identity of its own,
    so the collector connected with collector.crt (persistent session) is not kicked off; without
    that identity doctor says so instead of connecting."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from collector.pki import DOCTOR_ID, Pki
    from protocol.tls import context_from_files
    from tests.support import wait_for
    from tests.tlsbroker import TlsBroker

    pki_dir = tmp_path / "data" / "pki"
    pki = Pki(pki_dir)
    pki.init(["127.0.0.1"], "venueguard-collector")
    broker = TlsBroker(tmp_path / "broker", pki).start()
    drops: list[object] = []
    running = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="venueguard-collector", protocol=mqtt.MQTTv5)
    running.tls_set_context(context_from_files(pki_dir / "ca.crt", pki_dir / "collector.crt", pki_dir / "collector.key"))
    running.on_disconnect = lambda _c, _u, _f, reason, _p: drops.append(reason)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    running.connect("127.0.0.1", broker.port, clean_start=False, properties=props)
    running.loop_start()
    try:
        wait_for(running.is_connected, 10, what="the stand-in collector connected")
        tls = (f'tls_ca = "{pki_dir / "ca.crt"}"\ntls_cert = "{pki_dir / "collector.crt"}"\n'
               f'tls_key = "{pki_dir / "collector.key"}"\n')
        path = tmp_path / "collector.toml"
        port = broker.port
        path.write_text(collector_toml(tmp_path / "data", port, "").replace(f"port = {port}\n", f"port = {port}\n{tls}", 1))
        assert _findings(path)["broker"].result == "pass"
        time.sleep(1.0)
        assert drops == [] and running.is_connected(), "doctor took over the collector's connection"
        for name in (f"collector-{DOCTOR_ID}.crt", f"collector-{DOCTOR_ID}.key"):
            (pki_dir / name).unlink()
        found = _findings(path)["broker"]
        assert found.result == "note" and "pki collector-cert venueguard-doctor" in found.detail, found.detail
        assert drops == [] and running.is_connected()
    finally:
        running.loop_stop()
        running.disconnect()
        broker.kill()


def test_cluster_leader_and_vault_claim(tmp_path: Path, broker: Mosquitto, pg_url: str) -> None:
    """Alone: skipped. In a cluster: no leader fails (rules stand still), a live leader passes
    naming it, and a vault id claimed by another host fails with the fix."""
    from collector.leader import Leadership

    assert _findings(_config(tmp_path, broker.port, pg_url))["cluster"].result == "skip"
    path = _config(tmp_path, broker.port, pg_url, extra='[cluster]\nenabled = true\nnode_id = "n1"\n')
    _migrated(path)
    found = _findings(path)["cluster"]
    assert found.result == "fail" and "没有领导者" in found.detail
    store = Store(pg_url)
    leader = Leadership(store.engine, "n2", poll_seconds=0.1)
    leader.start()
    try:
        assert leader.held() or time.sleep(1) or leader.held()
        found = _findings(path)["cluster"]
        assert found.result == "pass" and "当前领导者 n2" in found.detail and "证据库 n1" in found.detail
        store.claim_vault("n1", "elsewhere:/srv/vg")
        found = _findings(path)["cluster"]
        assert found.result == "fail" and "elsewhere:/srv/vg" in found.detail and "node_id" in found.detail
    finally:
        leader.stop()
        store.close()


def test_cluster_on_a_broker_that_grants_any_shared_subscription_fails(tmp_path: Path, broker: Mosquitto, pg_url: str) -> None:
    """The plain broker checks no SUBSCRIBE: in a cluster that lets any agent join the collectors'
    share group, so the broker row fails and names the cluster configuration."""
    path = _config(tmp_path, broker.port, pg_url, extra='[cluster]\nenabled = true\nnode_id = "n1"\n')
    _migrated(path)
    found = _findings(path)["broker"]
    assert found.result == "fail" and "deploy/mosquitto/cluster/" in found.detail
    alone = _config(tmp_path, broker.port, pg_url)
    assert _findings(alone)["broker"].result == "pass"
