"""Accounts in the store: users and their argon2 hashes, server-side sessions, login throttling,
and the audit trail. No FastAPI here: the CLI (`venueguard-collector user …`), the login routes
and the administration pages all go through these functions.

Messages meant for people are catalogue keys (``auth_*`` in ``collector/web/strings``) carried by
:class:`AccountError`, so the CLI and the pages show the same Chinese sentence.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from collector.store import Store, schema

ROLES = ("admin", "viewer", "venue")
MIN_PASSWORD = 10
MAX_PASSWORD = 256  # argon2 takes any length; a megabyte "password" would only cost CPU
_USERNAME = re.compile(r"^[\w.@-]{2,64}$")
_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory profile (t=3, m=64 MiB, p=4)


@dataclass(frozen=True)
class User:
    """Who is logged in: what authorisation decisions need, nothing secret."""

    id: int
    username: str
    role: str
    venue_id: str | None


class AccountError(ValueError):
    """A refused account change; ``key`` and ``params`` name the Chinese message."""

    def __init__(self, key: str, **params: Any) -> None:
        super().__init__(key)
        self.key = key
        self.params = params


@dataclass(frozen=True)
class Throttle:
    """Login limits: failures per name and per address within a window lock them for a while."""

    max_user: int = 5
    max_ip: int = 20
    window: float = 15 * 60.0
    lockout: float = 15 * 60.0


# -- passwords ---------------------------------------------------------------------------------

def hash_password(password: str) -> str:
    """An argon2id hash (``$argon2id$…``) with its own salt and parameters."""
    check_password(password)
    return _hasher.hash(password)


def verify_password(hashed: str, password: str) -> bool:
    """True when ``password`` matches; False for a wrong one or a damaged hash (never raises)."""
    try:
        return _hasher.verify(hashed, password[:MAX_PASSWORD])
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def check_password(password: str) -> None:
    """Refuse passwords too short to resist guessing, or absurdly long."""
    if len(password) < MIN_PASSWORD:
        raise AccountError("auth_err_password_short", n=MIN_PASSWORD)
    if len(password) > MAX_PASSWORD:
        raise AccountError("auth_err_password_long", n=MAX_PASSWORD)


@lru_cache(maxsize=1)
def _decoy_hash() -> str:
    """A hash to verify against for unknown users, so a wrong name costs as long as a wrong password."""
    return _hasher.hash(secrets.token_urlsafe(16))


# -- users -------------------------------------------------------------------------------------

def add_user(store: Store, username: str, password: str, role: str, venue_id: str | None, now: float) -> User:
    """Create a user; venue operators need an existing venue, the authority's roles none."""
    username = username.strip()
    if not _USERNAME.match(username):
        raise AccountError("auth_err_username", name=username)
    venue_id = _check_role(store, role, (venue_id or "").strip() or None)
    hashed = hash_password(password)
    u = schema.users
    with store.engine.begin() as conn:
        if conn.execute(sa.select(u.c.id).where(u.c.username == username)).first() is not None:
            raise AccountError("auth_err_user_exists", name=username)
        res = conn.execute(u.insert().values(username=username, password_hash=hashed, role=role,
                                             venue_id=venue_id, created_at=now, disabled=False))
        return User(int(res.inserted_primary_key[0]), username, role, venue_id)


def _check_role(store: Store, role: str, venue_id: str | None) -> str | None:
    """The venue a role needs: exactly one known venue for operators, none for the authority."""
    if role not in ROLES:
        raise AccountError("auth_err_role", role=role)
    if role != "venue":
        if venue_id:
            raise AccountError("auth_err_venue_for_authority")
        return None
    if not venue_id:
        raise AccountError("auth_err_venue_required")
    if venue_id not in {v["id"] for v in store.venues()}:
        raise AccountError("auth_err_unknown_venue", venue=venue_id)
    return venue_id


def users(store: Store) -> list[dict[str, Any]]:
    """Every user without the hash, by name."""
    u = schema.users.c
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(u.id, u.username, u.role, u.venue_id, u.created_at, u.disabled)
                            .order_by(u.username)).mappings().all()
    return [dict(r) for r in rows]


def find_user(store: Store, username: str) -> dict[str, Any] | None:
    """One user's row (with its hash), or None."""
    u = schema.users
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(u).where(u.c.username == username.strip())).mappings().first()
    return dict(row) if row else None


def set_disabled(store: Store, username: str, disabled: bool) -> None:
    """Disable (ending every session at once) or re-enable a user; the last enabled admin stays."""
    row = _existing(store, username)
    if disabled and row["role"] == "admin" and not row["disabled"] and _enabled_admins(store) <= 1:
        raise AccountError("auth_err_last_admin")
    u = schema.users
    with store.engine.begin() as conn:
        conn.execute(u.update().where(u.c.id == row["id"]).values(disabled=disabled))
        if disabled:
            conn.execute(schema.web_sessions.delete().where(schema.web_sessions.c.user_id == row["id"]))


def set_password(store: Store, username: str, password: str) -> None:
    """A new password; the user's sessions end (a reset usually means the old one leaked)."""
    row = _existing(store, username)
    hashed = hash_password(password)
    with store.engine.begin() as conn:
        conn.execute(schema.users.update().where(schema.users.c.id == row["id"]).values(password_hash=hashed))
        conn.execute(schema.web_sessions.delete().where(schema.web_sessions.c.user_id == row["id"]))


def _existing(store: Store, username: str) -> dict[str, Any]:
    row = find_user(store, username)
    if row is None:
        raise AccountError("auth_err_no_user", name=username)
    return row


def _enabled_admins(store: Store) -> int:
    u = schema.users.c
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).where(u.role == "admin", u.disabled.is_(False))).scalar_one())


def authenticate(store: Store, username: str, password: str) -> tuple[User | None, str]:
    """The user when name and password match an enabled account, else None and why (for the audit)."""
    row = find_user(store, username)
    if row is None:
        verify_password(_decoy_hash(), password)
        return None, "unknown_user"
    if not verify_password(row["password_hash"], password):
        return None, "bad_password"
    if row["disabled"]:
        return None, "disabled"
    if _hasher.check_needs_rehash(row["password_hash"]):
        with store.engine.begin() as conn:  # parameters were raised since: upgrade the stored hash now
            conn.execute(schema.users.update().where(schema.users.c.id == row["id"])
                         .values(password_hash=_hasher.hash(password)))
    return User(int(row["id"]), row["username"], row["role"], row["venue_id"]), "ok"


# -- throttling --------------------------------------------------------------------------------

def lock_keys(username: str, ip: str) -> tuple[str, str]:
    """The two things a failure counts against."""
    return f"user:{username.strip().lower()}", f"ip:{ip}"


def locked_until(store: Store, username: str, ip: str, now: float) -> float | None:
    """When the later of the name's and the address's locks ends, or None when neither is locked."""
    lk = schema.login_locks.c
    with store.engine.connect() as conn:
        until = conn.execute(sa.select(sa.func.max(lk.until)).where(lk.key.in_(lock_keys(username, ip)),
                                                                   lk.until > now)).scalar()
    return None if until is None else float(until)


def record_failure(store: Store, username: str, ip: str, now: float, limits: Throttle) -> float | None:
    """Count a failed login; lock the name or address when it reached its limit. Returns the lock's end."""
    name = username.strip().lower()[:64]
    f, lk = schema.login_failures, schema.login_locks
    with store.engine.begin() as conn:
        _prune(conn, now, limits.window)
        conn.execute(f.insert().values(at=now, username=name, ip=ip))
        until = None
        for key, column, value, limit in ((f"user:{name}", f.c.username, name, limits.max_user),
                                          (f"ip:{ip}", f.c.ip, ip, limits.max_ip)):
            previous = conn.execute(sa.select(lk.c.until).where(lk.c.key == key)).scalar()
            since = max(now - limits.window, float(previous or 0))  # failures before an expired lock are spent
            count = conn.execute(sa.select(sa.func.count()).where(column == value, f.c.at > since)).scalar_one()
            if count >= limit:
                until = now + limits.lockout
                conn.execute(lk.delete().where(lk.c.key == key))
                conn.execute(lk.insert().values(key=key, until=until))
        return until


def clear_failures(store: Store, username: str) -> None:
    """A successful login forgets the name's failures (the address's stay: it may be guessing others)."""
    f = schema.login_failures
    with store.engine.begin() as conn:
        conn.execute(f.delete().where(f.c.username == username.strip().lower()))


def _prune(conn: sa.Connection, now: float, window: float) -> None:
    """Drop failures too old to count and locks that ended, so the tables stay small."""
    conn.execute(schema.login_failures.delete().where(schema.login_failures.c.at < now - window))
    conn.execute(schema.login_locks.delete().where(schema.login_locks.c.until < now - window))


# -- sessions ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Session:
    """A live session: whose, its CSRF token, and when it was created and last used."""

    token_hash: str
    user: User
    csrf_token: str
    created_at: float
    last_seen: float


def token_hash(token: str) -> str:
    """What the table keeps of a session token."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_session(store: Store, user: User, ip: str, user_agent: str, now: float) -> tuple[str, Session]:
    """A fresh session (never one the browser brought: no fixation); the token goes in the cookie."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    row = dict(token_hash=token_hash(token), user_id=user.id, created_at=now, last_seen=now, csrf_token=csrf,
               ip=ip[:45], user_agent=user_agent[:300])
    with store.engine.begin() as conn:
        conn.execute(schema.web_sessions.insert().values(**row))
    return token, Session(row["token_hash"], user, csrf, now, now)


def load_session(store: Store, token: str, now: float, idle: float, lifetime: float) -> tuple[Session | None, str, str]:
    """The session of a cookie, or None and why ("none", "idle", "expired", "disabled"); and whose it was."""
    s, u = schema.web_sessions, schema.users
    q = (sa.select(s.c.token_hash, s.c.csrf_token, s.c.created_at, s.c.last_seen, u.c.id, u.c.username, u.c.role,
                   u.c.venue_id, u.c.disabled).join(u, u.c.id == s.c.user_id).where(s.c.token_hash == token_hash(token)))
    with store.engine.connect() as conn:
        row = conn.execute(q).first()
    if row is None:
        return None, "none", ""
    why = "disabled" if row.disabled else "idle" if now - row.last_seen > idle else \
        "expired" if now - row.created_at > lifetime else ""
    if why:
        end_session(store, row.token_hash)
        return None, why, row.username
    user = User(int(row.id), row.username, row.role, row.venue_id)
    return Session(row.token_hash, user, row.csrf_token, float(row.created_at), float(row.last_seen)), "ok", row.username


def touch_session(store: Store, hashed: str, now: float) -> None:
    """Note use of a session (resets its idle clock)."""
    s = schema.web_sessions
    with store.engine.begin() as conn:
        conn.execute(s.update().where(s.c.token_hash == hashed).values(last_seen=now))


def end_session(store: Store, hashed: str) -> None:
    """Forget a session (logout, timeout)."""
    with store.engine.begin() as conn:
        conn.execute(schema.web_sessions.delete().where(schema.web_sessions.c.token_hash == hashed))


def prune_sessions(store: Store, now: float, idle: float, lifetime: float) -> int:
    """Forget sessions past their idle or absolute limit whose browsers never came back; how many."""
    c = schema.web_sessions.c
    with store.engine.begin() as conn:
        res = conn.execute(schema.web_sessions.delete().where(sa.or_(c.last_seen < now - idle,
                                                                     c.created_at < now - lifetime)))
        return int(res.rowcount or 0)


def sessions_of(store: Store, user_id: int) -> int:
    """How many sessions a user has open."""
    s = schema.web_sessions.c
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).where(s.user_id == user_id)).scalar_one())


# -- audit trail -------------------------------------------------------------------------------

def write_audit(store: Store, *, at: float, username: str, role: str, ip: str, action: str, target: str = "",
                detail: str = "", ok: bool = True) -> None:
    """Append one audit row (its own transaction: a refused action is recorded even if nothing else is)."""
    with store.engine.begin() as conn:
        conn.execute(schema.audit_log.insert().values(
            at=at, username=username[:64], role=role[:10], ip=ip[:45], action=action[:64], target=target[:300],
            detail=detail, ok=ok))


def audit_rows(store: Store, limit: int = 200, username: str | None = None, action: str | None = None,
               before_id: int | None = None) -> list[dict[str, Any]]:
    """Newest audit rows first, optionally one user's or one action's (prefix), paged by id."""
    a = schema.audit_log
    q = sa.select(a).order_by(a.c.id.desc()).limit(limit)
    if username:
        q = q.where(a.c.username == username)
    if action:
        q = q.where(a.c.action.startswith(action, autoescape=True))
    if before_id is not None:
        q = q.where(a.c.id < before_id)
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]
