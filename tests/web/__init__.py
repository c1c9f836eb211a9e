"""Web tests: the real app (auth + administration) over a migrated store, driven by TestClient.

Helpers shared by the auth and admin tests live here: an app factory with a clock the test moves,
logging in through the real form, and reading the CSRF token a page carries.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from collector.config import CollectorConfig, CollectorSection, WebSection
from collector.store import Store
from collector.web import accounts, admin, auth

PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf-token" content="([^"]*)"|name="csrf_token" value="([^"]*)"')


@dataclass
class Clock:
    """A clock the test sets and moves."""

    now: float = 1.8e9

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_app(store: Store, data_dir: Path, clock: Clock | None = None, **web: object) -> FastAPI:
    """Auth and the administration on a bare FastAPI app, as create_app wires them."""
    cfg = CollectorConfig(collector=CollectorSection(data_dir=data_dir), web=WebSection(**web))  # type: ignore[arg-type]
    app = FastAPI()
    auth.install(app, store, cfg.web, clock=clock or time.time)
    admin.add_routes(app, store, cfg)
    return app


def add_user(store: Store, name: str, role: str, venue: str | None = None, password: str = PASSWORD) -> None:
    """An account made the way the CLI makes it."""
    accounts.add_user(store, name, password, role, venue, time.time())


def csrf_of(html: str) -> str:
    """The CSRF token a page carries (layout meta or a form's hidden field)."""
    for m in _CSRF.finditer(html):
        token = m.group(1) or m.group(2)
        if token:
            return token
    raise AssertionError("no CSRF token on the page")


def login(client: TestClient, name: str, password: str = PASSWORD, next_url: str = "/") -> object:
    """Log in through the form (GET for the token, then POST); the response of the POST."""
    client.cookies.pop("vg_session", None)  # as a browser without a session would
    token = csrf_of(client.get("/login").text)
    return client.post("/login", data={"username": name, "password": password, "csrf_token": token,
                                       "next": next_url}, follow_redirects=False)


def session_csrf(client: TestClient) -> str:
    """The logged-in session's CSRF token, read from a page."""
    return csrf_of(client.get("/maintenance").text)
