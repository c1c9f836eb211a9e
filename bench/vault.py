"""Vault throughput: append (MB/s, log lines/s) and verify, beside `sha256sum` over the same bytes.

    .venv/bin/python bench/vault.py               # 200 MB of signed log envelopes
    .venv/bin/python bench/vault.py --mb 20       # quick check

Everything lives in a temporary directory. Envelopes are built and signed before timing, like
agents would have done; appends go in fsynced batches like the ingest loop's, with the checkpoint
tick after each batch. The ceiling is `sha256sum` over the segment files, run in the same process
run on the same (page-cached) bytes. Targets: append >= 30 MB/s; verify >= 50% of sha256sum.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.vault import Vault  # noqa: E402
from collector.vault.verify import verify_vault  # noqa: E402
from protocol import keys  # noqa: E402
from protocol.envelope import Envelope, record  # noqa: E402


def envelopes(n: int, lines: int, agent: keys.Ed25519PrivateKey) -> list[str]:
    """``n`` signed ``log`` envelopes of one ``log.lines`` record holding ``lines`` syslog lines."""
    out = []
    for s in range(1, n + 1):
        text = [[s * 10_000 + k * 120, f"Nov 28 09:{k % 60:02d}:01 exam-srv-01 sshd[{4000 + k}]: Accepted publickey for "
                 f"proctor from 192.0.2.{k % 250} port {40000 + k} ssh2: ED25519 SHA256:{'x' * 20} seq {s}"] for k in range(lines)]
        rec = record("log.lines", 1.8e9, {"file_key": "f1", "source": "syslog", "type": "system",
                                          "path": "/var/log/auth.log", "lines": text}, seq=s)
        out.append(Envelope("a1", "boot1", s, 1.8e9, "log", (rec,)).signed(agent).encode().decode())
    return out


def main() -> int:
    """Run the benchmark and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=200, help="megabytes of envelopes to append")
    ap.add_argument("--lines", type=int, default=50, help="log lines per envelope")
    ap.add_argument("--batch", type=int, default=50, help="envelopes per fsynced append")
    args = ap.parse_args()
    agent, vkey = keys.new_private_key(), keys.new_private_key()
    one = len(envelopes(1, args.lines, agent)[0].encode())
    n = max(args.batch, int(args.mb * 1e6 / one))
    print(f"command:  {' '.join([sys.executable, *sys.argv])}")
    print(f"machine:  nproc {os.cpu_count()} ({platform.processor() or platform.machine()}), Python {platform.python_version()}")
    print(f"workload: {n} log envelopes x {args.lines} lines ({one} bytes each), {args.batch} per fsynced append")
    payloads = envelopes(n, args.lines, agent)
    with tempfile.TemporaryDirectory(prefix="vg-bench-vault-") as tmp:
        root = Path(tmp) / "vault"
        vault = Vault(root, vkey, witness=Path(tmp) / "witness")
        t0 = time.perf_counter()
        for k in range(0, n, args.batch):
            vault.append([(time.time(), "vg/v1/a1/log", p) for p in payloads[k:k + args.batch]])
            vault.tick()
        vault.close()
        t_append = time.perf_counter() - t0
        segs = sorted(root.glob("seg-*.log"))
        size = sum(p.stat().st_size for p in segs)
        payload_bytes = sum(len(p.encode()) for p in payloads)
        t_sha = _sha256sum(segs)
        t_verify = _timed(lambda: verify_vault(root, [vkey.public_key()], witness=Path(tmp) / "witness"))
        t_full = _timed(lambda: verify_vault(root, [vkey.public_key()], witness=Path(tmp) / "witness",
                                             agent_keys={"a1": (agent.public_key(), 0.0)}))
    mb = size / 1e6
    print()
    print(f"{'phase':44} {'MB':>8} {'seconds':>8} {'MB/s':>8} {'records/s':>10} {'log lines/s':>12}")
    print(f"{'append (fsync per batch, checkpoint tick)':44} {payload_bytes / 1e6:8.1f} {t_append:8.2f} "
          f"{payload_bytes / 1e6 / t_append:8.1f} {n / t_append:10.0f} {n * args.lines / t_append:12.0f}")
    print(f"{'sha256sum over the segment files (ceiling)':44} {mb:8.1f} {t_sha:8.2f} {mb / t_sha:8.1f}")
    print(f"{'verify: leaves, tree, checkpoints, witness':44} {mb:8.1f} {t_verify:8.2f} {mb / t_verify:8.1f} {n / t_verify:10.0f}")
    print(f"{'verify + every agent signature re-checked':44} {mb:8.1f} {t_full:8.2f} {mb / t_full:8.1f} {n / t_full:10.0f}")
    ratio, ratio_full = t_sha / t_verify, t_sha / t_full
    print(f"verify / sha256sum: {ratio:.2f} (with signatures {ratio_full:.2f})")
    ok_append, ok_verify = payload_bytes / 1e6 / t_append >= 30, ratio >= 0.5
    print(f"target append >= 30 MB/s: {'met' if ok_append else 'MISSED'}; "
          f"target verify >= 50% of sha256sum: {'met' if ok_verify else 'MISSED'}")
    return 0 if ok_append and ok_verify else 1


def _sha256sum(paths: list[Path]) -> float:
    """Seconds `sha256sum` takes over ``paths`` (second run: page cache warm, like verify's)."""
    for _ in range(2):
        t0 = time.perf_counter()
        subprocess.run(["sha256sum", *map(str, paths)], check=True, stdout=subprocess.DEVNULL)
        took = time.perf_counter() - t0
    return took


def _timed(fn) -> float:  # noqa: ANN001 - a thunk
    t0 = time.perf_counter()
    report = fn()
    took = time.perf_counter() - t0
    if report.problems:
        raise SystemExit(f"the vault does not verify: {report.problems[:3]}")
    return took


if __name__ == "__main__":
    sys.exit(main())
