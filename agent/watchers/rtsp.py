"""A small RTSP client for the camera probe ladder, on plain blocking sockets.

Why hand-written: the agent needs only OPTIONS/DESCRIBE/SETUP/PLAY/TEARDOWN, Digest/Basic auth
and counting interleaved RTP — not decoding — and a media library (GStreamer, ffmpeg) would cost
tens of MB per agent and hide the status codes that are the evidence.

The ladder (issue 5): L0 TCP connect; L1 ``OPTIONS`` answered (a 401 still proves a live daemon);
L2 ``DESCRIBE`` with auth returns an SDP with ``m=video`` (the channel exists); L3 ``SETUP`` (RTP
over the RTSP connection, RFC 2326 §10.12 ``$`` framing) + ``PLAY``, RTP read for a few seconds,
``TEARDOWN``. :func:`probe` climbs to the level asked and says where and why it stopped.
"""

from __future__ import annotations

import errno
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from agent.watchers.digest import basic_answer, digest_answer

OK, DOWN, AUTH_FAILED, STALLED = "ok", "down", "auth_failed", "stalled"
_PARAM_RE = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')


class RtspError(Exception):
    """A step failed; ``step`` names it (``connect``, ``OPTIONS``…) so the evidence says where."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step, self.reason = step, reason


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, list[str]]
    body: bytes = b""

    def header(self, name: str, default: str = "") -> str:
        values = self.headers.get(name.lower())
        return values[0] if values else default


@dataclass
class ProbeResult:
    """Where the ladder got to: ``outcome`` ok|down|auth_failed|stalled, ``level`` the highest
    level passed (-1: not even TCP), ``error`` why it stopped, plus the evidence gathered."""

    outcome: str
    level: int
    error: str = ""
    target_level: int = 2
    statuses: dict[str, int] = field(default_factory=dict)
    rtp_bytes: int = 0
    rtp_packets: int = 0
    origin: str = ""  # the SDP o= line's session id + version (reboot detection)
    at: float = 0.0
    duration_ms: float = 0.0
    clock_offset: float | None = None  # ONVIF device clock − agent clock, seconds

    def evidence(self) -> dict[str, Any]:
        return {"level": f"L{self.level}" if self.level >= 0 else None, "target_level": f"L{self.target_level}",
                "outcome": self.outcome, "error": self.error, "statuses": dict(self.statuses),
                "rtp_bytes": self.rtp_bytes, "rtp_packets": self.rtp_packets, "origin": self.origin,
                "probed_at": round(self.at, 3), "duration_ms": self.duration_ms, "clock_offset": self.clock_offset}


class RtspConnection:
    """One RTSP connection: requests with CSeq, a Session, and auth answered on 401."""

    def __init__(self, host: str, port: int, timeout: float, username: str = "", password: str = "") -> None:
        self.timeout, self.username, self.password = timeout, username, password
        self.cseq, self.session = 0, ""
        self.challenge: dict[str, str] | None = None
        self.nc = 0
        self.statuses: dict[str, int] = {}
        self.rtp_bytes = self.rtp_packets = 0
        self.last_rtp = 0.0  # monotonic time of the last RTP packet
        self._buf = b""
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except socket.timeout:
            raise RtspError("connect", "timeout") from None
        except OSError as exc:
            raise RtspError("connect", _errno_name(exc)) from None

    def close(self) -> None:
        self.sock.close()

    def request(self, method: str, url: str, headers: dict[str, str] | None = None) -> Response:
        """Send; on 401 answer the challenge once. A second 401 is returned as such (bad credentials)."""
        resp = self._exchange(method, url, headers or {})
        if resp.status == 401 and self.username:
            self.challenge = _parse_challenge(resp.headers.get("www-authenticate", []))
            if self.challenge is not None:
                resp = self._exchange(method, url, headers or {})
        self.statuses[method] = resp.status
        if resp.header("session"):
            self.session = resp.header("session").split(";")[0].strip()
        return resp

    def _exchange(self, method: str, url: str, headers: dict[str, str]) -> Response:
        self.cseq += 1
        lines = [f"{method} {url} RTSP/1.0", f"CSeq: {self.cseq}", "User-Agent: VenueGuard-agent"]
        if self.session and method != "DESCRIBE":
            lines.append(f"Session: {self.session}")
        if self.challenge is not None:
            lines.append(f"Authorization: {self._authorization(method, url)}")
        lines += [f"{k}: {v}" for k, v in headers.items()]
        try:
            self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            return self._read_response(time.monotonic() + self.timeout)
        except socket.timeout:
            raise RtspError(method, "timeout") from None
        except OSError as exc:
            raise RtspError(method, _errno_name(exc)) from None

    def _authorization(self, method: str, url: str) -> str:
        """Digest (RFC 7616, shared with the HTTP client) or Basic for the held challenge."""
        ch = self.challenge or {}
        if ch.get("scheme") == "basic":
            return basic_answer(self.username, self.password)
        self.nc += 1
        return digest_answer(ch, method, url, self.username, self.password, self.nc)

    def _read_response(self, deadline: float) -> Response:
        """The next RTSP response; interleaved ``$`` frames met on the way are counted and skipped."""
        while True:
            self._skip_frames(deadline)
            if b"\r\n\r\n" in self._buf:
                break
            self._fill(deadline)
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        m = re.match(r"RTSP/\d\.\d (\d{3}) ?(.*)", lines[0])
        if m is None:
            raise RtspError("response", f"not RTSP: {lines[0][:60]!r}")
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        length = int(headers.get("content-length", ["0"])[0] or 0)
        while len(self._buf) < length:
            self._fill(deadline)
        body, self._buf = self._buf[:length], self._buf[length:]
        return Response(int(m[1]), m[2], headers, body)

    def _skip_frames(self, deadline: float) -> None:
        while self._buf[:1] == b"$":
            while len(self._buf) < 4:
                self._fill(deadline)
            size = int.from_bytes(self._buf[2:4], "big")
            while len(self._buf) < 4 + size:
                self._fill(deadline)
            if self._buf[1] % 2 == 0:  # even channels carry RTP, odd ones RTCP
                self.rtp_bytes += size
                self.rtp_packets += 1
                self.last_rtp = time.monotonic()
            self._buf = self._buf[4 + size:]

    def _fill(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout()
        self.sock.settimeout(min(left, self.timeout))
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionResetError(errno.ECONNRESET, "closed by the camera")
        self._buf += chunk

    def read_rtp(self, seconds: float) -> None:
        """Count interleaved RTP for ``seconds`` (stops early on silence longer than the timeout)."""
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                self._skip_frames(end)
                if self._buf and self._buf[:1] != b"$":
                    self._read_response(end)  # e.g. a keep-alive answer; not media
                else:
                    self._fill(end)
        except socket.timeout:
            pass


def probe(host: str, port: int, path: str, username: str, password: str, target_level: int = 2,
          sample_seconds: float = 3.0, timeout: float = 3.0) -> ProbeResult:
    """Climb the ladder to ``target_level`` (1..3); never raises for a camera's fault."""
    started = time.monotonic()
    result = ProbeResult(DOWN, -1, target_level=target_level, at=time.time())
    url = f"rtsp://{host}:{port}{path if path.startswith('/') else '/' + path}"
    conn: RtspConnection | None = None
    try:
        conn = RtspConnection(host, port, timeout, username, password)
        result.level = 0
        conn.request("OPTIONS", url)
        result.level = 1
        if target_level >= 2:
            _describe_and_play(conn, url, target_level, sample_seconds, result)
        if result.level >= target_level:
            result.outcome = OK
    except RtspError as exc:
        result.error = str(exc)
    finally:
        if conn is not None:
            result.statuses, result.rtp_bytes, result.rtp_packets = conn.statuses, conn.rtp_bytes, conn.rtp_packets
            conn.close()
        result.duration_ms = round((time.monotonic() - started) * 1000, 1)
    return result


def _describe_and_play(conn: RtspConnection, url: str, target_level: int, sample: float, result: ProbeResult) -> None:
    resp = conn.request("DESCRIBE", url, {"Accept": "application/sdp"})
    if resp.status == 401:
        result.outcome = AUTH_FAILED
        raise RtspError("DESCRIBE", "401 Unauthorized after answering the challenge" if conn.username
                        else "401 Unauthorized and no credentials configured")
    if resp.status != 200:
        hint = " (no such stream path)" if resp.status == 404 else ""
        raise RtspError("DESCRIBE", f"{resp.status} {resp.reason}{hint}")
    sdp = resp.body.decode("utf-8", "replace")
    result.origin = _origin(sdp)
    control = _video_control(sdp)
    if control is None:
        raise RtspError("DESCRIBE", "SDP has no video media line")
    result.level = 2
    if target_level < 3:
        return
    base = resp.header("content-base") or resp.header("content-location") or url
    result.outcome = STALLED  # from here on, a failure means RTSP answers but video does not flow
    setup = conn.request("SETUP", _join(base, control), {"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1"})
    if setup.status != 200:
        raise RtspError("SETUP", f"{setup.status} {setup.reason}")
    play = conn.request("PLAY", base, {"Range": "npt=0.000-"})
    if play.status != 200:
        raise RtspError("PLAY", f"{play.status} {play.reason}")
    started = time.monotonic()
    conn.read_rtp(sample)
    silent = time.monotonic() - (conn.last_rtp or started)
    _teardown(conn, base)
    if conn.rtp_packets == 0:
        raise RtspError("PLAY", f"no RTP in {sample:g} s")
    if silent > max(sample / 2, 0.5):
        raise RtspError("PLAY", f"RTP stopped: none in the last {silent:.1f} s of a {sample:g} s sample")
    result.level = 3


def _teardown(conn: RtspConnection, base: str) -> None:
    """Best effort: a camera with a limited number of sessions must get its slot back."""
    try:
        conn.timeout = min(conn.timeout, 1.0)
        conn.request("TEARDOWN", base)
    except RtspError:
        pass


def _parse_challenge(values: list[str]) -> dict[str, str] | None:
    """The strongest offered challenge: Digest (SHA-256 before MD5) over Basic."""
    best: dict[str, str] | None = None
    for value in values:
        scheme, _, rest = value.partition(" ")
        params = {k.lower(): (q if q else u) for k, q, u in _PARAM_RE.findall(rest)}
        params["scheme"] = scheme.lower()
        if params["scheme"] == "digest" and (best is None or best["scheme"] != "digest"
                                             or params.get("algorithm", "").upper().startswith("SHA-256")):
            best = params
        elif params["scheme"] == "basic" and best is None:
            best = params
    return best


def _origin(sdp: str) -> str:
    m = re.search(r"^o=\S+ (\S+) (\S+)", sdp, re.M)
    return f"{m[1]} {m[2]}" if m else ""


def _video_control(sdp: str) -> str | None:
    """The ``a=control`` of the first ``m=video`` section ('' when it has none); None: no video."""
    sections = re.split(r"^(?=m=)", sdp, flags=re.M)
    for sec in sections:
        if sec.startswith("m=video"):
            m = re.search(r"^a=control:(\S+)", sec, re.M)
            return m[1] if m else ""
    return None


def _join(base: str, control: str) -> str:
    if not control or control == "*":
        return base
    if control.startswith("rtsp://"):
        return control
    return base.rstrip("/") + "/" + control


def _errno_name(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)
