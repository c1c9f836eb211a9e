"""The agents' certificate authority: the broker's server certificate, client certificates for the
collector and every enrolled agent, and the revocation list Mosquitto checks (``crlfile``).

Why a CA of our own: the broker maps a client certificate's CN to its MQTT user name
(``use_identity_as_username``) and the ACL confines each user to ``vg/v1/<CN>/…``, so whoever can
issue a certificate can speak as any agent. This CA therefore issues only for VenueGuard and sits
in the collector's data dir, beside the registry it mirrors.

Layout of ``<data_dir>/pki/``: ``ca.crt ca.key broker.crt broker.key collector.crt collector.key
crl.pem ledger.json``. Every key is created 0600 by :func:`protocol.keys.write_secret` and is never
logged. ``ledger.json`` lists the serials issued to each agent and those revoked, so a revocation
names an agent, not a serial.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocol.errors import ProtocolError
from protocol.keys import write_secret
from protocol.tls import context_from_files
from protocol.topics import check_agent_id

#: Validity in days: the CA outlives every certificate it signs; agents are re-enrolled within 3 years.
CA_DAYS = 20 * 365
BROKER_DAYS = 5 * 365
CLIENT_DAYS = 3 * 365
ORGANISATION = "VenueGuard"
#: The identity ``doctor`` connects with. The broker makes a client's id its certificate CN
#: (``use_username_as_clientid``), so a check under the collector's own certificate would take over
#: the running collector's connection and session; this one is granted nothing by the ACL.
DOCTOR_ID = "venueguard-doctor"


class PkiError(ProtocolError):
    """A PKI operation that cannot be done; ``detail`` says what is wrong and how to fix it.

    A ProtocolError so that every enrollment path (CLI, web form) already reports it."""

    def __init__(self, detail: str) -> None:
        super().__init__("pki", detail)


@dataclass(frozen=True)
class Issued:
    """A client certificate and its key, PEM, as they go into a bundle."""

    cert_pem: str
    key_pem: str
    ca_pem: str
    serial: int


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _new_key() -> ec.EllipticCurvePrivateKey:
    """ECDSA P-256: small, fast on 5,000 reconnecting agents, supported by every OpenSSL Mosquitto links."""
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def san_entries(hosts: list[str]) -> list[x509.GeneralName]:
    """IP addresses as IP SANs, everything else as DNS names (TLS clients match IPs only as IP SANs)."""
    out: list[x509.GeneralName] = []
    for host in hosts:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            out.append(x509.DNSName(host))
    return out


def _atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` whole: a broker or reader never sees half a CRL or ledger."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class Pki:
    """The CA in ``folder`` (``<data_dir>/pki``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    # -- paths ---------------------------------------------------------------------------------

    def path(self, name: str) -> Path:
        """A file of the PKI folder, e.g. ``path("ca.crt")``."""
        return self.folder / name

    def exists(self) -> bool:
        """Whether ``pki init`` has run here."""
        return self.path("ca.crt").exists() and self.path("ca.key").exists()

    # -- init ----------------------------------------------------------------------------------

    def init(self, broker_hosts: list[str], collector_id: str) -> None:
        """Create the CA, the broker's server certificate and the collector's client certificate.

        Refuses to overwrite an existing CA: every enrolled agent's certificate hangs on it.
        """
        if self.exists():
            raise PkiError(f"a CA already exists in {self.folder}; remove that folder only if no agent "
                           "was enrolled with it (all of their certificates would stop working)")
        if not broker_hosts:
            raise PkiError("give at least one --broker-host (the name or address agents connect to)")
        ca_key = _new_key()
        now = _now()
        ca = (x509.CertificateBuilder().subject_name(_name("VenueGuard agent CA")).issuer_name(_name("VenueGuard agent CA"))
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        write_secret(self.path("ca.key"), _key_pem(ca_key))
        _atomic_write(self.path("ca.crt"), _cert_pem(ca))
        _atomic_write(self.path("ledger.json"), json.dumps({"issued": [], "revoked": []}, indent=1))
        self._issue_pair("broker", broker_hosts[0], ExtendedKeyUsageOID.SERVER_AUTH, BROKER_DAYS, broker_hosts)
        self._issue_pair("collector", check_agent_id(collector_id), ExtendedKeyUsageOID.CLIENT_AUTH, CLIENT_DAYS)
        self._issue_pair(f"collector-{DOCTOR_ID}", DOCTOR_ID, ExtendedKeyUsageOID.CLIENT_AUTH, CLIENT_DAYS)
        self.write_crl()

    def _issue_pair(self, stem: str, cn: str, eku: x509.ObjectIdentifier, days: int,
                    hosts: list[str] | None = None) -> None:
        """Write ``<stem>.crt`` and ``<stem>.key`` (0600)."""
        key = _new_key()
        cert = self._sign(cn, key, eku, days, hosts)
        write_secret(self.path(f"{stem}.key"), _key_pem(key))
        _atomic_write(self.path(f"{stem}.crt"), _cert_pem(cert))

    # -- issuing -------------------------------------------------------------------------------

    def _ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        if not self.exists():
            raise PkiError(f"no CA in {self.folder}: run `venueguard-collector pki init --broker-host <name>` first")
        cert = x509.load_pem_x509_certificate(self.path("ca.crt").read_bytes())
        key = serialization.load_pem_private_key(self.path("ca.key").read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cert, key

    def ca_pem(self) -> str:
        """The CA certificate (what agents and the collector trust)."""
        return self.path("ca.crt").read_text(encoding="utf-8")

    def _sign(self, cn: str, key: ec.EllipticCurvePrivateKey, eku: x509.ObjectIdentifier, days: int,
              hosts: list[str] | None = None) -> x509.Certificate:
        """A leaf certificate for ``cn``: not a CA, one extended key usage, SANs for a server."""
        ca, ca_key = self._ca()
        now = _now()
        builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(min(now + dt.timedelta(days=days), ca.not_valid_after_utc))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
        if hosts:
            builder = builder.add_extension(x509.SubjectAlternativeName(san_entries(hosts)), critical=False)
        return builder.sign(ca_key, hashes.SHA256())

    def collector_ids(self) -> set[str]:
        """CNs of the collector certificates here: identities the ACL gives more rights."""
        out = set()
        for path in self.folder.glob("collector*.crt"):
            cert = x509.load_pem_x509_certificate(path.read_bytes())
            out |= {str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
        return out

    def issue_agent(self, agent_id: str) -> Issued:
        """A client certificate with CN = ``agent_id``; the agent's earlier certificates are revoked
        (re-enrolment replaces the identity, as it replaces the signing key).

        The collector's identity is never issued to an agent: its user name may read every agent.
        """
        check_agent_id(agent_id)
        if agent_id in self.collector_ids():
            raise PkiError(f"agent id {agent_id!r} is the collector's broker identity; choose another agent id")
        key = _new_key()
        cert = self._sign(agent_id, key, ExtendedKeyUsageOID.CLIENT_AUTH, CLIENT_DAYS)
        ledger = self._ledger()
        self._revoke_serials(ledger, agent_id, "superseded")
        ledger["issued"].append({"agent_id": agent_id, "serial": str(cert.serial_number),
                                 "not_after": cert.not_valid_after_utc.timestamp(), "issued_at": _now().timestamp()})
        self._save(ledger)
        self.write_crl()
        return Issued(_cert_pem(cert), _key_pem(key), self.ca_pem(), cert.serial_number)

    def issue_collector(self, collector_id: str) -> tuple[Path, Path]:
        """Another collector identity (``collector-<id>.crt/.key``), e.g. for a second collector on
        a shared subscription: with ``use_username_as_clientid`` two processes on one certificate
        would keep taking each other's session. Its ACL block must be added by hand."""
        check_agent_id(collector_id)
        if collector_id in self.collector_ids() or self.issued_to(collector_id):
            raise PkiError(f"identity {collector_id!r} already has a certificate here; choose another name")
        self._ca()
        stem = f"collector-{collector_id}"
        self._issue_pair(stem, collector_id, ExtendedKeyUsageOID.CLIENT_AUTH, CLIENT_DAYS)
        return self.path(f"{stem}.crt"), self.path(f"{stem}.key")

    # -- revocation ----------------------------------------------------------------------------

    def revoke_agent(self, agent_id: str) -> list[int]:
        """Revoke every live certificate of ``agent_id`` and rewrite the CRL; return their serials."""
        ledger = self._ledger()
        serials = self._revoke_serials(ledger, agent_id, "revoked")
        self._save(ledger)
        self.write_crl()
        return serials

    def issued_to(self, agent_id: str) -> list[int]:
        """Serials ever issued to ``agent_id``."""
        return [int(i["serial"]) for i in self._ledger()["issued"] if i["agent_id"] == agent_id]

    def revoked_serials(self) -> set[int]:
        """Serials on the CRL."""
        return {int(r["serial"]) for r in self._ledger()["revoked"]}

    def _revoke_serials(self, ledger: dict[str, Any], agent_id: str, why: str) -> list[int]:
        done = {r["serial"] for r in ledger["revoked"]}
        fresh = [i["serial"] for i in ledger["issued"] if i["agent_id"] == agent_id and i["serial"] not in done]
        now = _now().timestamp()
        ledger["revoked"] += [{"agent_id": agent_id, "serial": s, "revoked_at": now, "why": why} for s in fresh]
        return [int(s) for s in fresh]

    def write_crl(self) -> Path:
        """Sign the CRL (PEM, as Mosquitto's ``crlfile`` wants).

        Its next update is the CA's expiry: OpenSSL rejects every client once a CRL has expired, so a
        CRL nobody re-signed must not lock all agents out.
        """
        ca, ca_key = self._ca()
        now = _now()
        builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.subject)
                   .last_update(now - dt.timedelta(minutes=5)).next_update(ca.not_valid_after_utc)
                   .add_extension(x509.CRLNumber(int(now.timestamp() * 1000)), critical=False))
        for entry in self._ledger()["revoked"]:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(int(entry["serial"]))
                .revocation_date(dt.datetime.fromtimestamp(entry["revoked_at"], dt.timezone.utc)).build())
        crl = builder.sign(ca_key, hashes.SHA256())
        path = self.path("crl.pem")
        _atomic_write(path, crl.public_bytes(serialization.Encoding.PEM).decode())
        return path

    # -- ledger --------------------------------------------------------------------------------

    def _ledger(self) -> dict[str, Any]:
        path = self.path("ledger.json")
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise PkiError(f"cannot read the certificate ledger {path}: {exc}") from exc

    def _save(self, ledger: dict[str, Any]) -> None:
        _atomic_write(self.path("ledger.json"), json.dumps(ledger, indent=1))


def pki_of(data_dir: Path) -> Pki:
    """The PKI of a collector data dir (it may not exist yet)."""
    return Pki(data_dir / "pki")


def broker_tls(broker: Any) -> ssl.SSLContext | None:
    """The collector's client context for ``[broker]`` (a BrokerSection), None for plain MQTT.

    Raises ProtocolError naming the missing or unusable file, before anything connects."""
    if not broker.tls:
        return None
    return context_from_files(broker.tls_ca, broker.tls_cert, broker.tls_key)
