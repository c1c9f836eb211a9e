"""ONVIF recorders (Profile G): identity, clock and recording progress over SOAP with WS-Security.

A small SOAP 1.2 client on ``http.client`` + ``xml.etree`` (no zeep, no gSOAP). Every call but
``GetSystemDateAndTime`` (PRE_AUTH in the ONVIF Core spec) carries a WS-Security UsernameToken with
``PasswordDigest = base64(sha1(nonce + created + password))`` (ONVIF Core §5.12, OASIS
UsernameToken Profile 1.0). ``Created`` is stamped on the *device* clock (agent time + the offset
measured by ``GetSystemDateAndTime``), because devices reject tokens outside their freshness window.

One poll: ``GetSystemDateAndTime`` (clock, and the liveness test) → ``GetDeviceInformation``
(Manufacturer, Model, FirmwareVersion, SerialNumber; the credentials test) → Recording Search
``GetRecordingSummary`` (DataFrom, DataUntil, NumberRecordings) → ``FindRecordings`` with an empty
scope (every recording) + ``GetRecordingSearchResults`` until ``SearchState`` is ``Completed`` →
``EndSearch``. Each ``RecordingInformation`` (RecordingToken, Source/SourceId + Address,
LatestRecording, RecordingStatus) becomes one channel whose newest segment ends at
``LatestRecording``, compared with the device's UTC clock, so ``recorder.not_recording`` works as
for ISAPI/Dahua and the evidence keeps the raw ``RecordingStatus`` and ``LatestRecording``.

Choices and limits:

* Channel numbers: the trailing number of each RecordingToken (``REC_CH02`` → 2) when every token
  has one and they are distinct; otherwise the 1-based order of the recordings sorted by token. The
  camera is matched by the host of ``Source/Address`` when it is a URI or an address.
* Channel online state and disks are not in Profile G core: channels are reported with
  ``online: None`` (unknown, never ``channel_offline``) and ``disks`` stays unknown, so ONVIF
  recorders give no disk or channel events.
* ONVIF has no uptime: no reboot detection for ONVIF recorders.
* Service addresses are the conventional fixed paths ``/onvif/device_service`` and
  ``/onvif/search_service`` (``GetServices`` could tell the real ones; not asked).
* A device that demands HTTP Digest instead of WS-Security answers 401: reported as auth_failed.
"""

from __future__ import annotations

import base64
import datetime as dt
import errno
import hashlib
import http.client
import os
import re
import socket
import time
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Iterator
from xml.sax.saxutils import escape

from agent.watchers.digest import AuthFailed, ProbeError
from agent.watchers.recorder_probe import Channel, Probe, Segment, lag_seconds, parse_time

DEVICE, SEARCH = "/onvif/device_service", "/onvif/search_service"
NS = {"s": "http://www.w3.org/2003/05/soap-envelope", "tds": "http://www.onvif.org/ver10/device/wsdl",
      "tse": "http://www.onvif.org/ver10/search/wsdl", "tt": "http://www.onvif.org/ver10/schema"}
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
DIGEST_TYPE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest"
BASE64_TYPE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"
AUTH_FAULTS = ("NotAuthorized", "FailedAuthentication", "InvalidSecurityToken", "InvalidSecurity")
MAX_RESULTS, MAX_ROUNDS = 64, 10


def password_digest(nonce: bytes, created: str, password: str) -> str:
    """``base64(sha1(nonce + created + password))`` with the raw (decoded) nonce bytes."""
    return base64.b64encode(hashlib.sha1(nonce + created.encode() + password.encode()).digest()).decode()


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _all(root: ET.Element, name: str) -> Iterator[ET.Element]:
    return (el for el in root.iter() if _local(el.tag) == name)


def _text(el: ET.Element, name: str) -> str:
    found = next(_all(el, name), None)
    return "" if found is None or found.text is None else found.text.strip()


def _xml(body: bytes) -> ET.Element:
    try:
        return ET.fromstring(body)
    except ET.ParseError as exc:
        raise ProbeError("bad_response", f"not XML: {exc}") from exc


def parse_fault(body: bytes) -> str:
    """A SOAP fault's code/subcode values and reason, ``""`` when the body is no fault."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return ""
    fault = next(_all(root, "Fault"), None)
    if fault is None:
        return ""
    codes = [v.text.strip() for v in _all(fault, "Value") if v.text]
    return " ".join(codes + [t.text.strip() for t in _all(fault, "Text") if t.text]) or "fault"


def parse_device_information(body: bytes) -> dict[str, str]:
    """``GetDeviceInformationResponse`` → the identity in evidence (as for the other vendors)."""
    root = _xml(body)
    return {"manufacturer": _text(root, "Manufacturer"), "model": _text(root, "Model"),
            "firmware": _text(root, "FirmwareVersion"), "serial": _text(root, "SerialNumber"),
            "device_name": "", "device_type": "onvif"}


def parse_system_date(body: bytes) -> dt.datetime | None:
    """``GetSystemDateAndTimeResponse`` → its ``UTCDateTime`` (aware, UTC), None when absent."""
    block = next(_all(_xml(body), "UTCDateTime"), None)
    if block is None:
        return None
    try:
        f = [int(_text(block, n)) for n in ("Year", "Month", "Day", "Hour", "Minute", "Second")]
        return dt.datetime(*f, tzinfo=dt.timezone.utc)  # type: ignore[misc]
    except ValueError:
        return None


def parse_summary(body: bytes) -> dict[str, str]:
    """``GetRecordingSummaryResponse`` → DataFrom, DataUntil, NumberRecordings (raw text)."""
    root = _xml(body)
    return {k: _text(root, k) for k in ("DataFrom", "DataUntil", "NumberRecordings")}


def parse_search_results(body: bytes) -> tuple[str, list[dict[str, str]]]:
    """``GetRecordingSearchResultsResponse`` → (SearchState, one dict per RecordingInformation)."""
    root = _xml(body)
    recs = []
    for info in _all(root, "RecordingInformation"):
        source = next(_all(info, "Source"), info)
        recs.append({"token": _text(info, "RecordingToken"), "source_id": _text(source, "SourceId"),
                     "address": _text(source, "Address"), "latest": _text(info, "LatestRecording"),
                     "status": _text(info, "RecordingStatus")})
    return _text(root, "SearchState"), recs


def _host(address: str) -> str:
    """The host of ``rtsp://198.51.100.21:554/...`` or a bare address; ``""`` otherwise."""
    if "://" in address:
        return urllib.parse.urlsplit(address).hostname or ""
    return address if re.fullmatch(r"[0-9a-fA-F.:]+", address) else ""


def channel_numbers(tokens: list[str]) -> dict[str, int]:
    """Trailing numbers of the tokens when all have distinct ones, else 1-based sorted order."""
    found = [re.search(r"(\d+)$", t) for t in tokens]
    nums = [int(m[1]) for m in found if m is not None]
    if len(nums) == len(tokens) and len(set(nums)) == len(nums) and all(n > 0 for n in nums):
        return dict(zip(tokens, nums))
    return {t: i for i, t in enumerate(sorted(tokens), 1)}


def recordings_to_channels(recs: list[dict[str, str]], clock: dt.datetime) -> tuple[dict[int, Channel], dict[int, Segment]]:
    """Per channel: unknown-online channel facts and the newest segment (``LatestRecording``)."""
    numbers = channel_numbers([r["token"] for r in recs])
    channels: dict[int, Channel] = {}
    newest: dict[int, Segment] = {}
    for r in recs:
        ch = numbers[r["token"]]
        channels[ch] = {"online": None, "status": r["status"], "ip": _host(r["address"]) or _host(r["source_id"])}
        end = parse_time(r["latest"]) if r["latest"] else None
        newest[ch] = {"end": r["latest"] or None, "lag_s": None if end is None else round(lag_seconds(clock, end), 1),
                      "recording_token": r["token"], "recording_status": r["status"]}
    return channels, newest


@dataclass
class OnvifClient:
    """SOAP calls to one device; same identity fields as :class:`DigestClient` for the watcher."""

    host: str
    port: int
    username: str
    password: str
    timeout: float = 5.0
    offset: float = 0.0  # device clock − agent clock, seconds (from GetSystemDateAndTime)

    def security(self) -> str:
        """A fresh UsernameToken header (new nonce, Created on the device clock)."""
        nonce = os.urandom(16)
        created = dt.datetime.fromtimestamp(time.time() + self.offset, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return (f'<wsse:Security s:mustUnderstand="1" xmlns:wsse="{WSSE}" xmlns:wsu="{WSU}"><wsse:UsernameToken>'
                f"<wsse:Username>{escape(self.username)}</wsse:Username>"
                f'<wsse:Password Type="{DIGEST_TYPE}">{password_digest(nonce, created, self.password)}</wsse:Password>'
                f'<wsse:Nonce EncodingType="{BASE64_TYPE}">{base64.b64encode(nonce).decode()}</wsse:Nonce>'
                f"<wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security>")

    def call(self, path: str, prefix: str, op: str, inner: str = "", auth: bool = True) -> bytes:
        """One operation; the response body, :class:`AuthFailed` on an authentication fault."""
        header = f"<s:Header>{self.security()}</s:Header>" if auth else ""
        xmlns = " ".join(f'xmlns:{p}="{u}"' for p, u in NS.items())
        env = (f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope {xmlns}>{header}'
               f"<s:Body><{prefix}:{op}>{inner}</{prefix}:{op}></s:Body></s:Envelope>")
        status, data = self._post(path, env.encode(), f'{NS[prefix]}/{op}')
        fault = parse_fault(data) if status != 200 else ""
        if status == 401 or any(f in fault for f in AUTH_FAULTS):
            raise AuthFailed(f"{op}: {fault or 'http 401'}")
        if status != 200:
            raise ProbeError(f"http {status}", f"{op}: {fault or data[:200].decode(errors='replace')}")
        return data

    def alive(self, path: str) -> int:
        """Unauthenticated ``GetSystemDateAndTime`` (PRE_AUTH): any HTTP status proves the service is up."""
        env = (f'<s:Envelope xmlns:s="{NS["s"]}"><s:Body><tds:GetSystemDateAndTime xmlns:tds="{NS["tds"]}"/>'
               "</s:Body></s:Envelope>")
        return self._post(path, env.encode(), f"{NS['tds']}/GetSystemDateAndTime")[0]

    def _post(self, path: str, body: bytes, action: str) -> tuple[int, bytes]:
        headers = {"Connection": "close", "Content-Type": f'application/soap+xml; charset=utf-8; action="{action}"'}
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read(4 << 20)
        except ConnectionRefusedError as exc:
            raise ProbeError("refused", str(exc)) from exc
        except (socket.timeout, TimeoutError) as exc:
            raise ProbeError("timeout", f"no answer within {self.timeout}s") from exc
        except (http.client.HTTPException, ConnectionError) as exc:
            raise ProbeError("bad_response", f"{type(exc).__name__}: {exc}") from exc
        except OSError as exc:
            raise ProbeError(errno.errorcode.get(exc.errno or 0, type(exc).__name__), str(exc)) from exc
        finally:
            conn.close()


def find_recordings(client: OnvifClient) -> list[dict[str, str]]:
    """Every recording's information: FindRecordings (empty scope), result rounds, EndSearch."""
    wait = f"PT{max(0.1, min(2.0, client.timeout / 2)):.1f}S"
    token = _text(_xml(client.call(SEARCH, "tse", "FindRecordings", f"<tse:Scope/><tse:MaxMatches>{MAX_RESULTS}"
                                   "</tse:MaxMatches><tse:KeepAliveTime>PT10S</tse:KeepAliveTime>")), "SearchToken")
    if not token:
        raise ProbeError("bad_response", "FindRecordings: no SearchToken")
    found: dict[str, dict[str, str]] = {}
    try:
        for _ in range(MAX_ROUNDS):
            state, recs = parse_search_results(client.call(
                SEARCH, "tse", "GetRecordingSearchResults", f"<tse:SearchToken>{escape(token)}</tse:SearchToken>"
                f"<tse:MaxResults>{MAX_RESULTS}</tse:MaxResults><tse:WaitTime>{wait}</tse:WaitTime>"))
            found.update({r["token"]: r for r in recs if r["token"]})
            if state in ("Completed", "Unknown", ""):
                break
    finally:
        try:
            client.call(SEARCH, "tse", "EndSearch", f"<tse:SearchToken>{escape(token)}</tse:SearchToken>")
        except AuthFailed:
            raise
        except ProbeError:
            pass  # the search expires after KeepAliveTime anyway
    return list(found.values())


def probe(client: OnvifClient, windows: tuple[float, ...]) -> Probe:
    """One poll (``windows`` unused: LatestRecording is absolute, no time-window search is needed)."""
    asked = time.time()
    clock = parse_system_date(client.call(DEVICE, "tds", "GetSystemDateAndTime", auth=False))
    middle = (asked + time.time()) / 2
    if clock is not None:
        client.offset = clock.timestamp() - middle
    result = Probe(parse_device_information(client.call(DEVICE, "tds", "GetDeviceInformation")))
    if clock is None:
        result.errors["clock"] = "GetSystemDateAndTime: no UTCDateTime"
        clock = dt.datetime.now(dt.timezone.utc)
    else:
        result.clock, result.clock_at = clock.isoformat(), middle
    try:
        summary = parse_summary(client.call(SEARCH, "tse", "GetRecordingSummary"))
        result.device["recordings"] = summary["NumberRecordings"]
        recs = find_recordings(client)
        result.channels, result.newest = recordings_to_channels(recs, clock)
    except AuthFailed:
        raise
    except ProbeError as exc:
        result.errors["recordings"] = str(exc)
    return result
