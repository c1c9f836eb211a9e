"""Hikvision ISAPI: the recorder's identity, uptime, disks, channels and newest recording.

Documents are matched by element *local name*, never by namespace: firmwares answer with
``http://www.hikvision.com/ver20/XMLSchema`` or ``ver10`` (sometimes both on one device), and a
namespace-bound parser would silently find nothing on the other. Parsers are pure functions of the
response bytes, tested against the fixtures in ``tests/fixtures/isapi/``.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
import xml.etree.ElementTree as ET
from typing import Iterator

from agent.watchers.digest import AuthFailed, DigestClient, ProbeError
from agent.watchers.recorder_probe import Channel, Disk, Probe, Segment, boot_time, fill_newest, lag_seconds, parse_time

#: HDD status words that mean the disk is usable (``sleeping``/``idle``: spun down, not broken).
#: Every other word (``unformatted``, ``error``, ``abnormal``, ``offline``, ``smartFailed``,
#: ``mismatch``, ``notexist``, ``formating``…) is a fault: better one reported word too many than a
#: broken disk called healthy.
HDD_OK = frozenset({"ok", "idle", "sleeping"})
MAX_PAGES = 5
PAGE = 50


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _all(root: ET.Element, name: str) -> Iterator[ET.Element]:
    """Every descendant element called ``name`` (local name), document order."""
    return (el for el in root.iter() if _local(el.tag) == name)


def _text(el: ET.Element, name: str, default: str = "") -> str:
    """Text of the first descendant ``name``, stripped."""
    found = next(_all(el, name), None)
    return default if found is None or found.text is None else found.text.strip()


def _xml(body: bytes) -> ET.Element:
    try:
        return ET.fromstring(body)
    except ET.ParseError as exc:
        raise ProbeError("bad_response", f"not XML: {exc}") from exc


def parse_device_info(body: bytes) -> dict[str, str]:
    """``DeviceInfo`` → model, serial, firmware (version + build), name, type."""
    root = _xml(body)
    firmware = " ".join(x for x in (_text(root, "firmwareVersion"), _text(root, "firmwareReleasedDate")) if x)
    return {"model": _text(root, "model"), "serial": _text(root, "serialNumber"), "firmware": firmware,
            "device_name": _text(root, "deviceName"), "device_type": _text(root, "deviceType")}


def parse_status(body: bytes) -> tuple[int | None, str]:
    """``DeviceStatus`` → (uptime seconds, device clock text)."""
    root = _xml(body)
    up = _text(root, "deviceUpTime")
    return (int(up) if up.isdigit() else None), _text(root, "currentDeviceTime")


def parse_storage(body: bytes) -> dict[str, Disk]:
    """``storage/hddList/hdd`` → per disk id: raw status word, fault, capacity and free MB."""
    disks: dict[str, Disk] = {}
    for hdd in _all(_xml(body), "hdd"):
        status = _text(hdd, "status")
        disks[_text(hdd, "id")] = {"name": _text(hdd, "hddName"), "status": status,
                                   "fault": status.lower() not in HDD_OK,
                                   "capacity_mb": _number(_text(hdd, "capacity")),
                                   "free_mb": _number(_text(hdd, "freeSpace"))}
    return disks


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_channels(body: bytes) -> dict[int, Channel]:
    """``InputProxyChannelStatusList`` → per channel id: online, ``chanDetectResult`` word, camera IP."""
    channels: dict[int, Channel] = {}
    for ch in _all(_xml(body), "InputProxyChannelStatus"):
        ident = _text(ch, "id")
        if ident.isdigit():
            channels[int(ident)] = {"online": _text(ch, "online").lower() == "true",
                                    "status": _text(ch, "chanDetectResult"), "ip": _text(ch, "ipAddress")}
    return channels


#: The recorder's view of its channels' streams (NVR: ``StreamingProxy``), with their bitrates.
STREAMING_PROXY = "/ISAPI/ContentMgmt/StreamingProxy/channels"


def parse_bitrates(body: bytes) -> dict[int, float]:
    """``StreamingChannelList`` → per recorder channel, its main stream's bitrate in kbit/s.

    Stream ids are ``channel*100 + stream`` (101 = channel 1, main stream: what is recorded). VBR
    streams count at their ceiling ``vbrUpperCap``, CBR at ``constantBitRate``: the readiness check
    asks whether the disk holds the day's recording at most, not on average.
    """
    out: dict[int, float] = {}
    for sc in _all(_xml(body), "StreamingChannel"):
        ident = _text(sc, "id")
        if not ident.isdigit() or int(ident) % 100 != 1:
            continue
        vbr = _text(sc, "videoQualityControlType").lower() == "vbr"
        names = ("vbrUpperCap", "constantBitRate") if vbr else ("constantBitRate", "vbrUpperCap")
        rate = next((r for r in (_number(_text(sc, n)) for n in names) if r), None)
        if rate:
            out[int(ident) // 100] = rate
    return out


def read_bitrates(client: DigestClient) -> dict[int, float] | None:
    """The channels' recording bitrates (kbit/s); None when the recorder does not say (404, no XML)."""
    try:
        return parse_bitrates(client.get(STREAMING_PROXY)) or None
    except AuthFailed:
        raise
    except ProbeError:
        return None


def parse_search(body: bytes) -> tuple[str, int, list[str]]:
    """``CMSearchResult`` → (``responseStatusStrg``, numOfMatches, every match's ``endTime``)."""
    root = _xml(body)
    ends = [_text(item, "endTime") for item in _all(root, "searchMatchItem")]
    matches = _text(root, "numOfMatches")
    return _text(root, "responseStatusStrg"), int(matches) if matches.isdigit() else len(ends), ends


def search_body(track: int, start: dt.datetime, end: dt.datetime, position: int) -> bytes:
    """A ``CMSearchDescription`` for one track's recordings between ``start`` and ``end`` (UTC)."""
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return (f'<?xml version="1.0" encoding="UTF-8"?><CMSearchDescription version="2.0" '
            f'xmlns="http://www.hikvision.com/ver20/XMLSchema"><searchID>{uuid.uuid4()}</searchID>'
            f"<trackList><trackID>{track}</trackID></trackList><timeSpanList><timeSpan>"
            f"<startTime>{start.astimezone(dt.timezone.utc):{fmt}}</startTime>"
            f"<endTime>{end.astimezone(dt.timezone.utc):{fmt}}</endTime></timeSpan></timeSpanList>"
            f"<maxResults>{PAGE}</maxResults><searchResultPostion>{position}</searchResultPostion>"
            "<metadataList><metadataDescriptor>//recordType.meta.std-cgi.com</metadataDescriptor>"
            "</metadataList></CMSearchDescription>").encode()


def newest_segment(client: DigestClient, channel: int, clock: dt.datetime, lookback: float) -> Segment:
    """The latest ``endTime`` of the channel's main-stream track (``channel*100+1``) in the window.

    The window reaches a day past the device clock, so a firmware that writes local time as ``Z``
    still finds its newest segment; results come oldest first, so pages are read to the end.
    """
    start, end = clock - dt.timedelta(seconds=lookback), clock + dt.timedelta(days=1)
    ends: list[str] = []
    for page in range(MAX_PAGES):
        body = search_body(channel * 100 + 1, start, end, page * PAGE)
        status, _, found = parse_search(client.request("POST", "/ISAPI/ContentMgmt/search", body, "application/xml"))
        ends += found
        if status.upper() != "MORE" or not found:
            break
    parsed = [(t, e) for e in ends if (t := parse_time(e)) is not None]
    if not parsed:
        return {"end": None, "lag_s": None}
    lag, text = min((lag_seconds(clock, t), e) for t, e in parsed)
    return {"end": text, "lag_s": round(lag, 1)}


def probe(client: DigestClient, windows: tuple[float, ...]) -> Probe:
    """One poll. deviceInfo must answer (it is the liveness test); other parts may fail alone."""
    result = Probe(parse_device_info(client.get("/ISAPI/System/deviceInfo")))
    clock = dt.datetime.now(dt.timezone.utc)
    parts = (("status", "/ISAPI/System/status"), ("disks", "/ISAPI/ContentMgmt/Storage"),
             ("channels", "/ISAPI/ContentMgmt/InputProxy/channels/status"))
    for part, path in parts:
        try:
            asked = time.time()
            body = client.get(path)
            if part == "status":
                result.uptime, result.clock = parse_status(body)
                result.clock_at = (asked + time.time()) / 2
                clock = parse_time(result.clock) or clock
                result.boot = boot_time(parse_time(result.clock), result.uptime, time.time())
            elif part == "disks":
                result.disks = parse_storage(body)
            else:
                result.channels = parse_channels(body)
        except AuthFailed:
            raise
        except ProbeError as exc:
            result.errors[part] = str(exc)
    fill_newest(result, client, clock, windows, newest_segment)
    return result
