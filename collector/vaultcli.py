"""``venueguard-collector vault verify|prove|purge`` and ``rebuild``: the vault's operator commands.

Messages come from ``collector/strings``; problem labels stay in English capitals (they are the
stable names a report or a court exhibit quotes), each followed by its Chinese meaning.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from collector import config
from collector.strings import t

PROGRESS_MIN_BYTES = 64 << 20
LABELS = ("MODIFIED", "MISSING", "TRUNCATED", "REORDERED", "DUPLICATE", "FORGED_SIGNATURE", "UNKNOWN_KEY",
          "CHECKPOINT_GAP", "FORK", "PURGED_EARLY")


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``vault …``, ``verify-vault`` (alias of ``vault verify``) and ``rebuild``."""
    vault = sub.add_parser("vault", help="the tamper-evident evidence vault")
    vsub = vault.add_subparsers(dest="vault_command", required=True)
    _verify_options(vsub.add_parser("verify", help="check every leaf, checkpoint and witness copy; name each problem"))
    _verify_options(sub.add_parser("verify-vault", help="alias of `vault verify`"))
    prove = vsub.add_parser("prove", help="print an inclusion proof of one record that a third party can check")
    prove.add_argument("index", type=int, help="leaf index (records.vault_index in the index)")
    prove.add_argument("--vault", default=None, help="vault id (records.vault_id): this collector's by default, "
                       "another collector's when listed in [vault] roots")
    purge = vsub.add_parser("purge", help="remove segments older than the retention period (signed PURGE leaf first)")
    purge.add_argument("--older-than-years", type=float, default=None, help="at least the configured retention (3)")
    sub.add_parser("rebuild", help="drop the SQL index and rebuild it from the vault (collector stopped)")


def _verify_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-signatures", action="store_true", help="skip re-checking agent signatures")
    p.add_argument("--gap-grace", type=float, default=120.0, help="seconds beyond two intervals before CHECKPOINT_GAP")


def handler(command: str, args: argparse.Namespace) -> Callable[[config.CollectorConfig, argparse.Namespace], int]:
    """The function for a vault-related command."""
    if command == "rebuild":
        return rebuild
    if command == "verify-vault":
        return verify
    return {"verify": verify, "prove": prove, "purge": purge}[args.vault_command]


def verify(cfg: config.CollectorConfig, args: argparse.Namespace) -> int:
    """Exit 0 only when nothing is wrong; the unsealed tail, purges and recoveries are listed."""
    from collector.runtime import open_store
    from collector.vault import wiring
    from collector.vault.verify import total_bytes, verify_vault

    root = wiring.vault_dir(cfg)
    key_path = cfg.collector.data_dir / wiring.VAULT_KEY
    trusted = [wiring.vault_key(cfg).public_key()] if key_path.exists() else []
    agents = None
    if not args.no_signatures:
        store = open_store(cfg)
        agents = wiring.agent_keys(store)
        store.close()
    started = time.time()
    with _progress(total_bytes(root) if root.exists() else 0) as tick:
        report = verify_vault(root, trusted, witness=wiring.witness_dir(cfg), agent_keys=agents,
                              gap_grace=args.gap_grace, progress=tick)
    _record(cfg, started, report, signatures=agents is not None)
    for r in report.recoveries:
        print(t("vault_recovery", leaf=r["leaf"], segment=r.get("segment"), bytes=r.get("cut_bytes")))
    for p in report.purges:
        print(t("vault_purge_listed", leaf=p["leaf"], count=len(p.get("segments", [])), years=p.get("retention_years")))
    if report.torn_tail:
        print(t("vault_torn_tail", bytes=report.torn_tail))
    if report.unsealed:
        print(t("vault_unsealed", count=report.unsealed, sealed=report.sealed))
    if agents is None:
        print(t("vault_signatures_skipped"))
    if report.problems:
        for prob in report.problems:
            print(t("vault_problem", label=prob.label, meaning=t(f"label_{prob.label}"), where=prob.where,
                    detail=prob.detail), file=sys.stderr)
        print(t("vault_bad", detail=t("vault_problem_count", count=len(report.problems),
                                       labels=", ".join(sorted(report.labels)))), file=sys.stderr)
        return 1
    print(t("vault_ok", count=report.size, sealed=report.sealed, checkpoints=report.checkpoints,
            signatures=report.signatures))
    return 0


def _record(cfg: config.CollectorConfig, started: float, report: Any, *, signatures: bool) -> None:
    """Keep this run's result in the store, where the admin page shows it; a store that cannot take
    it is said on stderr (the verdict above stands either way)."""
    import sqlalchemy.exc

    from collector.runtime import open_store

    problem = str(report.problems[0])[:2000] if report.problems else ""
    try:
        store = open_store(cfg)
        try:
            store.record_vault_verification(started_at=started, finished_at=time.time(), ok=not report.problems,
                                            records=report.size, sealed=report.sealed, checkpoints=report.checkpoints,
                                            signatures_checked=signatures, problem_count=len(report.problems),
                                            problem=problem)
        finally:
            store.close()
    except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        url = sqlalchemy.engine.make_url(cfg.database_url).render_as_string(hide_password=True)
        print(t("vault_verify_not_recorded", url=url, error=exc), file=sys.stderr)


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr for long runs; silent below 64 MB."""
    if total < PROGRESS_MIN_BYTES:
        yield lambda _n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(t("vault_progress"), total=total)
        yield lambda n: bar.advance(task, n)


def prove(cfg: config.CollectorConfig, args: argparse.Namespace) -> int:
    """Print the proof as JSON on stdout."""
    from collector.vault import wiring
    from collector.vault.prove import ProofError, prove_in

    try:
        doc = prove_in(wiring.vault_roots(cfg), args.vault or cfg.vault_id, args.index)
    except ProofError as exc:
        print(t("vault_prove_error", index=args.index, detail=exc), file=sys.stderr)
        return 1
    print(json.dumps(doc, ensure_ascii=False, indent=2))
    return 0


def purge(cfg: config.CollectorConfig, args: argparse.Namespace) -> int:
    """Purge old segments; refuse a retention shorter than configured."""
    from collector.vault import VaultError, wiring

    years = cfg.vault.retention_years if args.older_than_years is None else args.older_than_years
    if years < cfg.vault.retention_years:
        print(t("vault_purge_refused", years=years, minimum=cfg.vault.retention_years), file=sys.stderr)
        return 2
    try:
        vault = wiring.open_vault(cfg)
    except VaultError as exc:
        print(t("vault_busy", detail=exc), file=sys.stderr)
        return 2
    try:
        result = vault.purge(years=years)
    finally:
        vault.close()
    for seg in result.purged:
        print(t("vault_purged", first=seg["first"], last=seg["last"], count=seg["count"]))
    for why in result.kept:
        print(t("vault_purge_kept", reason=why))
    if not result.purged:
        print(t("vault_purge_nothing", years=years))
    return 0


def rebuild(cfg: config.CollectorConfig, _args: argparse.Namespace) -> int:
    """Drop and rebuild the index; needs the vault lock, so the collector must be stopped."""
    from collector.rebuild import rebuild as run
    from collector.runtime import open_store
    from collector.vault import Vault, VaultError, wiring

    vaults = {}
    try:
        vaults[cfg.vault_id] = wiring.open_vault(cfg)
        for vault_id, root in cfg.vault.roots.items():  # the cluster's other vaults, their collectors stopped
            vaults[vault_id] = Vault(root)
    except VaultError as exc:
        for vault in vaults.values():
            vault.close()
        print(t("vault_busy", detail=exc), file=sys.stderr)
        return 2
    store = open_store(cfg)
    try:
        count = run(store, vaults)
    finally:
        for vault in vaults.values():
            vault.close()
        store.close()
    print(t("rebuilt", count=count, leaves=sum(v.size for v in vaults.values())))
    return 0
