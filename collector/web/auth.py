"""Who may see and do what on the pages: sessions, login/logout, roles, venue scoping, CSRF, audit.

``install(app, store, cfg)`` puts a middleware in front of every route that resolves the session
cookie into ``request.state.user`` (a :class:`User` or None) and ``request.state.csrf_token``, and
denies by default: any path but ``/login``, ``/static/…`` and ``/healthz`` needs a session (pages
answer 303 to ``/login?next=…``, ``/api/…`` answers 401). Routes then narrow access with the
dependencies below:

- ``Depends(current_user)`` — any logged-in user;
- ``Depends(require("admin", "viewer"))`` — these roles, else 403;
- ``check_venue(user, venue_id)`` / ``venue_filter(user)`` — a venue operator sees only its venue
  and gets 404 for another (which must not even be confirmed to exist);
- ``dependencies=[Depends(csrf_protect)]`` on every POST/PUT/PATCH/DELETE — the form field
  ``csrf_token`` or header ``X-CSRF-Token`` must equal the session's token, else 403 (audited);
- ``audit(request, action, target, detail, ok)`` — one audit row. A state-changing request whose
  handler wrote none gets one automatically (method, path, status), so none goes unrecorded.

Live pages that poll in the background should send ``X-VG-Poll: 1``; server-sent event streams
(``Accept: text/event-stream``) are recognised by themselves. Such requests do not count as use,
so a dashboard left open still ends its session after ``[web] idle_minutes``.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.middleware.base import BaseHTTPMiddleware

from collector.config import WebSection
from collector.store import Store
from collector.web import accounts
from collector.web.accounts import ROLES, User
from collector.web.strings import t

__all__ = ["ROLES", "User", "audit", "check_venue", "csrf_protect", "csrf_token", "current_user", "install",
           "require", "template_globals", "venue_filter"]

log = logging.getLogger("venueguard.collector.web")
HERE = Path(__file__).parent
SESSION_COOKIE = "vg_session"
CSRF_COOKIE = "vg_csrf"  # before login: double-submit token for the login form
PUBLIC_PATHS = ("/login", "/healthz")
PUBLIC_PREFIXES = ("/static/",)
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
TOUCH_SECONDS = 30.0  # write last_seen at most this often per session
#: No framing (clickjacking of the admin forms), no MIME sniffing, no URLs leaked in Referer.
SECURITY_HEADERS = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}
_CN = dt.timezone(dt.timedelta(hours=8), "CST")


@dataclass
class AuthState:
    """What the middleware and routes share; ``clock`` is replaceable so tests can move time."""

    store: Store
    cfg: WebSection
    templates: Jinja2Templates
    clock: Callable[[], float] = time.time

    @property
    def throttle(self) -> accounts.Throttle:
        c = self.cfg
        return accounts.Throttle(c.login_max_failures, c.login_max_failures_ip, c.login_window_minutes * 60,
                                 c.lockout_minutes * 60)


class LoginRequired(Exception):
    """No session: pages go to the login form, the API answers 401."""


class Forbidden(HTTPException):
    """Logged in, but this role may not (403)."""

    def __init__(self, message_key: str = "auth_forbidden") -> None:
        super().__init__(status_code=403, detail="forbidden")
        self.message_key = message_key


class Hidden(HTTPException):
    """Another venue's data asked for by a venue operator: answered like a missing page (404)."""

    def __init__(self) -> None:
        super().__init__(status_code=404, detail="not found")


# -- the contract ------------------------------------------------------------------------------

def install(app: FastAPI, store: Store, cfg: WebSection, *, clock: Callable[[], float] = time.time) -> None:
    """Sessions, default-deny, /login, /logout, /static and the error pages, on ``app``.

    If the app keeps its Jinja2Templates in ``app.state.templates`` when this is called, its
    environment gets ``csrf_token`` (and ``t``) as globals too; else use :func:`template_globals`.
    """
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(template_globals())
    state = AuthState(store, cfg, templates, clock)
    app.state.auth = state
    other = getattr(app.state, "templates", None)
    if isinstance(other, Jinja2Templates):
        other.env.globals.update(template_globals())
    app.add_middleware(BaseHTTPMiddleware, dispatch=_middleware(state))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.add_exception_handler(LoginRequired, _login_required)  # type: ignore[arg-type]
    app.add_exception_handler(Forbidden, _refused)  # type: ignore[arg-type]
    app.add_exception_handler(Hidden, _refused)  # type: ignore[arg-type]
    app.include_router(_router())


def current_user(request: Request) -> User:
    """The logged-in user (dependency); none: LoginRequired (303 to /login, or 401 under /api/)."""
    user = getattr(request.state, "user", None)
    if user is None:
        raise LoginRequired()
    return user


def require(*roles: str) -> Callable[..., User]:
    """A dependency admitting only ``roles`` (403 for the others, login for nobody)."""
    unknown = set(roles) - set(ROLES)
    if unknown or not roles:
        raise ValueError(f"unknown roles {sorted(unknown)}; expected some of {ROLES}")

    def dependency(user: User = Depends(current_user)) -> User:
        if user.role not in roles:
            raise Forbidden()
        return user

    dependency.__name__ = f"require_{'_'.join(roles)}"
    return dependency


def check_venue(user: User, venue_id: str) -> None:
    """A venue operator asking for another venue gets 404, as if it did not exist."""
    if user.role == "venue" and user.venue_id != venue_id:
        raise Hidden()


def venue_filter(user: User) -> str | None:
    """The venue a user's lists are limited to: None for the authority, else the operator's."""
    return user.venue_id if user.role == "venue" else None


async def csrf_protect(request: Request) -> None:
    """For state-changing requests: the form's ``csrf_token`` or ``X-CSRF-Token`` must match, else 403."""
    if request.method not in UNSAFE:
        return
    sent = request.headers.get("x-csrf-token")
    if sent is None and _is_form(request):
        value = (await request.form()).get("csrf_token")
        sent = value if isinstance(value, str) else None
    expected = csrf_token(request)
    if not sent or not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        await run_in_threadpool(audit, request, "csrf.rejected", request.url.path,
                                "missing" if not sent else "mismatch", False)
        raise Forbidden("auth_csrf_failed")


def csrf_token(request: Request) -> str:
    """The token forms must send back: the session's, or before login the pre-session cookie's."""
    return str(getattr(request.state, "csrf_token", "") or "")


def audit(request: Request, action: str, target: str = "", detail: str = "", ok: bool = True) -> None:
    """One audit row: who (from the session), from where, what, on what, and whether it worked."""
    state: AuthState = request.app.state.auth
    user: User | None = getattr(request.state, "user", None)
    request.state.audited = True
    accounts.write_audit(state.store, at=state.clock(), username=user.username if user else "",
                         role=user.role if user else "", ip=client_ip(request), action=action, target=target,
                         detail=detail, ok=ok)


def template_globals() -> dict[str, Any]:
    """Names every page template may use: ``t``, ``csrf_token(request)``, ``role_name(role)``."""
    return {"t": t, "csrf_token": csrf_token, "role_name": role_name, "ROLES": ROLES}


def role_name(role: str) -> str:
    """考试机构管理员 / 考试机构查看 / 考点操作员."""
    return t(f"auth_role_{role}", default=role)


def client_ip(request: Request) -> str:
    """The client's address as the server sees it (uvicorn's proxy_headers decide about proxies)."""
    return request.client.host if request.client else ""


# -- middleware --------------------------------------------------------------------------------

Dispatch = Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]


def _middleware(state: AuthState) -> Dispatch:
    """Resolve the session, deny anonymous requests to non-public paths, audit unaudited writes."""

    async def dispatch(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        request.state.user, request.state.audited = None, False
        session, why, whose, new_csrf = await run_in_threadpool(_resolve, state, request)
        request.state.user = session.user if session else None
        request.state.csrf_token = session.csrf_token if session else (request.cookies.get(CSRF_COOKIE) or new_csrf)
        request.state.session_hash = session.token_hash if session else None
        if why in ("idle", "expired"):
            await run_in_threadpool(audit, request, f"session.{why}", whose, "", True)
        if session is None and not _public(request.url.path):
            response = _deny(request)
            if request.method in UNSAFE:
                await run_in_threadpool(audit, request, "auth.denied", request.url.path[:300],
                                        f"{request.method} without a session", False)
        else:
            response = await call_next(request)
        if request.method in UNSAFE and not request.state.audited:
            await run_in_threadpool(audit, request, f"{request.method} {request.url.path}"[:64], request.url.path,
                                    f"status {response.status_code}", response.status_code < 400)
        if session is None and not request.cookies.get(CSRF_COOKIE):
            _set_cookie(response, request, state, CSRF_COOKIE, request.state.csrf_token)
        if why in ("idle", "expired", "disabled", "none") and request.cookies.get(SESSION_COOKIE):
            response.delete_cookie(SESSION_COOKIE, path="/")
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    return dispatch


def _resolve(state: AuthState, request: Request) -> tuple[accounts.Session | None, str, str, str]:
    """The request's session (refreshing its idle clock), why there is none, whose it was, a fresh CSRF token."""
    token = request.cookies.get(SESSION_COOKIE)
    session, why, whose = None, "absent", ""
    if token:
        now = state.clock()
        session, why, whose = accounts.load_session(state.store, token, now, state.cfg.idle_minutes * 60,
                                                    state.cfg.session_hours * 3600)
        background = _background(request)
        if session and not background and now - session.last_seen >= TOUCH_SECONDS:
            accounts.touch_session(state.store, session.token_hash, now)
    return session, why, whose, secrets.token_urlsafe(32)


def _background(request: Request) -> bool:
    """A page refreshing itself, not a person: a marked poll, or an event stream (EventSource reconnects)."""
    return request.headers.get("x-vg-poll") == "1" or "text/event-stream" in request.headers.get("accept", "")


def _public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _deny(request: Request) -> Response:
    """No session: 401 JSON for the API, else to the login form and back afterwards."""
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": "login required"}, status_code=401, headers={"WWW-Authenticate": "Session"})
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


def _set_cookie(response: Response, request: Request, state: AuthState, name: str, value: str) -> None:
    """HttpOnly, SameSite=Strict, Secure on https or when configured; a browser-session cookie."""
    secure = state.cfg.secure_cookies or request.url.scheme == "https"
    response.set_cookie(name, value, path="/", httponly=True, samesite="strict", secure=secure)


def _is_form(request: Request) -> bool:
    kind = request.headers.get("content-type", "")
    return kind.startswith(("application/x-www-form-urlencoded", "multipart/form-data"))


# -- error pages -------------------------------------------------------------------------------

async def _login_required(request: Request, _exc: LoginRequired) -> Response:
    return _deny(request)


async def _refused(request: Request, exc: HTTPException) -> Response:
    """403/404 as JSON under /api/, else as a Chinese page in the layout."""
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
    key = getattr(exc, "message_key", "auth_forbidden") if exc.status_code == 403 else "auth_not_found"
    state: AuthState = request.app.state.auth
    return state.templates.TemplateResponse(request, "auth_error.html", {"message": t(key)},
                                            status_code=exc.status_code)


# -- login and logout --------------------------------------------------------------------------

def _router() -> APIRouter:
    router = APIRouter()
    router.add_api_route("/login", _login_form, methods=["GET"], response_class=HTMLResponse, include_in_schema=False)
    router.add_api_route("/login", _login, methods=["POST"], response_class=HTMLResponse, include_in_schema=False,
                         dependencies=[Depends(csrf_protect)])
    router.add_api_route("/logout", _logout, methods=["POST"], include_in_schema=False,
                         dependencies=[Depends(csrf_protect)])
    return router


def _login_form(request: Request, next: str = "/") -> Response:  # noqa: A002 - the query parameter's name
    """The login form; someone already logged in goes straight on."""
    if getattr(request.state, "user", None) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _render_login(request, next, "", 200)


def _login(request: Request, username: str = Form(""), password: str = Form(""), next: str = Form("/")) -> Response:  # noqa: A002
    """Check throttling, then the password; a new session on success, the form again otherwise."""
    state: AuthState = request.app.state.auth
    now, ip = state.clock(), client_ip(request)
    until = accounts.locked_until(state.store, username, ip, now)
    if until is not None:
        audit(request, "login.locked", username, f"until {until:.0f}", False)
        return _render_login(request, next, t("auth_locked", until=_local(until)), 429, username)
    user, why = accounts.authenticate(state.store, username, password)
    if user is None:
        until = accounts.record_failure(state.store, username, ip, now, state.throttle)
        audit(request, "login.failed", username, why, False)
        message = t("auth_locked", until=_local(until)) if until else t("auth_bad_login")
        return _render_login(request, next, message, 429 if until else 401, username)
    accounts.clear_failures(state.store, username)
    if getattr(request.state, "session_hash", None):  # logging in again in the same browser: one session
        accounts.end_session(state.store, request.state.session_hash)
    accounts.prune_sessions(state.store, now, state.cfg.idle_minutes * 60, state.cfg.session_hours * 3600)
    token, _ = accounts.create_session(state.store, user, ip, request.headers.get("user-agent", ""), now)
    request.state.user = user
    audit(request, "login", user.username, user.role)
    response = RedirectResponse(safe_next(next), status_code=303)
    _set_cookie(response, request, state, SESSION_COOKIE, token)
    return response


def _logout(request: Request) -> Response:
    """End the session here and in the browser."""
    state: AuthState = request.app.state.auth
    hashed = getattr(request.state, "session_hash", None)
    if hashed:
        accounts.end_session(state.store, hashed)
        audit(request, "logout", request.state.user.username)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _render_login(request: Request, next_url: str, error: str, status: int, username: str = "") -> Response:
    state: AuthState = request.app.state.auth
    return state.templates.TemplateResponse(request, "login.html", {
        "next": safe_next(next_url), "error": error, "username": username}, status_code=status)


def safe_next(target: str | None) -> str:
    """Only a path on this site: ``//evil``, ``/\\evil``, schemes and hosts become ``/``."""
    target = (target or "").strip()
    parts = urlsplit(target)
    if not target.startswith("/") or target.startswith(("//", "/\\")) or parts.scheme or parts.netloc \
            or any(c in target for c in "\r\n\\"):
        return "/"
    return target


def _local(ts: float) -> str:
    """A time as staff in Guangdong read it."""
    return dt.datetime.fromtimestamp(ts, _CN).strftime("%Y-%m-%d %H:%M")
