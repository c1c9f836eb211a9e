"""Enrollment: an agent's key pair, its registry entry, and the bundle its host loads."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.pki import Pki
from collector.store import Store
from protocol.keys import make_bundle, public_b64, write_bundle
from protocol.topics import check_agent_id


def enroll(store: Store, key: Ed25519PrivateKey, agent_id: str, venue_id: str, *, venue_name: str | None,
           broker_host: str, broker_port: int, out: Path, pki: Pki | None = None) -> Path:
    """Register ``agent_id`` at ``venue_id`` with a fresh key and write its bundle to ``out``.

    Re-enrolling an agent replaces its key: the old bundle stops being accepted at once. With a
    ``pki`` that exists (``pki init``), the bundle also carries a client certificate with CN =
    ``agent_id``, its key and the CA, for mutual TLS; re-enrolling revokes the earlier certificate.
    """
    check_agent_id(agent_id)
    check_agent_id(venue_id)
    bundle = make_bundle(agent_id, venue_id, key, broker_host, broker_port)
    if pki is not None and pki.exists():
        issued = pki.issue_agent(agent_id)
        bundle = dataclasses.replace(bundle, tls_ca=issued.ca_pem, tls_cert=issued.cert_pem, tls_key=issued.key_pem)
    store.add_venue(venue_id, venue_name)
    store.enroll_agent(agent_id, venue_id, public_b64(bundle.private_key))
    write_bundle(out, bundle)
    return out
