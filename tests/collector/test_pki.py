"""The agents' CA (collector/pki.py): what each certificate says, the CRL, key files, bundles."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from collector import keys
from collector.enroll import enroll
from collector.pki import CLIENT_DAYS, Pki, PkiError
from collector.store import Store
from protocol import keys as pkeys
from protocol.errors import ProtocolError
from protocol.tls import context_from_pem


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A CA whose broker certificate names an IP and a DNS name."""
    made = Pki(tmp_path / "pki")
    made.init(["127.0.0.1", "mqtt.example.test"], "venueguard-collector")
    return made


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_init_writes_keys_0600_in_a_0700_folder(pki: Pki) -> None:
    """Every private key is owner-only from creation; the folder too."""
    assert stat.S_IMODE(pki.folder.stat().st_mode) == 0o700
    for name in ("ca.key", "broker.key", "collector.key"):
        assert stat.S_IMODE(pki.path(name).stat().st_mode) == 0o600, name
        assert "PRIVATE KEY" in pki.path(name).read_text()
    for name in ("ca.crt", "broker.crt", "collector.crt", "crl.pem", "ledger.json"):
        assert "PRIVATE KEY" not in pki.path(name).read_text(), name


def test_ca_is_a_ca_and_signs_the_leaves(pki: Pki) -> None:
    """The CA may sign certificates (path length 0); leaves are not CAs and verify under it."""
    ca = _cert(pki.path("ca.crt"))
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca and bc.path_length == 0
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    for name in ("broker.crt", "collector.crt"):
        leaf = _cert(pki.path(name))
        assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        leaf.verify_directly_issued_by(ca)
        assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)


def test_broker_certificate_names_the_hosts_for_server_auth_only(pki: Pki) -> None:
    """TLS clients match the dialled host against SANs: IPs as IP SANs, names as DNS SANs."""
    cert = _cert(pki.path("broker.crt"))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["mqtt.example.test"]
    assert _eku(cert) == [ExtendedKeyUsageOID.SERVER_AUTH]  # cannot log in as a client


def test_collector_and_agent_certificates_are_client_certs_named_by_identity(pki: Pki) -> None:
    """CN is the broker user name (use_identity_as_username): collector id, agent id."""
    col = _cert(pki.path("collector.crt"))
    assert _cn(col) == "venueguard-collector" and _eku(col) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    issued = pki.issue_agent("gz-th01-srv1")
    cert = x509.load_pem_x509_certificate(issued.cert_pem.encode())
    assert _cn(cert) == "gz-th01-srv1" and _eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.serial_number == issued.serial and issued.ca_pem == pki.ca_pem()
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_agent_certificate_expiry(pki: Pki) -> None:
    """Agent certificates last CLIENT_DAYS (3 years) and never beyond the CA."""
    cert = x509.load_pem_x509_certificate(pki.issue_agent("a1").cert_pem.encode())
    ca = _cert(pki.path("ca.crt"))
    now = dt.datetime.now(dt.timezone.utc)
    assert abs((cert.not_valid_after_utc - now) - dt.timedelta(days=CLIENT_DAYS)) < dt.timedelta(minutes=5)
    assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc <= ca.not_valid_after_utc


def test_collector_identity_is_never_issued_to_an_agent(pki: Pki) -> None:
    """An agent named like the collector would get the collector's ACL rights: refused."""
    with pytest.raises(PkiError, match="collector's broker identity"):
        pki.issue_agent("venueguard-collector")
    with pytest.raises(ProtocolError, match="bad_agent_id"):
        pki.issue_agent("a/b")


def test_init_refuses_to_replace_a_ca(pki: Pki) -> None:
    """Replacing the CA would orphan every enrolled agent's certificate."""
    before = pki.path("ca.key").read_bytes()
    with pytest.raises(PkiError, match="already exists"):
        pki.init(["127.0.0.1"], "venueguard-collector")
    assert pki.path("ca.key").read_bytes() == before


def test_issue_without_ca_says_how_to_make_one(tmp_path: Path) -> None:
    """No CA: the error names the command."""
    with pytest.raises(PkiError, match="pki init"):
        Pki(tmp_path / "none").issue_agent("a1")


def test_crl_lists_revoked_and_superseded_certificates(pki: Pki) -> None:
    """The CRL is a PEM CRL signed by the CA, valid until the CA expires, listing every revoked serial."""
    first = pki.issue_agent("a1").serial
    second = pki.issue_agent("a1").serial  # re-enrolment supersedes the first
    other = pki.issue_agent("a2").serial
    crl = x509.load_pem_x509_crl(pki.path("crl.pem").read_bytes())
    assert {r.serial_number for r in crl} == {first}
    assert pki.revoke_agent("a1") == [second]
    assert pki.revoke_agent("a1") == []  # nothing left to revoke
    crl = x509.load_pem_x509_crl(pki.path("crl.pem").read_bytes())
    ca = _cert(pki.path("ca.crt"))
    assert crl.is_signature_valid(ca.public_key())
    assert crl.issuer == ca.subject
    assert {r.serial_number for r in crl} == {first, second} and other not in {r.serial_number for r in crl}
    assert crl.next_update_utc == ca.not_valid_after_utc  # never an expired CRL locking everyone out
    assert pki.issued_to("a1") == [first, second]


def test_enroll_with_pki_puts_certificate_key_and_ca_in_the_bundle(tmp_path: Path, pki: Pki) -> None:
    """The bundle (0600) carries a working client context for the agent; without a PKI none."""
    store = Store(f"sqlite:///{tmp_path / 'index.sqlite3'}")
    store.migrate()
    key = keys.load_or_create(tmp_path / "collector.key")
    out = enroll(store, key, "a1", "V1", venue_name=None, broker_host="127.0.0.1", broker_port=8883,
                 out=tmp_path / "a1.bundle.json", pki=pki)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    bundle = pkeys.read_bundle(out)
    assert bundle.has_tls and bundle.tls_ca == pki.ca_pem()
    assert _cn(x509.load_pem_x509_certificate(bundle.tls_cert.encode())) == "a1"
    context_from_pem(bundle.tls_ca, bundle.tls_cert, bundle.tls_key)  # loads: the key matches
    plain = enroll(store, key, "a2", "V1", venue_name=None, broker_host="127.0.0.1", broker_port=1883,
                   out=tmp_path / "a2.bundle.json", pki=Pki(tmp_path / "no-pki"))
    assert not pkeys.read_bundle(plain).has_tls and '"tls"' not in plain.read_text()
    store.close()


def test_bundle_with_half_a_tls_section_is_refused(tmp_path: Path, pki: Pki) -> None:
    """A bundle whose tls object lacks a part names the missing field."""
    bundle = pkeys.make_bundle("a1", "V1", pkeys.new_private_key(), "127.0.0.1", 8883)
    text = bundle.to_json().replace('"issued_at"', '"tls": {"ca": "x", "cert": "y"},\n  "issued_at"')
    path = tmp_path / "b.json"
    path.write_text(text)
    with pytest.raises(ProtocolError, match="'key'"):
        pkeys.read_bundle(path)


def test_unusable_tls_material_is_a_clear_error(pki: Pki) -> None:
    """A certificate with the wrong key is reported, not a bare ssl traceback."""
    a1, a2 = pki.issue_agent("a1"), pki.issue_agent("a2")
    with pytest.raises(ProtocolError, match="unusable"):
        context_from_pem(a1.ca_pem, a1.cert_pem, a2.key_pem)


def test_collector_tls_options_go_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """[broker] with tls_cert but no tls_key/tls_ca is a config error naming the options."""
    from collector.cli import main

    cfg = tmp_path / "collector.toml"
    cfg.write_text('[broker]\ntls_cert = "pki/collector.crt"\n')
    assert main(["--config", str(cfg), "migrate"]) == 2
    assert "tls_ca, tls_cert and tls_key go together" in capsys.readouterr().err


def test_run_with_missing_tls_files_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`run` with TLS files that are not there stops at once with the option and path, exit 2."""
    from collector.cli import main

    cfg = tmp_path / "collector.toml"
    cfg.write_text('[collector]\ndata_dir = "data"\n[broker]\ntls_ca = "pki/ca.crt"\n'
                   'tls_cert = "pki/collector.crt"\ntls_key = "pki/collector.key"\n[web]\nport = 0\n')
    assert main(["--config", str(cfg), "run"]) == 2
    err = capsys.readouterr().err
    assert f"tls_ca: no such file {tmp_path / 'pki' / 'ca.crt'}" in err and "pki init" in err


def test_pki_revoke_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`pki revoke`: an unknown agent is an error; an agent without a certificate (enrolled before
    `pki init`) is still revoked in the registry; one with a certificate also lands on the CRL."""
    from collector.cli import main

    cfg = tmp_path / "collector.toml"
    cfg.write_text('[collector]\ndata_dir = "data"\n')
    run = lambda *a: main(["--config", str(cfg), *a])  # noqa: E731
    assert run("pki", "revoke", "ghost") == 2
    assert "ghost" in capsys.readouterr().err
    assert run("enroll", "old1", "--venue", "V1", "--out", str(tmp_path / "old1.json")) == 0
    assert run("pki", "revoke", "old1") == 0
    assert "old1" in capsys.readouterr().out
    assert run("pki", "init", "--broker-host", "mqtt.example.test") == 0
    assert run("enroll", "a1", "--venue", "V1", "--out", str(tmp_path / "a1.json")) == 0
    capsys.readouterr()
    assert run("pki", "revoke", "a1") == 0
    assert "crl.pem" in capsys.readouterr().out
    serial = Pki(tmp_path / "data" / "pki").issued_to("a1")[0]
    crl = x509.load_pem_x509_crl((tmp_path / "data" / "pki" / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    store = Store(f"sqlite:///{tmp_path / 'data' / 'index.sqlite3'}")
    assert {a.id: a.revoked for a in store.agents()} == {"old1": True, "a1": True}
    store.close()


def test_second_collector_identity(pki: Pki) -> None:
    """`pki collector-cert`: a client certificate named for another collector, key 0600; that
    name is then never issued to an agent, and not twice."""
    cert_path, key_path = pki.issue_collector("venueguard-collector-2")
    cert = _cert(cert_path)
    assert _cn(cert) == "venueguard-collector-2" and _eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert pki.collector_ids() == {"venueguard-collector", "venueguard-collector-2", "venueguard-doctor"}
    for reserved in ("venueguard-collector-2", "venueguard-doctor"):
        with pytest.raises(PkiError):
            pki.issue_agent(reserved)
    with pytest.raises(PkiError, match="already has a certificate"):
        pki.issue_collector("venueguard-collector-2")
    pki.issue_agent("a1")
    with pytest.raises(PkiError, match="already has a certificate"):
        pki.issue_collector("a1")
