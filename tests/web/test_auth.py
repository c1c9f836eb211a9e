"""Accounts and sessions on the real app: argon2 hashes, login and logout, cookie flags, idle and
absolute timeouts on a clock the test moves, login throttling that survives a restart, CSRF, the
default-deny for anonymous requests, roles and venue scoping, and the audit rows all of it writes."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from collector.store import Store
from collector.web import accounts, auth
from collector.web.auth import User
from tests.web import PASSWORD, Clock, add_user, csrf_of, login, make_app, session_csrf


def _audit(store: Store, action: str) -> list[dict]:
    return [r for r in accounts.audit_rows(store, 1000) if r["action"] == action]


def test_passwords_are_argon2id_and_checked(store: Store) -> None:
    """The stored hash is argon2id; the right password matches, a wrong one does not; short ones are refused."""
    add_user(store, "boss", "admin")
    hashed = accounts.find_user(store, "boss")["password_hash"]
    assert hashed.startswith("$argon2id$") and PASSWORD not in hashed
    assert accounts.verify_password(hashed, PASSWORD)
    assert not accounts.verify_password(hashed, PASSWORD + "x")
    assert not accounts.verify_password("not a hash", PASSWORD)
    with pytest.raises(accounts.AccountError) as exc:
        accounts.add_user(store, "short", "abc", "viewer", None, 0)
    assert exc.value.key == "auth_err_password_short"


def test_login_then_logout(store: Store, tmp_path: Path) -> None:
    """The form logs in and goes back to `next`; logout ends the session; both are audited."""
    add_user(store, "boss", "admin")
    client = TestClient(make_app(store, tmp_path))
    page = client.get("/login?next=/admin/users")
    assert page.status_code == 200 and "登录" in page.text and '<html lang="zh-CN">' in page.text
    r = login(client, "boss", next_url="/admin/users")
    assert r.status_code == 303 and r.headers["location"] == "/admin/users"
    users = client.get("/admin/users")
    assert users.status_code == 200 and 'id="nav-user"' in users.text and "boss" in users.text
    assert 'id="nav-admin"' in users.text  # the admin sees 管理 in the layout's navigation
    r = client.post("/logout", data={"csrf_token": session_csrf(client)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert client.get("/admin/users", follow_redirects=False).status_code == 303
    assert [r["target"] for r in _audit(store, "login")] == ["boss"]
    assert [r["username"] for r in _audit(store, "logout")] == ["boss"]


def test_wrong_password_and_unknown_user_look_the_same(store: Store, tmp_path: Path) -> None:
    """Both get the same Chinese message and status; the audit trail alone tells them apart."""
    add_user(store, "boss", "admin")
    client = TestClient(make_app(store, tmp_path))
    wrong, unknown = login(client, "boss", "wrong password!"), login(client, "nobody", PASSWORD)
    assert wrong.status_code == unknown.status_code == 401
    assert "用户名或密码错误" in wrong.text and "用户名或密码错误" in unknown.text
    assert 'id="nav-user"' not in wrong.text
    failed = _audit(store, "login.failed")
    assert {(r["target"], r["detail"], r["ok"]) for r in failed} == {("boss", "bad_password", False),
                                                                     ("nobody", "unknown_user", False)}


def test_next_must_be_a_local_path(store: Store, tmp_path: Path) -> None:
    """An open redirect to another site is not possible through `next`."""
    add_user(store, "boss", "admin")
    app = make_app(store, tmp_path)
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"):
        r = login(TestClient(app), "boss", next_url=target)
        assert r.headers["location"] == "/", target


def test_cookie_flags(store: Store, tmp_path: Path) -> None:
    """Session cookie HttpOnly and SameSite=Strict; Secure over https, or on http when configured."""
    add_user(store, "boss", "admin")
    plain = login(TestClient(make_app(store, tmp_path)), "boss").headers["set-cookie"].lower()
    assert plain.startswith("vg_session=") and "httponly" in plain and "samesite=strict" in plain
    assert "secure" not in plain
    tls = TestClient(make_app(store, tmp_path), base_url="https://testserver")
    cookie = login(tls, "boss").headers["set-cookie"].lower()
    assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    assert tls.get("/admin").status_code == 200
    forced = login(TestClient(make_app(store, tmp_path, secure_cookies=True)), "boss").headers["set-cookie"].lower()
    assert "secure" in forced
    anonymous = TestClient(make_app(store, tmp_path)).get("/login")
    pre = anonymous.headers["set-cookie"].lower()
    assert pre.startswith("vg_csrf=") and "httponly" in pre and "samesite=strict" in pre
    assert anonymous.headers["x-frame-options"] == "DENY" and anonymous.headers["x-content-type-options"] == "nosniff"


def test_idle_timeout_and_absolute_lifetime(store: Store, tmp_path: Path) -> None:
    """Use within idle_minutes keeps a session; 31 idle minutes end it; so does the lifetime, however active."""
    add_user(store, "boss", "admin")
    clock = Clock()
    client = TestClient(make_app(store, tmp_path, clock, idle_minutes=30, session_hours=2))
    login(client, "boss")
    for _ in range(3):
        clock.advance(29 * 60)
        assert client.get("/admin/users", follow_redirects=False).status_code == 200
    clock.advance(31 * 60)
    r = client.get("/admin/users", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fadmin%2Fusers"
    assert [row["target"] for row in _audit(store, "session.idle")] == ["boss"]

    login(client, "boss")
    for _ in range(5):  # active every 25 minutes, but 2 hours after login it ends anyway
        clock.advance(25 * 60)
        status = client.get("/api/v1/admin/users").status_code
    assert status == 401 and len(_audit(store, "session.expired")) == 1


def test_background_polls_do_not_keep_a_session_alive(store: Store, tmp_path: Path) -> None:
    """Requests marked X-VG-Poll, and event streams (a live page refreshing itself), are not use."""
    add_user(store, "boss", "admin")
    clock = Clock()
    client = TestClient(make_app(store, tmp_path, clock))
    login(client, "boss")
    for headers in ({"X-VG-Poll": "1"}, {"Accept": "text/event-stream"}, {"X-VG-Poll": "1"}):
        clock.advance(10 * 60)
        assert client.get("/api/v1/admin/users", headers=headers).status_code == 200
    clock.advance(10 * 60)  # 40 minutes since the last real use
    assert client.get("/api/v1/admin/users", headers={"X-VG-Poll": "1"}).status_code == 401


def test_throttling_locks_then_unlocks_and_survives_a_restart(store: Store, tmp_path: Path) -> None:
    """5 failures in 15 minutes lock the name for 15 minutes (even the right password), in the store."""
    add_user(store, "boss", "admin")
    clock = Clock()
    client = TestClient(make_app(store, tmp_path, clock))
    for _ in range(4):
        assert login(client, "boss", "wrong password!").status_code == 401
        clock.advance(60)
    fifth = login(client, "boss", "wrong password!")
    assert fifth.status_code == 429 and "已暂时锁定" in fifth.text and "2027-01-15 16:" in fifth.text
    clock.advance(60)
    restarted = TestClient(make_app(store, tmp_path, clock))  # a new process over the same store
    locked = login(restarted, "boss")
    assert locked.status_code == 429 and "已暂时锁定" in locked.text
    assert _audit(store, "login.locked")[0]["target"] == "boss"
    clock.advance(15 * 60)
    assert login(restarted, "boss").status_code == 303  # the lock ended; the right password works again
    assert login(restarted, "boss", "wrong password!").status_code == 401  # and the count starts afresh


def test_throttling_by_client_address(store: Store, tmp_path: Path) -> None:
    """Guessing many names from one address locks the address, for every name."""
    add_user(store, "boss", "admin")
    clock = Clock()
    client = TestClient(make_app(store, tmp_path, clock, login_max_failures_ip=3))
    for name in ("a1", "a2", "a3"):
        login(client, name, "wrong password!")
    assert login(client, "boss").status_code == 429
    clock.advance(16 * 60)
    assert login(client, "boss").status_code == 303


def test_csrf_missing_or_wrong_is_refused_and_audited(store: Store, tmp_path: Path) -> None:
    """A form without the token, or with another, is 403 and changes nothing; the header works too."""
    add_user(store, "boss", "admin")
    client = TestClient(make_app(store, tmp_path))
    login(client, "boss")
    form = {"username": "ann", "role": "viewer", "password": PASSWORD, "password2": PASSWORD}
    assert client.post("/admin/users/add", data=form).status_code == 403
    wrong = client.post("/admin/users/add", data={**form, "csrf_token": "x" * 43})
    assert wrong.status_code == 403 and "表单已失效" in wrong.text
    assert accounts.find_user(store, "ann") is None
    rows = _audit(store, "csrf.rejected")
    assert [(r["username"], r["target"], r["detail"], r["ok"]) for r in rows] == [
        ("boss", "/admin/users/add", "mismatch", False), ("boss", "/admin/users/add", "missing", False)]
    ok = client.post("/admin/users/add", data=form, headers={"X-CSRF-Token": session_csrf(client)},
                     follow_redirects=False)
    assert ok.status_code == 303 and accounts.find_user(store, "ann") is not None
    anonymous = TestClient(make_app(store, tmp_path))
    assert anonymous.post("/login", data={"username": "boss", "password": PASSWORD}).status_code == 403


def test_anonymous_requests_go_to_login_or_get_401(store: Store, tmp_path: Path) -> None:
    """Pages redirect to /login with the way back; the API answers 401; login and static stay open."""
    client = TestClient(make_app(store, tmp_path))
    r = client.get("/admin/inventory?x=1", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fadmin%2Finventory%3Fx%3D1"
    api = client.get("/api/v1/admin/users")
    assert api.status_code == 401 and api.json() == {"detail": "login required"}
    assert client.get("/maintenance", follow_redirects=False).status_code == 303
    assert client.get("/static/app.css").status_code == 200 and client.get("/static/app.js").status_code == 200
    posted = client.post("/admin/users/add", data={"username": "x"}, follow_redirects=False)
    assert posted.status_code == 303 and _audit(store, "auth.denied")[0]["ok"] is False


def test_disabling_a_user_ends_its_sessions(store: Store, tmp_path: Path) -> None:
    """A disabled account is out at its next request, and cannot log in again."""
    add_user(store, "boss", "admin")
    add_user(store, "ann", "viewer")
    app = make_app(store, tmp_path)
    ann = TestClient(app)
    login(ann, "ann")
    assert ann.get("/api/v1/maintenance").status_code == 200
    accounts.set_disabled(store, "ann", True)
    assert ann.get("/api/v1/maintenance").status_code == 401
    assert login(ann, "ann").status_code == 401


def _scoped_app(store: Store, tmp_path: Path) -> FastAPI:
    """The contract's dependencies on routes of the kind the other pages declare."""
    app = make_app(store, tmp_path)

    @app.get("/api/v1/venues/{venue_id}")
    def venue(venue_id: str, user: User = Depends(auth.current_user)) -> dict:
        auth.check_venue(user, venue_id)
        return {"venue": venue_id, "filter": auth.venue_filter(user)}

    @app.post("/api/v1/cases/{case_id}/act", dependencies=[Depends(auth.csrf_protect)])
    def act(case_id: int, user: User = Depends(auth.require("admin", "viewer"))) -> dict:
        return {"case": case_id, "by": user.username}

    return app


def test_roles_and_venue_scoping(store: Store, tmp_path: Path) -> None:
    """require() gives 403 to other roles; check_venue() gives an operator 404 for another venue."""
    store.add_venue("GZ-TH01")
    store.add_venue("GZ-YX02")
    add_user(store, "ann", "viewer")
    add_user(store, "op", "venue", "GZ-TH01")
    app = _scoped_app(store, tmp_path)
    viewer, operator = TestClient(app), TestClient(app)
    login(viewer, "ann")
    login(operator, "op")
    assert viewer.get("/api/v1/venues/GZ-YX02").json() == {"venue": "GZ-YX02", "filter": None}
    assert operator.get("/api/v1/venues/GZ-TH01").json() == {"venue": "GZ-TH01", "filter": "GZ-TH01"}
    assert operator.get("/api/v1/venues/GZ-YX02").status_code == 404
    assert operator.get("/api/v1/venues/NO-SUCH").status_code == 404  # the same answer: nothing revealed
    act = viewer.post("/api/v1/cases/7/act", headers={"X-CSRF-Token": session_csrf(viewer)})
    assert act.json() == {"case": 7, "by": "ann"}
    assert operator.post("/api/v1/cases/7/act", headers={"X-CSRF-Token": session_csrf(operator)}).status_code == 403
    page = operator.get("/admin")
    assert page.status_code == 403 and "无权访问" in page.text and 'id="nav-admin"' not in page.text
    assert csrf_of(page.text)  # the layout still carries the token for the logout form


def test_abandoned_sessions_are_pruned_at_the_next_login(store: Store, tmp_path: Path) -> None:
    """A browser that never comes back leaves no session row behind for long."""
    add_user(store, "boss", "admin")
    clock = Clock()
    app = make_app(store, tmp_path, clock)
    login(TestClient(app), "boss")
    login(TestClient(app), "boss")
    user_id = accounts.find_user(store, "boss")["id"]
    assert accounts.sessions_of(store, user_id) == 2
    clock.advance(31 * 60)
    login(TestClient(app), "boss")
    assert accounts.sessions_of(store, user_id) == 1
