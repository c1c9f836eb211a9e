"""A stand-in ONVIF (Profile G) recorder for tests: Device and Recording Search services over SOAP 1.2.

Answers are the documentation shapes in ``tests/fixtures/onvif/`` with the live fields (UTC clock,
LatestRecording, RecordingStatus, Track DataTo, DataUntil) set from a JSON control file re-read on
every request, so a test changes the recorder's state by rewriting that file:

    {"frozen": {"1": <epoch>}, "status": {"1": "Stopped"}, "mute": false}

``frozen`` missing for a channel means "recording now" (LatestRecording 2 s ago, moving forward);
``status`` overrides that channel's RecordingStatus (default ``Recording``); ``mute: true`` makes
the server accept connections but never answer (the client times out). The channel of a recording
is the trailing number of its token (``REC_CH02`` → 2). Every operation but GetSystemDateAndTime
(PRE_AUTH) needs a WS-Security UsernameToken whose PasswordDigest is checked here
(base64(sha1(nonce + created + password)), Created within 5 minutes); a bad one gets HTTP 400 with
the ``ter:NotAuthorized`` fault. Each request is appended to ``--log`` as ``PATH OPERATION STATUS``.
Run: ``python tests/fake_onvif.py --bind 198.51.100.10 --port 80 --control ctl.json --log req.log``.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import re
import secrets
import time
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "onvif"
PREFIXES = {"SOAP-ENV": "http://www.w3.org/2003/05/soap-envelope", "tds": "http://www.onvif.org/ver10/device/wsdl",
            "tse": "http://www.onvif.org/ver10/search/wsdl", "tt": "http://www.onvif.org/ver10/schema",
            "ter": "http://www.onvif.org/ver10/error"}
for _p, _u in PREFIXES.items():
    ET.register_namespace(_p, _u)
SERVICES = {"/onvif/device_service": {"GetSystemDateAndTime", "GetDeviceInformation"},
            "/onvif/search_service": {"GetRecordingSummary", "FindRecordings", "GetRecordingSearchResults", "EndSearch"}}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _utc(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_token(envelope: ET.Element, user: str, password: str, now: float) -> bool:
    """Server side of the WS-Security UsernameToken PasswordDigest (ONVIF Core §5.12)."""
    tok = next((e for e in envelope.iter() if _local(e.tag) == "UsernameToken"), None)
    if tok is None:
        return False
    f = {_local(e.tag): (e.text or "").strip() for e in tok}
    pw = next((e for e in tok if _local(e.tag) == "Password"), None)
    if pw is None or not pw.get("Type", "").endswith("#PasswordDigest") or f.get("Username") != user:
        return False
    try:
        nonce = base64.b64decode(f.get("Nonce", ""), validate=True)
        created = dt.datetime.fromisoformat(f.get("Created", "").replace("Z", "+00:00")).timestamp()
    except ValueError:
        return False
    want = base64.b64encode(hashlib.sha1(nonce + f["Created"].encode() + password.encode()).digest()).decode()
    return abs(now - created) <= 300 and secrets.compare_digest(want, f.get("Password", ""))


class OnvifRecorder:
    """The answers, from fixtures plus the control file."""

    def __init__(self, control: Path, user: str, password: str) -> None:
        self.control, self.user, self.password = control, user, password

    def ctl(self) -> dict[str, Any]:
        try:
            return json.loads(self.control.read_text())
        except (OSError, ValueError):
            return {}

    def answer(self, path: str, body: bytes) -> tuple[int, str, bytes]:
        """(HTTP status, operation name, response body) for one SOAP request."""
        now, c = time.time(), self.ctl()
        try:
            env = ET.fromstring(body)
        except ET.ParseError:
            return 400, "?", b"not XML"
        soap_body = next((e for e in env if _local(e.tag) == "Body"), None)
        op = _local(soap_body[0].tag) if soap_body is not None and len(soap_body) else "?"
        if op not in SERVICES.get(path, set()):
            return 400, op, self._fault("ter:ActionNotSupported", "Unknown operation")
        if op != "GetSystemDateAndTime" and not check_token(env, self.user, self.password, now):
            return 400, op, (FIXTURES / "Fault_NotAuthorized.xml").read_bytes()
        if op == "GetSystemDateAndTime":
            t = time.gmtime(now)
            text = (FIXTURES / "GetSystemDateAndTime.xml").read_text().format(
                year=t.tm_year, month=t.tm_mon, day=t.tm_mday, hour=t.tm_hour, minute=t.tm_min, second=t.tm_sec)
            return 200, op, text.encode()
        root = ET.parse(FIXTURES / f"{op}Response.xml").getroot()
        latest = {ch: c.get("frozen", {}).get(ch, now - 2) for ch in ("1", "2")}
        if op == "GetRecordingSummary":
            self._set(root, "DataUntil", _utc(max(latest.values())))
        elif op == "GetRecordingSearchResults":
            for info in [e for e in root.iter() if _local(e.tag) == "RecordingInformation"]:
                token = next(e.text or "" for e in info.iter() if _local(e.tag) == "RecordingToken")
                ch = str(int(re.search(r"(\d+)$", token)[1]))  # type: ignore[index]
                self._set(info, "LatestRecording", _utc(latest.get(ch, now - 2)))
                self._set(info, "DataTo", _utc(latest.get(ch, now - 2)))
                self._set(info, "RecordingStatus", c.get("status", {}).get(ch, "Recording"))
        return 200, op, b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root)

    @staticmethod
    def _set(root: ET.Element, name: str, value: str) -> None:
        for el in root.iter():
            if _local(el.tag) == name:
                el.text = value

    @staticmethod
    def _fault(subcode: str, reason: str) -> bytes:
        text = (FIXTURES / "Fault_NotAuthorized.xml").read_text()
        return text.replace("ter:NotAuthorized", subcode).replace("Sender not Authorized", reason).encode()


def make_handler(rec: OnvifRecorder, log: Path | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if rec.ctl().get("mute"):
                time.sleep(5)  # longer than any test timeout; then drop the connection unanswered
                self.close_connection = True
                return
            status, op, data = rec.answer(self.path, body)
            self.send_response(status)
            self.send_header("Content-Type", "application/soap+xml; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            if log is not None:
                with log.open("a") as fh:
                    fh.write(f"{self.path} {op} {status}\n")

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", required=True)
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--control", type=Path, required=True)
    ap.add_argument("--log", type=Path)
    ap.add_argument("--user", default="admin")
    ap.add_argument("--password", default="Exam-2024")
    a = ap.parse_args()
    server = ThreadingHTTPServer((a.bind, a.port), make_handler(OnvifRecorder(a.control, a.user, a.password), a.log))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
