"""``venueguard-collector``: run, enroll agents, verify/prove/purge the vault, rebuild the index, run the demo."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from collector import casecli, config, vaultcli
from collector import schedulecli
from collector import readinesscli
from collector import usercli
from collector import timeseries_cli
from collector import doctor
from collector import pkicli
from collector.strings import t


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="venueguard-collector", description="VenueGuard collector")
    parser.add_argument("--config", type=Path, default=None, help="collector TOML config (default: embedded defaults)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="ingest from the broker and serve the pages")
    enroll = sub.add_parser("enroll", help="register an agent and write its enrollment bundle")
    enroll.add_argument("agent_id")
    enroll.add_argument("--venue", required=True, help="venue id (考点编号)")
    enroll.add_argument("--venue-name", default=None, help="venue name (考点名称), first enrollment only")
    enroll.add_argument("--out", type=Path, default=None, help="bundle path (default: <agent_id>.bundle.json)")
    inventory = sub.add_parser("inventory", help="registered devices of each venue")
    inv_sub = inventory.add_subparsers(dest="inventory_command", required=True)
    inv_import = inv_sub.add_parser("import", help="replace venues' inventories from a CSV file (all or nothing)")
    inv_import.add_argument("file", type=Path, help="CSV with header venue_id,mac,ip,role,room,name")
    inv_show = inv_sub.add_parser("show", help="print a venue's inventory")
    inv_show.add_argument("venue_id")
    rules = sub.add_parser("rules", help="the rule files")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True)
    rules_check = rules_sub.add_parser("check", help="validate every rule file, with file:line errors")
    rules_check.add_argument("--folder", type=Path, default=None,
                             help="rules folder (default: [rules] folder of the config, else the shipped rules/)")
    vaultcli.add_parsers(sub)
    casecli.add_parsers(sub)
    schedulecli.add_parsers(sub)
    readinesscli.add_parsers(sub)
    usercli.add_parsers(sub)
    timeseries_cli.add_parsers(sub)
    doctor.add_parser(sub)
    pkicli.add_parsers(sub)
    sub.add_parser("migrate", help="bring the database schema to the newest revision")
    demo = sub.add_parser("demo", help="broker + collector + simulated venues on embedded defaults")
    demo.add_argument("--dir", type=Path, default=Path("venueguard-demo"), help="demo data dir (reused)")
    demo.add_argument("--port", type=int, default=8080, help="web port")
    demo.add_argument("--duration", type=float, default=0, help="stop after this many seconds (0 = until Ctrl-C)")
    args = parser.parse_args(argv)
    try:
        cfg = config.load(args.config)
    except config.ConfigError as exc:
        print(t("config_error", detail=exc), file=sys.stderr)
        return 2
    logging.basicConfig(level=cfg.collector.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if args.command in ("vault", "verify-vault", "rebuild"):
        return vaultcli.handler(args.command, args)(cfg, args)
    if args.command in ("cases", "maintenance"):
        return casecli.handler(args.command)(cfg, args)
    if args.command == "schedule":
        return schedulecli.handler(args)(cfg, args)
    if args.command == "readiness":
        return readinesscli.handler(cfg, args)
    if args.command == "user":
        return usercli.handler(cfg, args)
    if args.command == "timeseries":
        return timeseries_cli.handler(cfg, args)
    if args.command == "doctor":
        return doctor.handler(cfg, args)
    if args.command == "pki":
        return pkicli.handler(cfg, args)
    handler = {"run": _run, "enroll": _enroll, "inventory": _inventory, "rules": _rules, "migrate": _migrate,
               "demo": _demo}[args.command]
    return handler(cfg, args)


def _run(cfg: config.CollectorConfig, _args: argparse.Namespace) -> int:
    from collector.rulefiles import RuleFileErrors
    from collector.runtime import Collector
    from collector.store.store import VaultClaimed
    from collector.timeseries_influx import TelemetryError
    from protocol.errors import ProtocolError

    try:
        collector = Collector(cfg)
    except RuleFileErrors as exc:
        print(t("rules_bad", count=len(exc.errors)), file=sys.stderr)
        for err in exc.errors:
            print(f"  {err}", file=sys.stderr)
        return 2
    except ProtocolError as exc:  # e.g. [broker] tls_* files missing or unusable
        print(t("config_error", detail=exc.detail), file=sys.stderr)
        return 2
    except TelemetryError as exc:  # e.g. [influx] token_file missing
        print(t("ts_bad_config", detail=exc), file=sys.stderr)
        return 2
    try:
        collector.start()
    except VaultClaimed as exc:  # two collectors configured with one vault id
        print(t("doctor.cluster.vault_claimed", vault=exc.vault_id, holder=exc.holder, host=exc.host), file=sys.stderr)
        collector.vault.close()
        collector.store.close()
        return 2
    print(t("running", broker=f"{cfg.broker.host}:{cfg.broker.port}", web=f"{cfg.web.host}:{cfg.web.port}"), file=sys.stderr)
    _wait_for_signal()
    collector.stop()
    print(t("stopped"), file=sys.stderr)
    return 0


def _enroll(cfg: config.CollectorConfig, args: argparse.Namespace) -> int:
    from collector import keys
    from collector.enroll import enroll
    from collector.pki import pki_of
    from collector.runtime import open_store
    from protocol.errors import ProtocolError

    store = open_store(cfg)
    key = keys.load_or_create(cfg.collector.data_dir / "collector.key")
    out = args.out or Path(f"{args.agent_id}.bundle.json")
    pki = pki_of(cfg.collector.data_dir)
    broker_host, broker_port = cfg.broker.public_host or cfg.broker.host, cfg.broker.public_port or cfg.broker.port
    try:
        enroll(store, key, args.agent_id, args.venue, venue_name=args.venue_name,
               broker_host=broker_host, broker_port=broker_port, out=out, pki=pki)
    except ProtocolError as exc:
        print(t("enroll_error", detail=exc.detail), file=sys.stderr)
        return 2
    finally:
        store.close()
    print(t("enrolled", agent_id=args.agent_id, venue_id=args.venue, path=out))
    if pki.exists():
        print(t("enrolled_tls", agent_id=args.agent_id, broker=f"{broker_host}:{broker_port}"))
    if cfg.cluster.enabled:
        print(t("enrolled_cluster", agent_id=args.agent_id))
    return 0


def _inventory(cfg: config.CollectorConfig, args: argparse.Namespace) -> int:
    from collector.inventory import InventoryError, import_file
    from collector.runtime import open_store

    store = open_store(cfg)
    try:
        if args.inventory_command == "show":
            inv = store.inventory(args.venue_id)
            print(t("inventory_header", venue_id=inv.venue_id, version=inv.version, count=len(inv.devices)))
            for d in inv.devices:
                print(f"{d.mac}  {d.ip or 'DHCP':15}  {d.role:13}  {d.room}  {d.name}")
            return 0
        try:
            versions = import_file(store, args.file)
        except InventoryError as exc:
            print(t("inventory_refused"), file=sys.stderr)
            for err in exc.errors:
                print(f"  {err}", file=sys.stderr)
            return 2
        for venue_id, version in versions.items():
            print(t("inventory_imported", venue_id=venue_id, version=version))
        return 0
    finally:
        store.close()


def _rules(cfg: config.CollectorConfig, args: argparse.Namespace) -> int:
    from collector.rulefiles import check_rules
    from collector.rulerunner import SHIPPED_RULES
    from collector.rulesamples import failures

    folder = args.folder or cfg.rules.folder or SHIPPED_RULES
    found, errors = check_rules(folder)
    errors = errors or failures(found)  # samples run only on rules that load
    if errors:
        print(t("rules_bad", count=len(errors)), file=sys.stderr)
        for err in errors:
            print(f"  {err}", file=sys.stderr)
        return 1
    print(t("rules_ok", count=len(found), folder=folder))
    return 0


def _migrate(cfg: config.CollectorConfig, _args: argparse.Namespace) -> int:
    from collector.runtime import open_store

    open_store(cfg).close()
    print(t("migrated", url=cfg.database_url.split("@")[-1]))
    return 0


def _demo(_cfg: config.CollectorConfig, args: argparse.Namespace) -> int:
    from collector.demo import Demo

    demo = Demo(args.dir.resolve(), web_port=args.port)
    return demo.run(args.duration)


def _wait_for_signal(duration: float = 0) -> None:
    """Block until SIGINT/SIGTERM (or ``duration`` seconds when > 0)."""
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait(duration or None)


if __name__ == "__main__":
    sys.exit(main())
