"""The day-before readiness check on the wire: the collector's command and the agent's report.

粤应急规〔2023〕3号 二(四): 「考试点要至少提前一天做好考场考试准备……进行调试、检查，确保正常运行，
考场准备完成后封闭待用」. The collector sends a signed ``readiness.run`` command on
``vg/v1/<agent>/cmd``; the agent runs every check once and answers with one ``readiness.report``
record on its sequenced ``rpt`` stream (through the outbox, so the report is never lost). The same
report is what ``venueguard-agent check`` prints locally.

Item ids are stable English names (the collector's pages and the seal compare them across
reports); ``seen`` and ``fix`` are Chinese sentences for venue staff.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol import topics
from protocol.envelope import Envelope, decode, record
from protocol.errors import ProtocolError

#: The items of a readiness report, in the order they are shown (issue 7, DESIGN.md PREP).
ITEMS = (
    "cameras",         # every registered camera of every room with an exam streams (ladder up to L3)
    "recorders",       # every recorder up and answering with the configured credentials
    "recorder_disks",  # disks healthy, free space enough for the exam day's recording
    "recording",       # recording progressing on every exam-room channel
    "lan_devices",     # only registered devices, each at its registered address
    "terminals",       # the registered exam terminals of the exam rooms are present
    "host_address",    # this host's addresses match its registration
    "remote_control",  # no remote-control software or listener
    "wireless",        # no wireless interface
    "isolation",       # no route or reachable target outside the exam network
    "logs",            # log sources intact since the last manifest, retention not short
    "clocks",          # host and device clocks within 2 s of the collector
    "outbox",          # nothing left undelivered in the agent's outbox
    "host_disk",       # enough free disk on the host
)
RESULTS = ("pass", "fail", "unknown")  # 通过 / 不通过 / 无法检查
COMMAND_KIND = "readiness.run"
REPORT_KIND = "readiness.report"
#: Host and device clocks may differ from the collector's by this much (issue 7).
MAX_CLOCK_OFFSET = 2.0


@dataclass(frozen=True)
class ItemResult:
    """One checked item: its result, what was seen, and how to fix it (Chinese)."""

    item: str
    result: str
    seen: str
    fix: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.item not in ITEMS:
            raise ValueError(f"unknown readiness item {self.item!r}; one of {ITEMS}")
        if self.result not in RESULTS:
            raise ValueError(f"unknown result {self.result!r}; one of {RESULTS}")


@dataclass(frozen=True)
class Report:
    """One agent's readiness report.

    ``baseline`` is what the seal keeps when the venue passes: ``devices`` {mac: ip}, ``host``
    {interface: [addresses]}, ``cameras`` {mac: {...}}, ``recorders`` {id: {...}}, ``config_version``.
    ``round_id`` is None for a local ``venueguard-agent check``.
    """

    agent_id: str
    round_id: int | None
    exam_day: str
    started_at: float
    finished_at: float
    items: tuple[ItemResult, ...]
    baseline: dict[str, Any] = field(default_factory=dict)
    config_version: int = 0
    collector_connected: bool = True

    @property
    def result(self) -> str:
        """``pass`` only when every item passed; ``fail`` when any failed; else ``unknown``."""
        results = {i.result for i in self.items}
        if "fail" in results:
            return "fail"
        return "pass" if results == {"pass"} else "unknown"

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["result"] = self.result
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Report:
        """Parse (ValueError names what is wrong)."""
        try:
            items = tuple(ItemResult(**{k: v for k, v in i.items()}) for i in doc["items"])
            return cls(str(doc["agent_id"]), None if doc.get("round_id") is None else int(doc["round_id"]),
                       str(doc["exam_day"]), float(doc["started_at"]), float(doc["finished_at"]), items,
                       dict(doc.get("baseline") or {}), int(doc.get("config_version", 0)),
                       bool(doc.get("collector_connected", True)))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"readiness report unreadable: {exc}") from exc


@dataclass(frozen=True)
class Command:
    """The collector's request to run the readiness check now."""

    round_id: int
    venue_id: str
    exam_day: str      # YYYY-MM-DD, the exam day being prepared for
    deadline: float    # the report must arrive before this (epoch seconds)
    issued_at: float   # the collector's clock when it sent the command

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def command_message(key: Ed25519PrivateKey, agent_id: str, cmd: Command) -> tuple[str, bytes, bool]:
    """The signed command for one agent: ``(topic, payload, retain)``; not retained (a stale
    request must not run again when the agent reconnects days later)."""
    env = Envelope(agent_id, "collector", cmd.round_id, round(cmd.issued_at, 3), "cmd",
                   (record(COMMAND_KIND, cmd.issued_at, cmd.to_json()),))
    return topics.topic(agent_id, "cmd"), env.signed(key).encode(), False


def parse_command(payload: bytes, collector_key: Ed25519PublicKey, agent_id: str) -> Command:
    """Verify and read a command; ProtocolError names why it is refused."""
    env = decode(payload)
    if env.stream != "cmd" or env.agent_id != agent_id:
        raise ProtocolError("wrong_target", f"command for {env.agent_id!r} on stream {env.stream!r}")
    if not env.verify(collector_key):
        raise ProtocolError("bad_signature", "command is not signed by this agent's collector")
    try:
        rec = env.records[0]
        if rec["kind"] != COMMAND_KIND:
            raise ProtocolError("bad_schema", f"unknown command {rec['kind']!r}")
        d = rec["data"]
        return Command(int(d["round_id"]), str(d["venue_id"]), str(d["exam_day"]), float(d["deadline"]),
                       float(d["issued_at"]))
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        raise ProtocolError("bad_schema", f"command unreadable: {exc}") from exc
