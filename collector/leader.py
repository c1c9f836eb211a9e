"""One leader among a cluster's collectors: a PostgreSQL advisory lock plus a fencing epoch.

Every collector ingests, but the rulebook, readiness rounds, notices, the heartbeat sweep and
config pushes need exactly one writer (deploy/scale-out.md §5.2). Whoever holds a session-level
advisory lock on a dedicated connection is the leader; PostgreSQL releases that lock when the
session's socket closes, so a collector killed -9 is replaced within one poll. Taking the lock
bumps ``cluster_leader.epoch``. Every leader transaction first reads the epoch ``FOR SHARE``
(:meth:`Leadership.fence`): an old leader that lost its lock connection but not its pool sees a
newer epoch and writes nothing, and the new leader's ``UPDATE`` waits for the old leader's open
fenced transactions, so the two never write at the same time.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

__all__ = ["LEADER_KEY", "Leader", "Leadership", "LostLeadership", "SoleLeadership"]

log = logging.getLogger("venueguard.collector.leader")

#: First key of the advisory lock ("VGLD"). The second key is a hash of the schema, because the
#: ``cluster_leader`` row is per schema while advisory locks are per database: two deployments
#: (or two test schemas) in one database must not elect one leader between them.
LEADER_KEY = 0x5647_4C44

#: Client-side TCP keepalives: a leader whose database host vanished notices within ~25 s.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}

_LOCK = sa.text("SELECT pg_try_advisory_lock(:key, hashtext(current_schema()))")
_BUMP = sa.text("UPDATE cluster_leader SET epoch = epoch + 1, holder = :node, since = :now WHERE id = 1 RETURNING epoch")
_FENCE = sa.text("SELECT epoch FROM cluster_leader WHERE id = 1 FOR SHARE")


class LostLeadership(RuntimeError):
    """This process is not the leader any more: the transaction must roll back."""


class Leadership:
    """PostgreSQL advisory-lock leader election with a fencing epoch."""

    def __init__(self, engine: sa.Engine, node_id: str, poll_seconds: float = 2.0,
                 on_gain: Callable[[], None] | None = None, on_lose: Callable[[], None] | None = None) -> None:
        self.node_id = node_id
        self.poll_seconds = poll_seconds
        self._on_gain = on_gain
        self._on_lose = on_lose
        # Not the engine's pool: a pooled connection could be handed back and reused, and the
        # lock must live exactly as long as this one session. Autocommit: the lock is
        # session-level, and the epoch bump must commit on its own, at once.
        self._lock_engine = sa.create_engine(engine.url, poolclass=NullPool, isolation_level="AUTOCOMMIT",
                                             connect_args=dict(KEEPALIVES))
        self._conn: sa.Connection | None = None
        self._epoch: int | None = None
        self._last_error: str | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Try to take (then keep) the lock every ``poll_seconds`` on a daemon thread."""
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=f"leader-{self.node_id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling, give the lock up (calling on_lose if held) and close the lock connection."""
        self._stopping.set()
        if self._thread is not None:
            # A takeover UPDATE can wait for an old leader's short fenced transaction; bounded.
            self._thread.join(timeout=max(5.0, 3 * self.poll_seconds))
            if self._thread.is_alive():
                log.warning("leader thread of node %s did not stop in time", self.node_id)
            self._thread = None
        self._lock_engine.dispose()

    def held(self) -> bool:
        """True while this process holds the lock and knows its epoch."""
        return self._epoch is not None

    @property
    def epoch(self) -> int | None:
        """The epoch this process took the lock with, None when not the leader."""
        return self._epoch

    def fence(self, conn: sa.Connection) -> None:
        """First statement of a leader transaction: stop unless the stored epoch is still ours.

        The share lock on the row lasts until ``conn``'s transaction ends, so a new leader's
        epoch bump waits for it: nothing this transaction writes can land after a takeover.
        """
        mine = self._epoch  # read once: the poll thread may clear it meanwhile
        stored = conn.execute(_FENCE).scalar()
        if mine is None or stored != mine:
            raise LostLeadership(f"node {self.node_id}: epoch {mine} is not the current leader epoch {stored}")

    # -- poll thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                self._poll()
                if self._stopping.wait(self.poll_seconds):
                    break
        finally:
            self._give_up(None)

    def _poll(self) -> None:
        try:
            if self._epoch is None:
                self._try_take()
            else:
                assert self._conn is not None
                self._conn.execute(sa.text("SELECT 1"))  # the lock lives exactly as long as this session
        except Exception as exc:  # any failure means the session (and so the lock) may be gone
            cause = getattr(exc, "orig", None) or exc  # the driver's one-line message, not SQLAlchemy's
            why = f"{cause.__class__.__name__}: {str(cause).strip()}"
            if self._epoch is None and why != self._last_error:  # a database that stays down logs once
                log.warning("node %s cannot try the leader lock: %s", self.node_id, why)
            self._last_error = why
            self._give_up(why)

    def _try_take(self) -> None:
        if self._conn is None:
            self._conn = self._connect()
        self._last_error = None
        if not self._conn.execute(_LOCK, {"key": LEADER_KEY}).scalar():
            return
        # Waits while an old leader's fenced transaction still holds its share lock on the row.
        epoch = int(self._conn.execute(_BUMP, {"node": self.node_id[:64], "now": time.time()}).scalar_one())
        self._epoch = epoch
        log.info("node %s is the leader now (epoch %d)", self.node_id, epoch)
        self._call(self._on_gain, "on_gain")

    def _connect(self) -> sa.Connection:
        conn = self._lock_engine.connect()
        # Server-side keepalives: it is the server that must notice a dead *client* host and
        # release the lock; these settings are per session.
        for name, value in (("idle", 10), ("interval", 5), ("count", 3)):
            conn.execute(sa.text(f"SET tcp_keepalives_{name} = {value}"))
        return conn

    def _give_up(self, error: str | None) -> None:
        """Not the leader from now on (error None: stopping): clear the epoch, tell, drop the session."""
        was = self._epoch
        self._epoch = None
        if was is not None:
            if error is None:
                log.info("node %s stops leading (epoch %d)", self.node_id, was)
            else:
                log.warning("node %s is not the leader any more (epoch %d): %s", self.node_id, was, error)
            self._call(self._on_lose, "on_lose")
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.close()  # NullPool: the session ends, and with it the lock, at once
        except Exception:  # a dead session: dropping the socket is all that is left
            conn.invalidate()

    def _call(self, callback: Callable[[], None] | None, what: str) -> None:
        if callback is None:
            return
        try:
            callback()
        except Exception:  # a failing callback must not stop the election
            log.exception("node %s: %s callback failed", self.node_id, what)


class SoleLeadership:
    """A single collector (SQLite, or [cluster] disabled): always the leader, nothing to fence."""

    def start(self) -> None:
        """Nothing to elect."""

    def stop(self) -> None:
        """Nothing to release."""

    def held(self) -> bool:
        return True

    @property
    def epoch(self) -> int | None:
        return 0

    def fence(self, conn: sa.Connection) -> None:
        """No other writer exists."""


#: What the runtime holds: either kind.
Leader = Leadership | SoleLeadership
