"""A stand-in NVR for tests: Hikvision ISAPI or Dahua CGI over HTTP with Digest auth.

Answers are the recorded shapes in ``tests/fixtures/{isapi,dahua}/`` with the live fields (clock,
uptime, disk status, channel state, newest segment) set from a JSON control file that is re-read
on every request, so a test changes the recorder's state by rewriting that file:

    {"boot": <epoch>, "disk": "ok", "free_mb": 1250304, "offline": [2],
     "offline_word": "offline", "newest_end": {"1": <epoch>}, "tz_hours": 8}

``newest_end`` missing for a channel means "recording now" (the segment ends 2 s ago). Each request
is appended to ``--log`` as ``METHOD PATH STATUS``. Run: ``python tests/fake_recorder.py --vendor
hikvision --bind 198.51.100.10 --port 80 --control ctl.json --log req.log``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import re
import secrets
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures"
REALMS = {"hikvision": "DS-7608NI-K2", "dahua": "Login to 5G02FB4PAZ12345"}
_PARAM_RE = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _set(root: ET.Element, name: str, value: str) -> None:
    for el in root.iter():
        if _local(el.tag) == name:
            el.text = value


def _xml(name: str) -> ET.Element:
    return ET.parse(FIXTURES / "isapi" / name).getroot()


def _dump(root: ET.Element) -> bytes:
    ET.register_namespace("", root.tag[1:].split("}")[0] if root.tag.startswith("{") else "")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root)


class Recorder:
    """The state machine behind the answers."""

    def __init__(self, vendor: str, control: Path, user: str, password: str) -> None:
        self.vendor, self.control, self.user, self.password = vendor, control, user, password
        self.nonces: set[str] = set()
        self.finders: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()

    def ctl(self) -> dict[str, Any]:
        try:
            return json.loads(self.control.read_text())
        except (OSError, ValueError):
            return {}

    def authorised(self, method: str, header: str) -> bool:
        """Server side of RFC 7616 Digest (MD5, qop=auth) against nonces this server issued."""
        if not header.startswith("Digest "):
            return False
        p = {m[1]: m[2] if m[2] is not None else m[3] for m in _PARAM_RE.finditer(header[7:])}
        if p.get("nonce") not in self.nonces or p.get("username") != self.user:
            return False
        h = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731
        ha1 = h(f"{self.user}:{REALMS[self.vendor]}:{self.password}")
        ha2 = h(f"{method}:{p.get('uri', '')}")
        if p.get("qop") == "auth":
            want = h(f"{ha1}:{p['nonce']}:{p.get('nc', '')}:{p.get('cnonce', '')}:auth:{ha2}")
        else:
            want = h(f"{ha1}:{p['nonce']}:{ha2}")
        return secrets.compare_digest(want, p.get("response", ""))

    def challenge(self) -> str:
        nonce = secrets.token_hex(16)
        self.nonces.add(nonce)
        return f'Digest qop="auth", realm="{REALMS[self.vendor]}", nonce="{nonce}", stale="FALSE"'

    # -- Hikvision ---------------------------------------------------------------------------

    def isapi(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        c, now = self.ctl(), time.time()
        tz = dt.timezone(dt.timedelta(hours=c.get("tz_hours", 8)))
        if path == "/ISAPI/System/deviceInfo":
            return 200, (FIXTURES / "isapi" / "deviceInfo.xml").read_bytes()
        if path == "/ISAPI/System/status":
            root = _xml("status.xml")
            _set(root, "deviceUpTime", str(int(now - c.get("boot", now - 864000))))
            _set(root, "currentDeviceTime", dt.datetime.fromtimestamp(now, tz).isoformat(timespec="seconds"))
            return 200, _dump(root)
        if path == "/ISAPI/ContentMgmt/Storage":
            root = _xml("storage.xml")
            _set(root, "status", c.get("disk", "ok"))
            _set(root, "freeSpace", str(c.get("free_mb", 1250304)))
            return 200, _dump(root)
        if path == "/ISAPI/ContentMgmt/InputProxy/channels/status":
            root = _xml("channels_status.xml")
            for ch in root:
                off = int(next(e.text for e in ch.iter() if _local(e.tag) == "id") or 0) in c.get("offline", [])
                _set(ch, "online", "false" if off else "true")
                _set(ch, "chanDetectResult", c.get("offline_word", "offline") if off else "connect")
            return 200, _dump(root)
        if path == "/ISAPI/ContentMgmt/search" and method == "POST":
            return 200, self._search(ET.fromstring(body), c, now)
        return 404, b"<ResponseStatus><statusCode>4</statusCode><statusString>Invalid Operation</statusString></ResponseStatus>"

    def _search(self, req: ET.Element, c: dict[str, Any], now: float) -> bytes:
        text = {_local(e.tag): (e.text or "") for e in req.iter()}
        track, start = int(text["trackID"]), dt.datetime.fromisoformat(text["startTime"]).timestamp()
        end = c.get("newest_end", {}).get(str(track // 100), now - 2)
        root = _xml("search_result.xml")
        utc = lambda t: dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
        if end < start or int(text.get("searchResultPostion", "0") or 0) > 0:
            _set(root, "responseStatusStrg", "NO MATCHES")
            _set(root, "numOfMatches", "0")
            for ml in [e for e in root if _local(e.tag) == "matchList"]:
                root.remove(ml)
        else:
            _set(root, "trackID", str(track))
            _set(root, "startTime", utc(end - 3598))
            _set(root, "endTime", utc(end))
        return _dump(root)

    # -- Dahua -------------------------------------------------------------------------------

    def dahua(self, path: str, query: dict[str, str]) -> tuple[int, bytes]:
        c, now = self.ctl(), time.time()
        local = lambda t: (dt.datetime.utcfromtimestamp(t) + dt.timedelta(hours=c.get("tz_hours", 8)))  # noqa: E731
        fixture = lambda n: (FIXTURES / "dahua" / n).read_text()  # noqa: E731
        action = query.get("action", "")
        if path == "/cgi-bin/magicBox.cgi" and action in ("getSystemInfo", "getSoftwareVersion"):
            return 200, fixture(f"{action}.txt").encode()
        if path == "/cgi-bin/global.cgi" and action == "getCurrentTime":
            return 200, f"result={local(now):%Y-%m-%d %H:%M:%S}\r\n".encode()
        if path == "/cgi-bin/storageDevice.cgi" and action == "getDeviceAllInfo":
            word = c.get("disk", "Success")
            text = fixture("getDeviceAllInfo.txt").replace("State=Success", f"State={word}")
            text = text.replace("IsError=false", f"IsError={'false' if word == 'Success' else 'true'}")
            total = 3999956729856
            used = total - c.get("free_mb", 1250304) * 2**20
            return 200, re.sub(r"UsedBytes=[0-9.]+", f"UsedBytes={used}.000000", text).encode()
        if path == "/cgi-bin/LogicDeviceManager.cgi" and action == "getCameraState":
            text = fixture("getCameraState.txt")
            for ch in c.get("offline", []):
                text = text.replace(f"states[{ch - 1}].connectionState=Connected", f"states[{ch - 1}].connectionState=Unconnect")
            return 200, text.encode()
        if path == "/cgi-bin/mediaFileFind.cgi":
            return self._find(action, query, c, now, local, fixture)
        return 400, b"Error\r\nBad Request!\r\n"

    def _find(self, action: str, q: dict[str, str], c: dict[str, Any], now: float, local: Any, fixture: Any) -> tuple[int, bytes]:
        with self.lock:
            if action == "factory.create":
                obj = str(len(self.finders) + 8137)
                self.finders[obj] = {}
                return 200, f"result={obj}\r\n".encode()
            finder = self.finders.get(q.get("object", ""))
            if finder is None:
                return 400, b"Error\r\n"
            if action == "findFile":
                ch = int(q["condition.Channel"])
                end = c.get("newest_end", {}).get(str(ch), now - 2)
                start = dt.datetime.strptime(q["condition.StartTime"], "%Y-%m-%d %H:%M:%S")
                if local(end) < start:
                    return 400, b"Error\r\n"
                finder.update(channel=ch, end=end, sent=False)
                return 200, b"OK\r\n"
            if action == "findNextFile":
                if finder.get("sent", True):
                    return 200, b"found=0\r\n"
                finder["sent"] = True
                end = local(finder["end"])
                text = fixture("findNextFile.txt").replace("items[0].Channel=1", f"items[0].Channel={finder['channel']}")
                text = re.sub(r"EndTime=[^\r\n]+", f"EndTime={end:%Y-%m-%d %H:%M:%S}", text)
                text = re.sub(r"items\[0\]\.StartTime=[^\r\n]+", f"items[0].StartTime={end - dt.timedelta(seconds=3598):%Y-%m-%d %H:%M:%S}", text)
                return 200, text.encode()
            return 200, b"OK\r\n"


def make_handler(rec: Recorder, log: Path | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self, method: str) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not rec.authorised(method, self.headers.get("Authorization", "")):
                status, data, extra = 401, b"Unauthorized", {"WWW-Authenticate": rec.challenge()}
            else:
                url = urllib.parse.urlsplit(self.path)
                if rec.vendor == "hikvision":
                    status, data = rec.isapi(method, url.path, body)
                else:
                    status, data = rec.dahua(url.path, dict(urllib.parse.parse_qsl(url.query)))
                extra = {}
            self.send_response(status)
            for k, v in extra.items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/xml" if rec.vendor == "hikvision" else "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            if log is not None:
                with log.open("a") as fh:
                    fh.write(f"{method} {self.path} {status}\n")

        def do_GET(self) -> None:  # noqa: N802
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vendor", choices=sorted(REALMS), required=True)
    ap.add_argument("--bind", required=True)
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--control", type=Path, required=True)
    ap.add_argument("--log", type=Path)
    ap.add_argument("--user", default="admin")
    ap.add_argument("--password", default="Exam-2024")
    a = ap.parse_args()
    server = ThreadingHTTPServer((a.bind, a.port), make_handler(Recorder(a.vendor, a.control, a.user, a.password), a.log))
    server.serve_forever()


if __name__ == "__main__":
    main()
