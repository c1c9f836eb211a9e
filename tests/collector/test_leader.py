"""Leader election on real PostgreSQL: one holder, handover, kill -9, and the fencing epoch."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any, Callable, Iterator

import pytest
import sqlalchemy as sa

from collector.leader import LEADER_KEY, Leadership, LostLeadership, SoleLeadership
from collector.store import Store
from tests.support import ROOT, wait_for

POLL = 0.2

#: The backend holding this schema's leader lock (None when nobody holds it).
_HOLDER = sa.text(
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = :key "
    "AND objid = (hashtext(current_schema())::bigint & 4294967295) "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")


@pytest.fixture
def make(pg_store: Store) -> Iterator[Callable[..., Leadership]]:
    """Build and start Leaderships on the test schema; all are stopped afterwards, even on failure."""
    made: list[Leadership] = []

    def build(node: str, poll: float = POLL, **kw: Any) -> Leadership:
        lead = Leadership(pg_store.engine, node, poll_seconds=poll, **kw)
        made.append(lead)
        lead.start()
        return lead

    yield build
    for lead in made:
        lead.stop()


def holder_pid(pg_store: Store) -> int | None:
    with pg_store.engine.connect() as conn:
        return conn.execute(_HOLDER, {"key": LEADER_KEY}).scalar()


def kill_lock_session(pg_store: Store) -> int:
    """What a broken network does to the leader's lock connection: the server ends it."""
    pid = holder_pid(pg_store)
    assert pid is not None
    with pg_store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
    return pid


def stored(pg_store: Store) -> tuple[int, str | None]:
    with pg_store.engine.connect() as conn:
        row = conn.execute(sa.text("SELECT epoch, holder FROM cluster_leader WHERE id = 1")).one()
    return int(row.epoch), row.holder


def test_one_leader_and_handover_on_stop(pg_store: Store, make: Callable[..., Leadership]) -> None:
    events: list[str] = []
    a = make("a", on_gain=lambda: events.append("a+"), on_lose=lambda: events.append("a-"))
    wait_for(a.held, timeout=3, what="a to lead")
    b = make("b", on_gain=lambda: events.append("b+"), on_lose=lambda: events.append("b-"))
    time.sleep(4 * POLL)
    assert a.held() and not b.held() and b.epoch is None
    first = a.epoch
    assert stored(pg_store) == (first, "a")

    started = time.monotonic()
    a.stop()
    wait_for(b.held, timeout=3, what="b to take over")
    assert time.monotonic() - started < 3
    assert not a.held() and a.epoch is None
    assert b.epoch == first + 1 and stored(pg_store) == (first + 1, "b")
    assert events == ["a+", "a-", "b+"]


def test_handover_when_the_lock_connection_dies(pg_store: Store, make: Callable[..., Leadership]) -> None:
    events: list[str] = []

    def a_lost() -> None:
        events.append("a-")
        time.sleep(0.5)  # like stopping the notifier; also keeps a from racing b for the lock

    a = make("a", on_gain=lambda: events.append("a+"), on_lose=a_lost)
    wait_for(a.held, timeout=3, what="a to lead")
    b = make("b", on_gain=lambda: events.append("b+"))
    first = a.epoch
    time.sleep(2 * POLL)

    old = kill_lock_session(pg_store)
    wait_for(lambda: not a.held(), timeout=3, what="a to notice")
    wait_for(b.held, timeout=3, what="b to take over")
    assert b.epoch == first + 1 and stored(pg_store) == (first + 1, "b")
    time.sleep(4 * POLL)  # a reconnects and keeps trying, in vain
    assert b.held() and not a.held()
    assert holder_pid(pg_store) not in (None, old)
    # b may gain before a notices its loss: that window is what fence() covers
    assert events[0] == "a+" and sorted(events[1:]) == ["a-", "b+"]


CHILD = """
import sys, time
import sqlalchemy as sa
from collector.leader import Leadership
lead = Leadership(sa.create_engine(sys.argv[1]), "child", poll_seconds=0.1)
lead.start()
while not lead.held():
    time.sleep(0.05)
print("held", lead.epoch, flush=True)
time.sleep(120)
"""


def test_kill_9_of_the_leader_process(pg_url: str, pg_store: Store, make: Callable[..., Leadership],
                                      caplog: pytest.LogCaptureFixture) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, pg_url], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        word, epoch = child.stdout.readline().split()
        assert word == "held"

        def boom() -> None:
            raise RuntimeError("callback failure must not stop the election")

        caplog.set_level(logging.INFO, logger="venueguard.collector.leader")
        b = make("b", poll=0.1, on_gain=boom)
        time.sleep(0.5)
        assert not b.held()
        os.kill(child.pid, signal.SIGKILL)
        started = time.monotonic()
        wait_for(b.held, timeout=3, interval=0.05, what="b to take over from the killed process")
        assert time.monotonic() - started < 3
        assert b.epoch == int(epoch) + 1 and stored(pg_store) == (int(epoch) + 1, "b")
        assert "on_gain callback failed" in caplog.text and "node b is the leader now" in caplog.text
        time.sleep(0.3)
        assert b.held()  # still the leader after its callback raised
    finally:
        child.kill()
        child.wait()


def test_fence_orders_against_takeover_and_stops_the_old_leader(pg_store: Store, make: Callable[..., Leadership]) -> None:
    with pg_store.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE probe (note VARCHAR(40) NOT NULL)"))
    # a polls rarely: it never notices its lock connection died, held() stays True (the split
    # brain the epoch has to catch).
    a = make("a", poll=60)
    wait_for(a.held, timeout=3, what="a to lead")
    gained: list[float] = []
    b = make("b", on_gain=lambda: gained.append(time.monotonic()))
    first = a.epoch
    time.sleep(2 * POLL)

    with pg_store.engine.connect() as conn:
        txn = conn.begin()
        a.fence(conn)  # the share lock on the epoch row lasts until this transaction ends
        kill_lock_session(pg_store)
        # b gets the advisory lock, then its epoch UPDATE waits behind a's share lock
        wait_for(lambda: _waiting_on_lock(pg_store), timeout=3, what="b's epoch bump to wait")
        time.sleep(3 * POLL)
        assert not b.held() and a.held()
        conn.execute(sa.text("INSERT INTO probe VALUES ('a before takeover')"))
        txn.commit()
        committed = time.monotonic()

    wait_for(b.held, timeout=3, what="b to take over after a's transaction")
    assert gained[0] > committed
    assert b.epoch == first + 1
    assert a.held() and a.epoch == first  # a still believes it leads ...

    def leader_step(conn: sa.Connection) -> None:
        a.fence(conn)
        conn.execute(sa.text("INSERT INTO probe VALUES ('a after takeover')"))

    with pytest.raises(LostLeadership):  # ... but cannot write
        with pg_store.engine.begin() as conn:
            leader_step(conn)
    with pg_store.engine.begin() as conn:
        b.fence(conn)
        conn.execute(sa.text("INSERT INTO probe VALUES ('b')"))
    with pg_store.engine.connect() as conn:
        notes = conn.execute(sa.text("SELECT note FROM probe ORDER BY note")).scalars().all()
    assert notes == ["a before takeover", "b"]


def _waiting_on_lock(pg_store: Store) -> bool:
    """The session now holding the leader lock is blocked on a row lock."""
    pid = holder_pid(pg_store)
    with pg_store.engine.connect() as conn:
        kind = conn.execute(sa.text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :p"), {"p": pid}).scalar()
    return kind == "Lock"


def test_fence_refuses_a_follower(pg_store: Store, make: Callable[..., Leadership]) -> None:
    a = make("a")
    wait_for(a.held, timeout=3, what="a to lead")
    b = make("b")
    time.sleep(2 * POLL)
    with pytest.raises(LostLeadership), pg_store.engine.begin() as conn:
        b.fence(conn)
    with pg_store.engine.begin() as conn:
        a.fence(conn)


def test_each_schema_elects_its_own_leader(pg_url: str, pg_store: Store, make: Callable[..., Leadership]) -> None:
    """Advisory locks are per database, the epoch row per schema: the lock key includes the schema."""
    other_schema = f"t_{uuid.uuid4().hex[:12]}"
    with pg_store.engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{other_schema}"'))
    other = Store(pg_url.rsplit("%3D", 1)[0] + "%3D" + other_schema)
    try:
        other.migrate()
        here = make("a")
        there = Leadership(other.engine, "z", poll_seconds=POLL)
        there.start()
        try:
            wait_for(lambda: here.held() and there.held(), timeout=3, what="a leader in each schema")
        finally:
            there.stop()
    finally:
        other.close()
        with pg_store.engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{other_schema}" CASCADE'))


def test_sole_leadership_always_leads(tmp_path: Any) -> None:
    sole = SoleLeadership()
    sole.start()
    assert sole.held() and sole.epoch == 0
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    with engine.begin() as conn:
        sole.fence(conn)  # no table needed: nothing is read
        conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
    sole.stop()
    assert sole.held()
    engine.dispose()
