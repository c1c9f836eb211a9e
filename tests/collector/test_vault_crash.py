"""kill -9 at random points of append, rotation, checkpoint and purge, 200+ times: afterwards
the vault verifies (only RECOVERY leaves and the unsealed tail may be reported) and no
acknowledged record is lost.

The writer is a forked child (no interpreter start-up per iteration) on a fake clock that
advances a week per loop, so checkpoints are due every loop and segments pass the 3-year
retention and get purged while the child is being killed.
"""

from __future__ import annotations

import hashlib
import os
import random
import select
import signal
import time
from collections import Counter
from pathlib import Path
from typing import BinaryIO

from collector.vault import Vault, checkpoints, purge, segments
from collector.vault.verify import verify_vault
from protocol import keys

WEEK = 7 * 86400.0
T0 = 1_600_000_000.0
ITERATIONS = 220


def _open(root: Path, witness: Path, key: keys.Ed25519PrivateKey, clock: list[float]) -> Vault:
    """Open on a clock that resumes a week after the last checkpoint (as real time would)."""
    last = checkpoints.latest(root / "checkpoints") if (root / "checkpoints").exists() else None
    clock[0] = (float(last["time"]) if last else T0) + WEEK
    return Vault(root, key, witness=witness, segment_bytes=1200, segment_seconds=20 * WEEK, checkpoint_interval=WEEK, clock=lambda: clock[0])


def _child(root: Path, witness: Path, key: keys.Ed25519PrivateKey, out: int, seed: int) -> None:
    """Append, rotate, checkpoint and purge forever, reporting each operation before it starts
    and each acknowledged leaf (index and payload hash) after append returned."""
    rnd, clock = random.Random(seed), [0.0]
    segments.append_durable = _torn_prone  # this child only: a kill can land inside a batch
    os.write(out, b"op open\n")
    vault = _open(root, witness, key, clock)
    loop = 0
    while True:
        loop += 1
        clock[0] += WEEK
        items = [(clock[0], "collector/a1", f'{{"seed":{seed},"loop":{loop},"k":{k},"pad":"{"x" * rnd.randrange(300)}"}}')
                 for k in range(rnd.randrange(1, 4))]
        rotating = vault._writer.path is None or vault._writer._full(clock[0])  # noqa: SLF001 - to label the kill
        os.write(out, b"op rotation\n" if rotating else b"op append\n")
        done = vault.append(items)
        os.write(out, "".join(f"ack {i} {_h(p)}\n" for i, (_, _, p) in zip(done, items)).encode())
        os.write(out, b"op checkpoint\n")
        vault.tick()
        if loop % 3 == 0:
            os.write(out, b"op purge\n")
            vault.purge()


def _torn_prone(fh: BinaryIO, data: bytes) -> None:
    """Append in 100-byte system calls, as a power cut may leave a write half on disk."""
    for k in range(0, len(data), 100):
        fh.write(data[k:k + 100])
        fh.flush()
        time.sleep(0.0003)  # a slow disk: widen the window a kill can land in
    os.fsync(fh.fileno())


def _until(fd: int, marker: bytes, timeout: float) -> bytes:
    """Read the child's reports until ``marker`` appears (or ``timeout``); return what was read."""
    data, deadline = b"", time.monotonic() + timeout
    while marker not in data and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            data += chunk
    return data


def _h(payload: str) -> str:
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _run_once(root: Path, witness: Path, key: keys.Ed25519PrivateKey, seed: int, delay: float,
              kill_on: str = "") -> tuple[str, dict[int, str]]:
    """Fork the writer, kill -9 it after ``delay`` s (or ``delay`` s after it announces the operation
    ``kill_on``); return the operation it was in and its acks."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        os.close(r)
        try:
            _child(root, witness, key, w, seed)
        finally:
            os._exit(1)
    os.close(w)
    data = _until(r, f"op {kill_on}\n".encode(), 10.0) if kill_on else b""
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    while chunk := os.read(r, 1 << 16):
        data += chunk
    os.close(r)
    lines = data.decode().split("\n")[:-1]  # a cut last line was never complete
    ops = [ln[3:] for ln in lines if ln.startswith("op ")]
    acks = {int(ln.split()[1]): ln.split()[2] for ln in lines if ln.startswith("ack ")}
    return (ops[-1] if ops else "start"), acks


def test_kill_9_anywhere_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """220 kills at random moments; after each, reopening recovers, verify reports no problem,
    and every acknowledged leaf is present with its payload (or purged by a signed PURGE leaf)."""
    root, witness, key = tmp_path / "vault", tmp_path / "witness", keys.new_private_key()
    rnd = random.Random(1234)
    acked: dict[int, str] = {}
    interrupted: Counter[str] = Counter()
    recoveries = 0
    # Random moments first; then aimed kills for any operation random timing hit fewer than 3 times
    # (rotations are rare), so every kind of interruption is always exercised.
    plan = [("", rnd.uniform(0.0, 0.06)) for _ in range(ITERATIONS)]
    it = 0
    while plan:
        kill_on, delay = plan.pop(0)
        op, acks = _run_once(root, witness, key, it, delay, kill_on)
        interrupted[op] += 1
        acked.update(acks)
        vault = _open(root, witness, key, [0.0])
        recoveries += vault.repaired_bytes > 0
        vault.close(seal=False)
        report = verify_vault(root, [key.public_key()], witness=witness)
        assert report.problems == [], f"iteration {it}, killed during {op}: {report.problems}"
        _check_acked(vault, acked, root)
        it += 1
        if not plan and it < ITERATIONS + 60:
            plan = [(o, rnd.uniform(0.0, 0.004)) for o in ("append", "rotation", "checkpoint", "purge")
                    if interrupted[o] < 3]
    assert all(interrupted[op] >= 3 for op in ("append", "rotation", "checkpoint", "purge")), interrupted
    print(f"kills by operation: {dict(interrupted)}; torn tails recovered: {recoveries}")
    assert recoveries >= 3 and any(purge.side_files(root))


def _check_acked(vault: Vault, acked: dict[int, str], root: Path) -> None:
    """Every acknowledged leaf is in the vault with the same payload, or in a purged segment."""
    purged = {first + k for first, doc in purge.side_files(root).items() for k in range(doc["count"])}
    seen = {e.i: _h(e.payload) for e in vault.entries(0)}
    for i, h in acked.items():
        assert seen.get(i) == h or (i in purged and i not in seen), f"acknowledged leaf {i} lost"
