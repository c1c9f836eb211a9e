"""The envelope: canonical bytes, signatures, and a named reason for every malformed input."""

from __future__ import annotations

import json

import pytest

from protocol import keys, topics
from protocol.envelope import MAX_PAYLOAD_BYTES, Envelope, decode, record
from protocol.errors import ProtocolError


def _env(**kw: object) -> Envelope:
    base = dict(agent_id="a1", boot="b1", seq=1, sent_at=1.5, stream="ev",
                records=(record("host.snapshot", 1.0, {"x": "考场"}, seq=1),))
    base.update(kw)
    return Envelope(**base)  # type: ignore[arg-type]


def test_signed_envelope_round_trips_and_verifies() -> None:
    """Encode → decode gives the same envelope, and the signature verifies only with the signer's key."""
    key, other = keys.new_private_key(), keys.new_private_key()
    env = _env().signed(key)
    back = decode(env.encode())
    assert back == env
    assert back.verify(key.public_key())
    assert not back.verify(other.public_key())


def test_tampering_with_any_field_breaks_the_signature() -> None:
    """Changing a record after signing is detected."""
    key = keys.new_private_key()
    doc = json.loads(_env().signed(key).encode())
    doc["records"][0]["data"]["x"] = "办公网"
    assert not decode(json.dumps(doc).encode()).verify(key.public_key())


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "bad_json"),
        (b"\xff\xfe", "bad_json"),
        (b"[]", "bad_schema"),
        (json.dumps({"v": 99}).encode(), "unknown_version"),
        (b"x" * (MAX_PAYLOAD_BYTES + 1), "oversized"),
    ],
)
def test_malformed_payloads_name_their_reason(payload: bytes, reason: str) -> None:
    """Each kind of bad input raises ProtocolError with a stable reason code."""
    with pytest.raises(ProtocolError) as info:
        decode(payload)
    assert info.value.reason == reason


def test_schema_errors_name_the_field() -> None:
    """A missing field, a wrong type and non-consecutive record seqs are each named."""
    good = json.loads(_env().signed(keys.new_private_key()).encode())
    for mutate, needle in [
        (lambda d: d.pop("boot"), "'boot'"),
        (lambda d: d.__setitem__("seq", "1"), "'seq'"),
        (lambda d: d["records"][0].__setitem__("seq", 5), "records[0].seq"),
        (lambda d: d.__setitem__("extra", 1), "unknown envelope fields"),
        (lambda d: d.__setitem__("stream", "nope"), "stream"),
    ]:
        doc = json.loads(json.dumps(good))
        mutate(doc)
        with pytest.raises(ProtocolError) as info:
            decode(json.dumps(doc).encode())
        assert needle in info.value.detail


def test_topics_build_and_parse() -> None:
    """Topic helpers cover every stream and refuse unsafe agent ids."""
    for stream in topics.AGENT_STREAMS + topics.COLLECTOR_STREAMS:
        name = topics.topic("gz-th01-srv1", stream)
        assert name == f"vg/v1/gz-th01-srv1/{stream}"
        assert topics.parse(name) == topics.Topic("gz-th01-srv1", stream)
    for bad in ["vg/v1/a/b/c", "vg/v2/a/ev", "vg/v1/a+b/ev", "vg/v1/a/zz"]:
        with pytest.raises(ProtocolError):
            topics.parse(bad)


def test_bundle_round_trip_is_private(tmp_path) -> None:  # noqa: ANN001
    """A bundle written to disk is mode 0600 and loads back with the same keys."""
    ckey = keys.new_private_key()
    bundle = keys.make_bundle("a1", "V1", ckey, "127.0.0.1", 1883)
    path = tmp_path / "a1.bundle.json"
    keys.write_bundle(path, bundle)
    assert path.stat().st_mode & 0o777 == 0o600
    back = keys.read_bundle(path)
    assert keys.public_b64(back.private_key) == keys.public_b64(bundle.private_key)
    assert keys.public_b64(back.collector_public_key) == keys.public_b64(ckey)
    path.write_text("{}")
    with pytest.raises(ProtocolError, match="not a venueguard-bundle/1"):
        keys.read_bundle(path)
