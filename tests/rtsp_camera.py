"""A camera stand-in for tests and the bench: GStreamer's RTSP server with Digest auth, plus an
optional HTTP side: ONVIF GetSystemDateAndTime (POST) and Hikvision's PTZ status (GET, Digest).

Run with the SYSTEM Python (``/usr/bin/python3``; it has ``python3-gi`` and GStreamer's RTSP
server, the project's venv has not), inside the camera's network namespace::

    /usr/bin/python3 tests/rtsp_camera.py --port 554 --user admin --password pw [--onvif-port 80]

Mounts ``/Streaming/Channels/101`` and ``/102`` (Hikvision's main and sub stream paths) with the
launch line DESIGN.md §8 checked. Prints ``ready`` on stdout once listening.

Stalled pipeline: ``--stall``, or the word ``stall`` written to the ``--control`` file (checked
every 0.1 s; anything else switches back), puts the camera into *stall* mode. In stall mode a ``valve`` between the source and the encoder closes 0.3 s after each media
starts playing (and at once in medias already playing): the RTSP daemon keeps answering OPTIONS,
DESCRIBE, SETUP, PLAY and TEARDOWN, but RTP stops — what a camera with a hung encoder looks like.
Closing the valve before PLAY is answered would not do: GStreamer's server then never answers
PLAY and its main loop hangs for every client, which is a different fault (a frozen daemon).

PTZ: with ``--ptz-file``, ``GET /ISAPI/PTZCtrl/channels/1/status`` (Digest, the RTSP credentials)
answers a ``PTZStatus`` in the ver20 namespace whose elevation, azimuth and absoluteZoom are the
three numbers in that file, read on every request (write the file to turn the camera); no file, or
any other path, is a 404, as on a fixed camera. The shape is the one Hikvision's ISAPI PTZ service
documents (ISAPI Developer Guide, PTZCtrl ``/ISAPI/PTZCtrl/channels/<ID>/status``).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import re
import http.server
import signal
import sys
import threading
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

LAUNCH = ("( videotestsrc is-live=true ! video/x-raw,format=I420,width=320,height=240,framerate=5/1 "
          "! valve name=gate drop=false ! jpegenc ! rtpjpegpay name=pay0 pt=26 )")
ONVIF_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "onvif" / "GetSystemDateAndTime.xml"


class Camera:
    """The RTSP server and the stall switch shared by every media it makes."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.stalled = args.stall
        self.medias: list[GstRtspServer.RTSPMedia] = []
        self.server = GstRtspServer.RTSPServer()
        self.server.set_address("0.0.0.0")
        self.server.set_service(str(args.port))
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "viewer")
        auth.add_digest(args.user, args.password, token)
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        self.server.set_auth(auth)
        mounts = self.server.get_mount_points()
        for path in ("/Streaming/Channels/101", "/Streaming/Channels/102"):
            factory = GstRtspServer.RTSPMediaFactory()
            factory.set_launch(LAUNCH)
            perms = GstRtspServer.RTSPPermissions()
            perms.add_permission_for_role("viewer", "media.factory.access", True)
            perms.add_permission_for_role("viewer", "media.factory.construct", True)
            factory.set_permissions(perms)
            factory.connect("media-configure", self._configure)
            mounts.add_factory(path, factory)

    def _configure(self, _factory: object, media: GstRtspServer.RTSPMedia) -> None:
        media.connect("new-state", self._state)
        self.medias.append(media)

    def _state(self, media: GstRtspServer.RTSPMedia, state: int) -> None:
        if state == Gst.State.PLAYING and self.stalled:
            GLib.timeout_add(300, self._close, media)

    def _close(self, media: GstRtspServer.RTSPMedia) -> bool:
        element = media.get_element()
        gate = element.get_by_name("gate") if element is not None else None
        if gate is not None and self.stalled:
            gate.set_property("drop", True)
        return GLib.SOURCE_REMOVE

    def poll_control(self, path: Path) -> bool:
        """Follow the control file (a GLib timeout: POSIX signals would need the main loop's help)."""
        try:
            wanted = path.read_text().strip() == "stall"
        except OSError:
            wanted = self.stalled
        if wanted != self.stalled:
            self.set_stalled(wanted)
        return GLib.SOURCE_CONTINUE

    def set_stalled(self, stalled: bool) -> bool:
        self.stalled = stalled
        for media in self.medias:
            element = media.get_element()
            gate = element.get_by_name("gate") if element is not None else None
            if gate is not None:
                gate.set_property("drop", stalled)
        return GLib.SOURCE_CONTINUE


PTZ_PATH = "/ISAPI/PTZCtrl/channels/1/status"
PTZ_BODY = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<PTZStatus version="2.0" xmlns="http://www.hikvision.com/ver20/XMLSchema">'
            '<AbsoluteHigh><elevation>{}</elevation><azimuth>{}</azimuth><absoluteZoom>{}</absoluteZoom></AbsoluteHigh>'
            '</PTZStatus>\n')
REALM = "IP Camera(C1234)"


def digest_ok(header: str, method: str, user: str, password: str, nonces: set[str]) -> bool:
    """Whether an Authorization header answers one of our nonces correctly (MD5, qop=auth or none)."""
    if not header.lower().startswith("digest "):
        return False
    p = {m[1].lower(): m[2] if m[2] is not None else m[3]
         for m in re.finditer(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))', header[7:])}
    if p.get("username") != user or p.get("nonce") not in nonces:
        return False
    md5 = lambda t: hashlib.md5(t.encode()).hexdigest()  # noqa: E731
    ha1, ha2 = md5(f"{user}:{REALM}:{password}"), md5(f"{method}:{p.get('uri', '')}")
    if p.get("qop") == "auth":
        want = md5(f"{ha1}:{p['nonce']}:{p.get('nc', '')}:{p.get('cnonce', '')}:auth:{ha2}")
    else:
        want = md5(f"{ha1}:{p['nonce']}:{ha2}")
    return p.get("response") == want


def serve_http(port: int, skew: float, ptz_file: str = "", user: str = "", password: str = "") -> None:
    """ONVIF: answer every POST with the recorded GetSystemDateAndTime response, at now + ``skew``
    (UTC). PTZ: answer GETs of :data:`PTZ_PATH` from ``ptz_file`` behind Digest auth."""
    template = ONVIF_FIXTURE.read_text()
    nonces: set[str] = set()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path != PTZ_PATH or not ptz_file or not os.path.exists(ptz_file):
                return self._answer(404, b"<ResponseStatus><statusCode>4</statusCode></ResponseStatus>")
            if not digest_ok(self.headers.get("Authorization", ""), "GET", user, password, nonces):
                nonce = os.urandom(16).hex()
                nonces.add(nonce)
                return self._answer(401, b"", {"WWW-Authenticate": f'Digest qop="auth", realm="{REALM}", '
                                                                    f'nonce="{nonce}", stale="FALSE"'})
            elevation, azimuth, zoom = Path(ptz_file).read_text().split()[:3]
            self._answer(200, PTZ_BODY.format(elevation, azimuth, zoom).encode())

        def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for k, v in {"Content-Type": "application/xml", **(headers or {})}.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=skew)
            body = template.format(year=t.year, month=t.month, day=t.day, hour=t.hour, minute=t.minute,
                                   second=t.second).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/soap+xml; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=554)
    p.add_argument("--user", default="admin")
    p.add_argument("--password", default="admin123")
    p.add_argument("--stall", action="store_true", help="start in stall mode")
    p.add_argument("--control", default="", help="file whose content 'stall' switches stall mode on")
    p.add_argument("--onvif-port", type=int, default=0, help="also serve ONVIF GetSystemDateAndTime here")
    p.add_argument("--clock-skew", type=float, default=0.0, help="seconds the ONVIF clock is ahead")
    p.add_argument("--ptz-file", default="", help="'elevation azimuth zoom' served as the PTZ status (HTTP port)")
    args = p.parse_args()
    Gst.init(None)
    cam = Camera(args)
    loop = GLib.MainLoop()
    if args.control:
        GLib.timeout_add(100, cam.poll_control, Path(args.control))
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, lambda: loop.quit() or GLib.SOURCE_REMOVE)
    if cam.server.attach(None) == 0:
        sys.exit(f"cannot listen on port {args.port}")
    if args.onvif_port:
        serve_http(args.onvif_port, args.clock_skew, args.ptz_file, args.user, args.password)
    print("ready", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
