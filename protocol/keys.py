"""Ed25519 keys and the enrollment bundle that carries an agent's identity to its host."""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol.errors import ProtocolError

BUNDLE_FORMAT = "venueguard-bundle/1"


def new_private_key() -> Ed25519PrivateKey:
    """Generate a fresh Ed25519 key."""
    return Ed25519PrivateKey.generate()


def public_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """Raw 32-byte public key, base64: the form the registry stores."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def load_public_b64(text: str) -> Ed25519PublicKey:
    """Inverse of :func:`public_b64`."""
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (ValueError, TypeError) as exc:
        raise ProtocolError("bad_key", f"public key is not 32 base64-encoded bytes: {exc}") from exc


def private_pem(key: Ed25519PrivateKey) -> str:
    """PKCS#8 PEM of a private key (unencrypted: the file's permissions protect it)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def load_private_pem(text: str) -> Ed25519PrivateKey:
    """Inverse of :func:`private_pem`."""
    key = serialization.load_pem_private_key(text.encode(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ProtocolError("bad_key", "private key is not an Ed25519 key")
    return key


def sign(key: Ed25519PrivateKey, data: bytes) -> str:
    """Signature of ``data``, base64."""
    return base64.b64encode(key.sign(data)).decode()


def verify(key: Ed25519PublicKey, data: bytes, signature_b64: str) -> bool:
    """True when ``signature_b64`` is ``key``'s signature of ``data``."""
    try:
        key.verify(base64.b64decode(signature_b64, validate=True), data)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def write_secret(path: Path, text: str) -> None:
    """Write a file readable by its owner only (0600), created that way rather than chmod-ed later."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


@dataclass(frozen=True)
class Bundle:
    """What an enrolled agent needs: its identity and key, whom to trust, where to connect."""

    agent_id: str
    venue_id: str
    private_key: Ed25519PrivateKey
    collector_public_key: Ed25519PublicKey
    broker_host: str
    broker_port: int
    issued_at: float
    #: Mutual TLS with the broker (PEM), present when the collector has a PKI (`pki init`);
    #: empty = plain MQTT (the demo and loopback tests).
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""

    @property
    def has_tls(self) -> bool:
        """Whether this bundle carries a client certificate for mutual TLS."""
        return bool(self.tls_cert)

    def to_json(self) -> str:
        """Serialise for :func:`write_bundle`."""
        doc = {
            "format": BUNDLE_FORMAT,
            "agent_id": self.agent_id,
            "venue_id": self.venue_id,
            "agent_private_key": private_pem(self.private_key),
            "collector_public_key": public_b64(self.collector_public_key),
            "broker": {"host": self.broker_host, "port": self.broker_port},
            "issued_at": self.issued_at,
        }
        if self.has_tls:
            doc["tls"] = {"ca": self.tls_ca, "cert": self.tls_cert, "key": self.tls_key}
        return json.dumps(doc, indent=2, ensure_ascii=False)


def make_bundle(
    agent_id: str, venue_id: str, collector_key: Ed25519PrivateKey, broker_host: str, broker_port: int
) -> Bundle:
    """Create a bundle with a fresh agent key."""
    return Bundle(
        agent_id, venue_id, new_private_key(), collector_key.public_key(), broker_host, broker_port, time.time()
    )


def write_bundle(path: Path, bundle: Bundle) -> None:
    """Write the bundle with 0600 permissions: it holds the agent's private key."""
    write_secret(path, bundle.to_json())


def read_bundle(path: Path) -> Bundle:
    """Load a bundle; raise ProtocolError naming the missing or bad field."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProtocolError("bad_bundle", f"cannot read enrollment bundle {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ProtocolError("bad_bundle", f"enrollment bundle {path} is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
        raise ProtocolError("bad_bundle", f"{path} is not a {BUNDLE_FORMAT} enrollment bundle")
    try:
        return Bundle(
            agent_id=str(doc["agent_id"]),
            venue_id=str(doc["venue_id"]),
            private_key=load_private_pem(doc["agent_private_key"]),
            collector_public_key=load_public_b64(doc["collector_public_key"]),
            broker_host=str(doc["broker"]["host"]),
            broker_port=int(doc["broker"]["port"]),
            issued_at=float(doc["issued_at"]),
            **_tls_fields(doc.get("tls")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError("bad_bundle", f"enrollment bundle {path} lacks or garbles field {exc}") from exc


def _tls_fields(tls: object) -> dict[str, str]:
    """The optional ``tls`` object of a bundle: all of ca, cert and key, or none."""
    if tls is None:
        return {}
    if not isinstance(tls, dict):
        raise TypeError("'tls' is not an object")
    return {"tls_ca": str(tls["ca"]), "tls_cert": str(tls["cert"]), "tls_key": str(tls["key"])}
