"""A small HTTP client with Digest auth (RFC 7616 / 2617) for recorder APIs (ISAPI, Dahua CGI).

Why not ``urllib``'s ``HTTPDigestAuthHandler``: it never authenticates pre-emptively (two round
trips for every request) and on a wrong password retries six times per request. Hikvision
recorders lock an account (or the client's IP) after a few failed logins, so a monitor that
hammers them with bad answers would itself take the recorder's API offline. This client answers
one challenge once, reuses the nonce with an increasing ``nc``, retries only on ``stale=true``, and
raises :class:`AuthFailed` after one rejected answer. No proxy is ever used.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import http.client
import os
import re
import socket
from dataclasses import dataclass

_PARAM_RE = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
_ALGORITHMS = {"MD5": hashlib.md5, "MD5-SESS": hashlib.md5, "SHA-256": hashlib.sha256, "SHA-256-SESS": hashlib.sha256}


class ProbeError(Exception):
    """A request failed; ``reason`` is short and stable ("refused", "timeout", "http 404", …)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class AuthFailed(ProbeError):
    """The device answered but rejected our credentials: it is on, we are not let in."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("auth_failed", detail)


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Digest realm="x", nonce="y", qop="auth"`` → ``("digest", {"realm": "x", ...})``."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m[1].lower(): m[2] if m[2] is not None else m[3] for m in _PARAM_RE.finditer(rest)}
    return scheme.lower(), params


@dataclass
class DigestClient:
    """One device's HTTP API; not thread-safe (one probe thread per device uses it)."""

    host: str
    port: int
    username: str
    password: str
    timeout: float = 5.0

    def __post_init__(self) -> None:
        self._challenge: tuple[str, dict[str, str]] | None = None
        self._nc = 0

    def get(self, path: str) -> bytes:
        """GET ``path``; the body of a 2xx answer, else :class:`ProbeError`."""
        return self.request("GET", path)

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str = "") -> bytes:
        """Send with the cached challenge; on 401 answer the new challenge once, then give up.

        A nonce the device expired (with or without ``stale=true``) costs one extra round trip;
        wrong credentials cost exactly one rejected answer per call.
        """
        status, headers, data = self._send(method, path, body, content_type)
        if status == 401:
            self._challenge = None
            challenge = headers.get("www-authenticate", "")
            scheme, params = parse_challenge(challenge)
            if scheme not in ("digest", "basic"):
                raise AuthFailed(f"unsupported challenge {challenge!r}")
            self._challenge, self._nc = (scheme, params), 0
            status, headers, data = self._send(method, path, body, content_type)
            if status == 401:
                self._challenge = None
                raise AuthFailed(f"credentials rejected by realm {params.get('realm', '')!r}")
        if not 200 <= status < 300:
            raise ProbeError(f"http {status}", data[:200].decode(errors="replace"))
        return data

    def alive(self, path: str) -> int:
        """GET without credentials: any HTTP status (401 included) proves the API is up.

        Used while credentials are known to be wrong, so liveness is still watched without
        spending login attempts that would lock the account.
        """
        status, _, _ = self._send("GET", path, None, "", auth=False)
        return status

    def _send(self, method: str, path: str, body: bytes | None, content_type: str,
              auth: bool = True) -> tuple[int, dict[str, str], bytes]:
        """One request on a fresh connection; network failures become :class:`ProbeError`."""
        headers = {"Connection": "close"}
        if content_type:
            headers["Content-Type"] = content_type
        if auth and self._challenge is not None:
            headers["Authorization"] = self._authorization(method, path)
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read(4 << 20)
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        except ConnectionRefusedError as exc:
            raise ProbeError("refused", str(exc)) from exc
        except (socket.timeout, TimeoutError) as exc:
            raise ProbeError("timeout", f"no answer within {self.timeout}s") from exc
        except (http.client.HTTPException, ConnectionError) as exc:
            raise ProbeError("bad_response", f"{type(exc).__name__}: {exc}") from exc
        except OSError as exc:  # EHOSTUNREACH, ENETUNREACH, …
            raise ProbeError(errno.errorcode.get(exc.errno or 0, type(exc).__name__), str(exc)) from exc
        finally:
            conn.close()

    def _authorization(self, method: str, uri: str) -> str:
        """The Authorization header answering the cached challenge."""
        assert self._challenge is not None
        scheme, p = self._challenge
        if scheme == "basic":
            return basic_answer(self.username, self.password)
        self._nc += 1
        return digest_answer(p, method, uri, self.username, self.password, self._nc)


def basic_answer(username: str, password: str) -> str:
    """A Basic Authorization value."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def digest_answer(challenge: dict[str, str], method: str, uri: str, username: str, password: str, nc: int) -> str:
    """The Digest Authorization value for a challenge (RFC 7616: MD5, SHA-256 and their -sess forms,
    qop=auth when offered). Shared by the HTTP client here and the RTSP client."""
    algorithm = challenge.get("algorithm", "MD5")
    h = _ALGORITHMS.get(algorithm.upper(), hashlib.md5)

    def hx(text: str) -> str:
        return h(text.encode()).hexdigest()

    realm, nonce = challenge.get("realm", ""), challenge.get("nonce", "")
    cnonce = os.urandom(8).hex()
    ha1 = hx(f"{username}:{realm}:{password}")
    if algorithm.upper().endswith("-SESS"):
        ha1 = hx(f"{ha1}:{nonce}:{cnonce}")
    ha2 = hx(f"{method}:{uri}")
    qops = [q.strip() for q in challenge.get("qop", "").split(",") if q.strip()]
    fields = [f'username="{username}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"', f"algorithm={algorithm}"]
    if "auth" in qops:
        count = f"{nc:08x}"
        response = hx(f"{ha1}:{nonce}:{count}:{cnonce}:auth:{ha2}")
        fields += ["qop=auth", f"nc={count}", f'cnonce="{cnonce}"']
    else:
        response = hx(f"{ha1}:{nonce}:{ha2}")
    fields.append(f'response="{response}"')
    if "opaque" in challenge:
        fields.append(f'opaque="{challenge["opaque"]}"')
    return "Digest " + ", ".join(fields)
