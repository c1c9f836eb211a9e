"""The signed envelope: the only shape that travels between agent and collector (DESIGN.md §4).

An envelope carries a batch of records. On sequenced streams (``ev``, ``log``, ``rpt``) each
record has its own ``seq`` and the records of one envelope are consecutive; the envelope's
``seq`` is the first record's. Sequencing records rather than envelopes lets the agent re-batch
freely on resend while the collector still dedupes exactly on ``(agent_id, seq)``. On ``hb`` and
``state`` the envelope's ``seq`` is the agent's highest committed seq, so the collector can see a
tail gap even when no record arrives.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol import keys
from protocol.errors import ProtocolError
from protocol.topics import AGENT_STREAMS, COLLECTOR_STREAMS, SEQUENCED_STREAMS, check_agent_id

VERSION = 1
SUPPORTED_VERSIONS = frozenset({VERSION})
#: Larger payloads are refused before parsing; the agent splits batches well below this.
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_RECORDS = 1000


@dataclass(frozen=True)
class Envelope:
    """One signed batch; ``records`` are plain JSON objects with ``kind``, ``at`` and ``data``."""

    agent_id: str
    boot: str
    seq: int
    sent_at: float
    stream: str
    records: tuple[dict[str, Any], ...]
    sig: str = ""
    v: int = VERSION

    def body(self) -> dict[str, Any]:
        """The signed part, as a JSON object."""
        return {
            "v": self.v,
            "agent_id": self.agent_id,
            "boot": self.boot,
            "seq": self.seq,
            "sent_at": self.sent_at,
            "stream": self.stream,
            "records": list(self.records),
        }

    def canonical(self) -> bytes:
        """Deterministic bytes the signature covers: sorted keys, no spaces, UTF-8."""
        return canonical_json(self.body())

    def signed(self, key: Ed25519PrivateKey) -> "Envelope":
        """A copy carrying ``key``'s signature."""
        return replace(self, sig=keys.sign(key, self.canonical()))

    def verify(self, key: Ed25519PublicKey) -> bool:
        """True when the signature is ``key``'s over the canonical bytes."""
        return bool(self.sig) and keys.verify(key, self.canonical(), self.sig)

    def encode(self) -> bytes:
        """Wire bytes: the canonical body plus ``sig``."""
        doc = self.body()
        doc["sig"] = self.sig
        return canonical_json(doc)

    @property
    def last_seq(self) -> int:
        """Seq of the last record (sequenced streams), else the envelope seq."""
        return self.seq + len(self.records) - 1 if self.stream in SEQUENCED_STREAMS else self.seq


def canonical_json(doc: Any) -> bytes:
    """Canonical JSON encoding used for signing and hashing."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def record(kind: str, at: float, data: dict[str, Any], seq: int | None = None) -> dict[str, Any]:
    """Build one record; ``seq`` only on sequenced streams."""
    rec: dict[str, Any] = {"kind": kind, "at": at, "data": data}
    if seq is not None:
        rec["seq"] = seq
    return rec


def decode(payload: bytes) -> Envelope:
    """Parse and validate wire bytes; raise ProtocolError with a stable reason on anything off."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError("oversized", f"payload is {len(payload)} bytes, limit {MAX_PAYLOAD_BYTES}")
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError("bad_json", f"payload is not UTF-8 JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ProtocolError("bad_schema", "payload is not a JSON object")
    version = doc.get("v")
    if version not in SUPPORTED_VERSIONS:
        raise ProtocolError("unknown_version", f"envelope version {version!r} is not one of {sorted(SUPPORTED_VERSIONS)}")
    unknown = set(doc) - {"v", "agent_id", "boot", "seq", "sent_at", "stream", "records", "sig"}
    if unknown:
        raise ProtocolError("bad_schema", f"unknown envelope fields {sorted(unknown)}")
    env = Envelope(
        agent_id=_field(doc, "agent_id", str),
        boot=_field(doc, "boot", str),
        seq=_field(doc, "seq", int),
        sent_at=float(_field(doc, "sent_at", (int, float))),
        stream=_field(doc, "stream", str),
        records=tuple(_records(doc)),
        sig=_field(doc, "sig", str),
        v=version,
    )
    _check(env)
    return env


def _field(doc: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """Fetch a required field of the given JSON type (bools are not ints here)."""
    if name not in doc:
        raise ProtocolError("bad_schema", f"envelope lacks field {name!r}")
    value = doc[name]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ProtocolError("bad_schema", f"envelope field {name!r} has wrong type {type(value).__name__}")
    return value


def _records(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Validate the records array."""
    recs = doc.get("records")
    if not isinstance(recs, list):
        raise ProtocolError("bad_schema", "envelope field 'records' is not an array")
    if len(recs) > MAX_RECORDS:
        raise ProtocolError("oversized", f"envelope has {len(recs)} records, limit {MAX_RECORDS}")
    for i, rec in enumerate(recs):
        if not isinstance(rec, dict):
            raise ProtocolError("bad_schema", f"records[{i}] is not an object")
        if not isinstance(rec.get("kind"), str) or not rec["kind"]:
            raise ProtocolError("bad_schema", f"records[{i}].kind is missing or not a string")
        at = rec.get("at")
        if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at):
            raise ProtocolError("bad_schema", f"records[{i}].at is not a number")
        if not isinstance(rec.get("data"), dict):
            raise ProtocolError("bad_schema", f"records[{i}].data is not an object")
        extra = set(rec) - {"kind", "at", "data", "seq"}
        if extra:
            raise ProtocolError("bad_schema", f"records[{i}] has unknown fields {sorted(extra)}")
    return recs


def _check(env: Envelope) -> None:
    """Cross-field rules: known stream, seq layout."""
    check_agent_id(env.agent_id)
    if env.stream not in AGENT_STREAMS + COLLECTOR_STREAMS:
        raise ProtocolError("unknown_stream", f"envelope stream {env.stream!r} is unknown")
    if env.seq < 0:
        raise ProtocolError("bad_schema", "envelope seq is negative")
    if env.stream in SEQUENCED_STREAMS:
        if env.seq < 1 or not env.records:
            raise ProtocolError("bad_schema", "a sequenced envelope needs seq >= 1 and at least one record")
        for i, rec in enumerate(env.records):
            if rec.get("seq") != env.seq + i:
                raise ProtocolError("bad_schema", f"records[{i}].seq must be {env.seq + i}, got {rec.get('seq')!r}")
