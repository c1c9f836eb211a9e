"""The day-before readiness check, collector side: what is due, how agents' answers combine into a
venue report, what a seal keeps and what a re-seal changed. No I/O here (see
:mod:`collector.readiness_store` for the tables and :mod:`collector.readinessrunner` for the loop).

粤应急规〔2023〕3号 二(四): 「考试点要至少提前一天做好考场考试准备……确保正常运行，考场准备完成后封闭待用」.
The collector asks every agent of a venue with exams on day D to run its checks at a set time on
D−1; the venue passes only when every item of every agent passed, and an agent that does not
answer by the deadline makes the venue fail with 无报告 (no report) — silence is never a pass.
A pass seals the venue until D's last exam ends; from then on changes are after-seal evidence.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable
from zoneinfo import ZoneInfo

from protocol.readiness import ITEMS

#: ``requested_by`` of the rounds the schedule opens (anything else names a person).
SCHEDULE = "schedule"
#: How bad an item result is, for combining agents (a failure outranks not knowing, which
#: outranks silence; only a pass from everyone is a pass).
_RANK = {"pass": 0, "no_report": 1, "unknown": 2, "fail": 3}
#: Item results that count as failed: listed as failed items, and 已整改 (fixed) when a re-check
#: passes them. Silence is not a finding about an item: a silent agent is named instead.
FAILED = ("fail", "unknown")
#: What a probe saw of a camera at that moment (stream level reached, up/down), not what the camera
#: is: a re-seal must not report a camera as changed because one probe went deeper than another.
PROBE_FIELDS = frozenset({"status", "level", "origin"})


# -- days and times ------------------------------------------------------------------------------

def local_day(ts: float, tz: str) -> str:
    """The calendar day (YYYY-MM-DD) of ``ts`` in ``tz``."""
    return dt.datetime.fromtimestamp(ts, ZoneInfo(tz)).date().isoformat()


def next_day(day: str, days: int = 1) -> str:
    """``day`` moved by ``days`` calendar days."""
    return (dt.date.fromisoformat(day) + dt.timedelta(days=days)).isoformat()


def day_bounds(day: str, tz: str) -> tuple[float, float]:
    """Local midnight of ``day`` and of the next day, as epoch seconds (DST-safe)."""
    zone = ZoneInfo(tz)
    start = dt.datetime.combine(dt.date.fromisoformat(day), dt.time(), zone)
    end = dt.datetime.combine(dt.date.fromisoformat(next_day(day)), dt.time(), zone)
    return start.timestamp(), end.timestamp()


def opens_at(day: str, tz: str, hhmm: str) -> float:
    """When the scheduled round for exam day ``day`` is due: ``hhmm`` local time on the day before."""
    hour, minute = (int(x) for x in hhmm.split(":"))
    before = dt.date.fromisoformat(next_day(day, -1))
    return dt.datetime.combine(before, dt.time(hour, minute), ZoneInfo(tz)).timestamp()


def parse_day(text: str) -> str:
    """A YYYY-MM-DD day as typed (ValueError when it is not one)."""
    return dt.date.fromisoformat(text.strip()).isoformat()


def candidate_days(now: float, tz: str, hhmm: str) -> list[str]:
    """Exam days whose scheduled round may be due at ``now``: tomorrow once today's ``hhmm`` has
    passed, and today (a round the collector missed — down at ``hhmm``, or a plan imported late —
    is still worth running before the first exam starts; the caller checks that)."""
    today = local_day(now, tz)
    return [d for d in (today, next_day(today)) if now >= opens_at(d, tz, hhmm)]


# -- combining answers ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Answer:
    """One agent's on-time report for a round, with its evidence links."""

    agent_id: str
    report_id: int
    record_id: int
    vault_index: int
    seq: int | None
    received_at: float
    started_at: float | None
    finished_at: float | None
    result: str
    items: tuple[dict[str, Any], ...]
    baseline: dict[str, Any] = field(default_factory=dict)
    config_version: int = 0

    def item(self, name: str) -> dict[str, Any] | None:
        """This agent's result for item ``name`` (None when its report lacks the item)."""
        return next((i for i in self.items if i.get("item") == name), None)


@dataclass(frozen=True)
class VenueResult:
    """A venue report before it is stored: result, per-item and per-agent detail."""

    result: str
    items: list[dict[str, Any]]
    agents: list[dict[str, Any]]


def combine(addressed: Iterable[str], answers: dict[str, Answer]) -> VenueResult:
    """One venue report from the answers of the agents the round addressed.

    PASS only when every addressed agent answered and every item of every answer passed; an item
    missing from an answer counts as 无法检查 (unknown), a silent agent as 无报告 on every item.
    """
    agents = list(addressed)
    items = [_combined_item(name, agents, answers) for name in ITEMS]
    if not answers:
        result = "no_report"
    elif all(a in answers for a in agents) and all(i["result"] == "pass" for i in items):
        result = "pass"
    else:
        result = "fail"
    return VenueResult(result, items, [_agent_entry(a, answers.get(a)) for a in agents])


def _combined_item(name: str, agents: list[str], answers: dict[str, Answer]) -> dict[str, Any]:
    per: list[dict[str, Any]] = []
    for agent_id in agents:
        ans = answers.get(agent_id)
        found = ans.item(name) if ans is not None else None
        if ans is None:
            per.append({"agent_id": agent_id, "result": "no_report", "seen": "", "fix": "", "evidence": {}})
        elif found is None:
            per.append({"agent_id": agent_id, "result": "unknown", "seen": "", "fix": "", "evidence": {}, "missing": True})
        else:
            per.append({"agent_id": agent_id, "result": found.get("result", "unknown"), "seen": found.get("seen", ""),
                        "fix": found.get("fix", ""), "evidence": found.get("evidence") or {}})
    worst = max((p["result"] for p in per), key=lambda r: _RANK.get(r, _RANK["unknown"]), default="no_report")
    return {"item": name, "result": worst, "agents": per}


def _agent_entry(agent_id: str, ans: Answer | None) -> dict[str, Any]:
    if ans is None:
        return {"agent_id": agent_id, "result": "no_report"}
    return {"agent_id": agent_id, "result": ans.result, "report_id": ans.report_id, "record_id": ans.record_id,
            "vault_index": ans.vault_index, "seq": ans.seq, "received_at": ans.received_at,
            "started_at": ans.started_at, "finished_at": ans.finished_at, "config_version": ans.config_version}


def failed_items(items: Iterable[dict[str, Any]]) -> list[str]:
    """Item ids that failed or could not be checked, in report order (a silent agent's items are
    not findings: :func:`silent_agents` names those agents instead)."""
    return [i["item"] for i in items if i["result"] in FAILED]


def silent_agents(agents: Iterable[dict[str, Any]]) -> list[str]:
    """Agents that sent no report in time."""
    return [a["agent_id"] for a in agents if a["result"] == "no_report"]


def fixed_items(previous: Iterable[dict[str, Any]] | None, items: Iterable[dict[str, Any]]) -> list[str]:
    """Items that failed (or could not be checked) in the day's previous report and pass now: 已整改."""
    before = {i["item"]: i["result"] for i in previous or ()}
    return [i["item"] for i in items if i["result"] == "pass" and before.get(i["item"]) in FAILED]


# -- the seal ------------------------------------------------------------------------------------

def merge_baselines(answers: Iterable[Answer]) -> dict[str, Any]:
    """The venue's baseline from its agents' reports: devices {mac: ip}, cameras and recorders by
    id (one LAN: agents see the same devices), and each host's addresses and config version by
    agent (hosts are the agents' own)."""
    merged: dict[str, Any] = {"devices": {}, "cameras": {}, "recorders": {}, "hosts": {}, "config_versions": {}}
    for ans in sorted(answers, key=lambda a: a.agent_id):
        base = ans.baseline or {}
        for key in ("devices", "cameras", "recorders"):
            if isinstance(base.get(key), dict):
                merged[key].update(base[key])
        if isinstance(base.get("host"), dict):
            merged["hosts"][ans.agent_id] = base["host"]
        merged["config_versions"][ans.agent_id] = int(base.get("config_version", ans.config_version) or 0)
    return merged


def seal_changes(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """What a re-seal changed against the seal it replaces: ``{what, key, before, after}`` each.

    ``what`` is one of device_added / device_removed / device_readdressed, host_address,
    camera_added / camera_removed / camera_changed, recorder_added / recorder_removed /
    recorder_changed, config_version.
    """
    out: list[dict[str, Any]] = []
    b_dev, a_dev = before.get("devices") or {}, after.get("devices") or {}
    for mac in sorted(a_dev.keys() - b_dev.keys()):
        out.append(_change("device_added", mac, None, a_dev[mac]))
    for mac in sorted(b_dev.keys() - a_dev.keys()):
        out.append(_change("device_removed", mac, b_dev[mac], None))
    for mac in sorted(a_dev.keys() & b_dev.keys()):
        if a_dev[mac] != b_dev[mac]:
            out.append(_change("device_readdressed", mac, b_dev[mac], a_dev[mac]))
    out += _host_changes(before.get("hosts") or {}, after.get("hosts") or {})
    out += _keyed_changes("camera", _steady(before.get("cameras") or {}), _steady(after.get("cameras") or {}))
    out += _keyed_changes("recorder", before.get("recorders") or {}, after.get("recorders") or {})
    b_cv, a_cv = before.get("config_versions") or {}, after.get("config_versions") or {}
    for agent in sorted(b_cv.keys() | a_cv.keys()):
        if b_cv.get(agent) != a_cv.get(agent):
            out.append(_change("config_version", agent, b_cv.get(agent), a_cv.get(agent)))
    return out


def _steady(cameras: dict[str, Any]) -> dict[str, Any]:
    return {k: {f: v for f, v in c.items() if f not in PROBE_FIELDS} if isinstance(c, dict) else c
            for k, c in cameras.items()}


def _change(what: str, key: str, before: Any, after: Any) -> dict[str, Any]:
    return {"what": what, "key": key, "before": before, "after": after}


def _host_changes(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """Per agent and interface: addresses that differ (an interface that came or went included)."""
    out = []
    for agent in sorted(before.keys() | after.keys()):
        b, a = before.get(agent) or {}, after.get(agent) or {}
        for iface in sorted(b.keys() | a.keys()):
            if sorted(map(str, b.get(iface) or [])) != sorted(map(str, a.get(iface) or [])):
                out.append(_change("host_address", f"{agent}/{iface}", b.get(iface), a.get(iface)))
    return out


def _keyed_changes(kind: str, before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    out = [_change(f"{kind}_added", k, None, after[k]) for k in sorted(after.keys() - before.keys())]
    out += [_change(f"{kind}_removed", k, before[k], None) for k in sorted(before.keys() - after.keys())]
    out += [_change(f"{kind}_changed", k, before[k], after[k]) for k in sorted(after.keys() & before.keys())
            if before[k] != after[k]]
    return out


def describe_change(change: dict[str, Any], t: Callable[..., str]) -> str:
    """One seal change as a sentence from a surface's catalogue (``seal_change_<what>``), e.g.
    新增设备 02:…（192.0.2.90）; ``t`` is that surface's translator."""
    return t(f"seal_change_{change['what']}", default=change["what"] + " {name}: {before} → {after}",
             name=change["key"], before=_shown(change["before"]), after=_shown(change["after"]))


def _shown(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, list):
        return "、".join(map(str, value)) or "—"
    if isinstance(value, dict):
        return "，".join(f"{k}={v}" for k, v in sorted(value.items())) or "—"
    return str(value)
