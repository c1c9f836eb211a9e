"""Authorisation matrix of the pages' endpoints (overview, venue, cases, readiness, live), on
SQLite and PostgreSQL: each role (admin, viewer, the operator of V1) against each GET page and API
and each POST action, on its own data and on another venue's (V2: the operator gets 404); POSTs
without or with a wrong CSRF token are refused (403) and change nothing; anonymous requests get
303 to /login for pages and 401 for /api."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa

from collector import readiness_store as rs
from collector.store import Store, schema
from tests.web.pagekit import NOW, TOMORROW, Site, add_case

ROLES = ("admin", "viewer", "venue")


@pytest.fixture
def site(store: Store, tmp_path: Path) -> Iterator[Site]:
    made = Site(store, tmp_path / "data")
    made.app.state.ctx = dataclasses.replace(made.app.state.ctx, live_seconds=0.2, live_interval=0.1)
    yield made
    made.close()


def _reads(site: Site, venue: str) -> list[str]:
    """Every GET endpoint of the pages about ``venue`` (its case, its report…)."""
    case = site.case_ids["v1_recorder" if venue == "V1" else "v2_device"]
    return [f"/venues/{venue}", f"/cases/{case}", f"/cases/{case}/proofs.json", f"/readiness/{venue}/{TOMORROW}",
            f"/readiness/{venue}/{TOMORROW}.xlsx", f"/api/v1/venues/{venue}", f"/api/v1/cases/{case}",
            f"/api/v1/readiness/{venue}/{TOMORROW}", f"/api/v1/live?page=venue&venue={venue}"]


LISTS = ["/", "/cases", "/cases.csv", "/cases.xlsx", "/readiness", f"/readiness?day={TOMORROW}", "/api/v1/overview",
         "/api/v1/cases", "/api/v1/readiness", "/api/v1/live?page=overview"]

#: Who may take each action on a case of their reach (the operator only on its venue's).
MAY = {"acknowledge": {"admin", "venue"}, "confirm": {"admin", "viewer"}, "dismiss": {"admin", "viewer"},
       "run": {"admin", "venue"}}


@pytest.mark.parametrize("role", ROLES)
def test_every_role_reads_the_lists_and_its_venue(site: Site, role: str) -> None:
    client = site.client(role)
    for url in LISTS + _reads(site, "V1"):
        assert client.get(url).status_code == 200, (role, url)


@pytest.mark.parametrize("role", ROLES)
def test_another_venues_data_is_404_for_an_operator(site: Site, role: str) -> None:
    """The operator cannot even learn whether V2's case or report exists; the authority reads it."""
    client = site.client(role)
    expected = 404 if role == "venue" else 200
    for url in _reads(site, "V2"):
        assert client.get(url).status_code == expected, (role, url)


def _post(site: Site, role: str, action: str, case_id: int, api: bool, venue: str = "V1", token: str | None = "ok") -> int:
    """One action through the form or the API; ``token``: "ok" the session's, None none, else that value."""
    client = site.client(role)
    csrf = site.csrf(role) if token == "ok" else token
    if action == "run":
        url = f"/api/v1/readiness/{venue}/{TOMORROW}/run" if api else f"/readiness/{venue}/{TOMORROW}/run"
        body: dict[str, str] = {}
    else:
        url = f"/api/v1/cases/{case_id}/actions" if api else f"/cases/{case_id}/actions"
        body = {"action": action, "reason": "理由"}
    if api:
        headers = {"X-CSRF-Token": csrf} if csrf is not None else {}
        return client.post(url, json=body or None, headers=headers).status_code
    form = {**body, **({"csrf_token": csrf} if csrf is not None else {})}
    return client.post(url, data=form, follow_redirects=False).status_code


@pytest.mark.parametrize("api", [False, True], ids=["form", "api"])
@pytest.mark.parametrize("role", ROLES)
def test_actions_by_role(site: Site, role: str, api: bool) -> None:
    """Allowed: 303 (form) / 200 (API) and the change happens; refused: 403 and nothing changes."""
    for action, allowed in MAY.items():
        case_id = add_case(site.store, "V1", 510, "open", NOW - 60)
        rounds_before = len(rs.rounds(site.store, "V1"))
        status = _post(site, role, action, case_id, api)
        if role in allowed:
            assert status == (200 if api else 303), (role, action)
        else:
            assert status == 403, (role, action)
        changed = len(rs.rounds(site.store, "V1")) > rounds_before if action == "run" else _status(site, case_id) != "new"
        assert changed == (role in allowed), (role, action)


@pytest.mark.parametrize("api", [False, True], ids=["form", "api"])
def test_operator_cannot_act_on_another_venue(site: Site, api: bool) -> None:
    for action in ("acknowledge", "run"):
        case_id = add_case(site.store, "V2", 110, "open", NOW - 60)
        assert _post(site, "venue", action, case_id, api, venue="V2") == 404
        assert _status(site, case_id) == "new" and rs.rounds(site.store, "V2") == []


@pytest.mark.parametrize("api", [False, True], ids=["form", "api"])
@pytest.mark.parametrize("token", [None, "forged-token"], ids=["missing", "wrong"])
def test_posts_without_the_csrf_token_are_refused(site: Site, api: bool, token: str | None) -> None:
    for action in ("acknowledge", "confirm", "dismiss", "run"):
        case_id = add_case(site.store, "V1", 510, "open", NOW - 60)
        before = len(rs.rounds(site.store, "V1"))
        assert _post(site, "admin", action, case_id, api, token=token) == 403, action
        assert _status(site, case_id) == "new" and len(rs.rounds(site.store, "V1")) == before


def test_anonymous_requests_go_to_login_or_get_401(site: Site) -> None:
    anon = site.anonymous()
    case_id = site.case_ids["v1_recorder"]
    for url in LISTS + _reads(site, "V1") + _reads(site, "V2"):
        r = anon.get(url, follow_redirects=False)
        if url.startswith("/api/"):
            assert r.status_code == 401, url
        else:
            assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), url
    for url, api in ((f"/cases/{case_id}/actions", False), (f"/readiness/V1/{TOMORROW}/run", False),
                     (f"/api/v1/cases/{case_id}/actions", True), (f"/api/v1/readiness/V1/{TOMORROW}/run", True)):
        r = anon.post(url, data={"action": "confirm", "reason": "x"}, follow_redirects=False)
        assert r.status_code == (401 if api else 303), url
    assert _status(site, case_id) == "new"


def _status(site: Site, case_id: int) -> str:
    with site.store.engine.connect() as conn:
        return conn.execute(sa.select(schema.cases.c.status).where(schema.cases.c.id == case_id)).scalar_one()
