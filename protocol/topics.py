"""MQTT topic layout ``vg/v1/<agent_id>/<stream>`` (DESIGN.md §4)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from protocol.errors import ProtocolError

PREFIX = "vg/v1"
#: Streams an agent publishes on.
AGENT_STREAMS = ("ev", "log", "hb", "rpt", "state")
#: Streams the collector publishes on, for one agent.
COLLECTOR_STREAMS = ("ack", "cmd", "cfg")
#: Streams whose envelopes carry sequenced records that go through the outbox.
SEQUENCED_STREAMS = ("ev", "log", "rpt")
#: Agent ids double as MQTT usernames / certificate CNs, so they must be topic-safe.
AGENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Topic:
    """A parsed topic: whose subtree and which stream."""

    agent_id: str
    stream: str


def check_agent_id(agent_id: str) -> str:
    """Return ``agent_id`` if it is usable in topics, else raise ProtocolError."""
    if not AGENT_ID_RE.match(agent_id):
        raise ProtocolError(
            "bad_agent_id",
            f"agent id {agent_id!r} must be 1-64 characters of letters, digits, '_', '.', '-'",
        )
    return agent_id


def topic(agent_id: str, stream: str) -> str:
    """Build the topic of ``stream`` for ``agent_id``."""
    if stream not in AGENT_STREAMS + COLLECTOR_STREAMS:
        raise ProtocolError("unknown_stream", f"stream {stream!r} is not one of {AGENT_STREAMS + COLLECTOR_STREAMS}")
    return f"{PREFIX}/{check_agent_id(agent_id)}/{stream}"


def parse(name: str) -> Topic:
    """Parse an agent-side topic; raise ProtocolError naming what is off."""
    parts = name.split("/")
    if len(parts) != 4 or f"{parts[0]}/{parts[1]}" != PREFIX:
        raise ProtocolError("bad_topic", f"topic {name!r} is not {PREFIX}/<agent_id>/<stream>")
    agent_id, stream = parts[2], parts[3]
    check_agent_id(agent_id)
    if stream not in AGENT_STREAMS + COLLECTOR_STREAMS:
        raise ProtocolError("unknown_stream", f"topic {name!r} has unknown stream {stream!r}")
    return Topic(agent_id, stream)


def agent_subscription() -> str:
    """Wildcard the collector subscribes to for everything agents publish."""
    return f"{PREFIX}/+/+"
