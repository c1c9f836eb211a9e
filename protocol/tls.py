"""The one place both sides build the TLS context for mutual TLS with the broker.

The broker checks our client certificate (its CN becomes our MQTT user name) and we check the
broker's server certificate against the agents' CA and the host name we dial, so neither a
stranger's broker nor a stranger's client gets in.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path

from protocol.errors import ProtocolError


def verifying_context(ca_file: str | None = None, ca_pem: str | None = None) -> ssl.SSLContext:
    """TLS ≥ 1.2, server certificate and host name checked against our CA only (not the system's);
    no client certificate yet."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=ca_file, cadata=ca_pem)
    return ctx


def context_from_files(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """Client context from PEM files (the collector's ``[broker] tls_ca, tls_cert, tls_key``)."""
    for option, path in (("tls_ca", ca), ("tls_cert", cert), ("tls_key", key)):
        if not path.is_file():
            raise ProtocolError("bad_tls", f"{option}: no such file {path} (made by `venueguard-collector pki init`)")
    try:
        ctx = verifying_context(ca_file=str(ca))
        ctx.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as exc:
        raise ProtocolError("bad_tls", f"cannot load TLS files {ca}, {cert}, {key}: {exc}") from exc
    return ctx


def context_from_pem(ca_pem: str, cert_pem: str, key_pem: str) -> ssl.SSLContext:
    """Client context from PEM text (an agent's enrollment bundle).

    Python's ssl loads a certificate chain only from files, so cert and key pass through a file
    created 0600 in a private temporary folder and deleted at once.
    """
    try:
        ctx = verifying_context(ca_pem=ca_pem)
        with tempfile.TemporaryDirectory(prefix="vg-tls-") as folder:
            path = os.path.join(folder, "client.pem")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(cert_pem + "\n" + key_pem)
            ctx.load_cert_chain(path)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ProtocolError("bad_tls", f"the TLS certificate, key or CA in the enrollment bundle is unusable: {exc}") from exc
    return ctx
