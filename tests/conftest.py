"""Fixtures: real Mosquitto on free ports, stores on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest
import sqlalchemy as sa

from collector.broker import Mosquitto
from collector.store import Store
from tests.support import Proc

#: The PostgreSQL server of these machines (trust auth); override with VENUEGUARD_TEST_PG.
PG_URL = os.environ.get("VENUEGUARD_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(autouse=True)
def _reap() -> Iterator[None]:
    """Kill every collector or agent process a test started, even when the test failed."""
    yield
    while Proc.made:
        Proc.made.pop().kill()


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """Start Mosquitto processes on free ports; all are stopped after the test."""
    started: list[Mosquitto] = []

    def make(**kw: object) -> Mosquitto:
        broker = Mosquitto(tmp_path / f"broker{len(started)}", **kw)  # type: ignore[arg-type]
        started.append(broker.start())
        return broker

    yield make
    for b in started:
        b.kill()


@pytest.fixture
def broker(broker_factory: Callable[..., Mosquitto]) -> Mosquitto:
    """One Mosquitto with persistence."""
    return broker_factory()


def _pg_schema_url() -> Iterator[str]:
    """A fresh PostgreSQL schema for one test, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The store URL, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'index.sqlite3'}"
    else:
        yield from _pg_schema_url()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL store URL only."""
    yield from _pg_schema_url()


def _migrated(url: str) -> Iterator[Store]:
    s = Store(url)
    s.migrate()
    yield s
    s.close()


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A migrated store on each backend."""
    yield from _migrated(db_url)


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    """A migrated store on PostgreSQL only (what clusters and the leader lock need)."""
    yield from _migrated(pg_url)


@pytest.fixture
def lab() -> Iterator["Lab"]:
    """A namespace LAN on 192.0.2.0/24, deleted after the test whatever happens (needs root)."""
    from tests.netns import Lab, require_root

    require_root()
    with Lab() as made:
        yield made


@pytest.fixture(scope="session", autouse=True)
def _no_leftover_namespaces() -> Iterator[None]:
    """Delete test namespaces a killed earlier run left behind, before and after the session."""
    from tests.netns import leftover_namespaces, sh

    for ns in leftover_namespaces():
        sh("ip", "netns", "del", ns, check=False)
    yield
    for ns in leftover_namespaces(include_own=True):
        sh("ip", "netns", "del", ns, check=False)


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator["VictoriaMetrics"]:
    """A real VictoriaMetrics (InfluxDB v2 write API) on a free port, stopped after the test."""
    from tests.victoria import VictoriaMetrics

    server = VictoriaMetrics(tmp_path / "victoria").start()
    yield server
    server.stop()
