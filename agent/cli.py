"""``venueguard-agent``: run the agent on a venue host, or check the venue's readiness now."""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import signal
import sys
from pathlib import Path

from rich.console import Console

from agent import config
from agent.runtime import Runtime
from agent.strings import t
from protocol.errors import ProtocolError
from protocol.keys import read_bundle
from protocol.schedule import Session


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="venueguard-agent", description="VenueGuard exam-venue agent")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the agent until stopped")
    run.add_argument("--config", type=Path, default=Path("/etc/venueguard/agent.toml"), help="agent TOML config")
    check = sub.add_parser("check", help="run the readiness check now, locally (exit 0 pass, 1 fail, 3 unknown, 2 bad config)")
    check.add_argument("--config", type=Path, default=Path("/etc/venueguard/agent.toml"), help="agent TOML config")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--day", default=None, help="exam day YYYY-MM-DD (default: the day of the next exam session)")
    args = parser.parse_args(argv)
    if args.command == "check":
        return _check(args.config, args.json, args.day)
    return _run(args.config)


def _check(path: Path, as_json: bool, day: str | None) -> int:
    """The readiness check without the collector: the last good signed config, the outbox read-only,
    so it runs beside the agent service without taking anything from it."""
    from agent.outbox import OutboxReader
    from agent.readiness import local_context, run_check
    from agent.readiness_table import EXIT_CODES, render

    try:
        cfg = config.load(path)
        if day is not None:
            datetime.date.fromisoformat(day)
    except (config.ConfigError, ValueError) as exc:
        print(t("config_error", detail=exc), file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        bundle = read_bundle(cfg.agent.bundle)
    except ProtocolError as exc:
        print(t("bundle_error", detail=exc.detail), file=sys.stderr)
        return 2
    reader = OutboxReader(cfg.agent.data_dir / "outbox.sqlite3")
    try:
        ctx = local_context(cfg, bundle.agent_id, reader, day)
        report = run_check(cfg, ctx, reader)
    finally:
        reader.close()
    if as_json:
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
    else:
        render(report, Console(), _check_header(report.agent_id, ctx.exam_day, ctx.sessions, ctx.config_version))
    return EXIT_CODES[report.result]


def _check_header(agent_id: str, day: str, sessions: tuple[Session, ...], version: int) -> list[str]:
    """Who checked, for which exam day, and that the collector was not asked."""
    offline = t("rd.local_config", version=version) if version else t("rd.local_no_config")
    rooms = "、".join(sorted({s.room for s in sessions}))
    plan = t("rd.day_sessions", day=day, n=len(sessions), rooms=rooms) if sessions else t("rd.day_no_sessions", day=day)
    return [t("rd.title", agent_id=agent_id), offline, plan]


def _run(path: Path) -> int:
    try:
        cfg = config.load(path)
    except config.ConfigError as exc:
        print(t("config_error", detail=exc), file=sys.stderr)
        return 2
    logging.basicConfig(level=cfg.agent.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        bundle = read_bundle(cfg.agent.bundle)
    except ProtocolError as exc:
        print(t("bundle_error", detail=exc.detail), file=sys.stderr)
        return 2
    try:
        runtime = Runtime(cfg, bundle)
    except ValueError as exc:
        print(t("config_error", detail=f"{path}: {exc}"), file=sys.stderr)
        return 2

    def _stop(*_: object) -> None:
        print(t("stopping"), file=sys.stderr)
        runtime.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop)
    print(t("started", agent_id=bundle.agent_id, venue_id=bundle.venue_id, data_dir=cfg.agent.data_dir), file=sys.stderr)
    runtime.run()
    print(t("stopped", depth=_depth(cfg)), file=sys.stderr)
    return 0


def _depth(cfg: config.AgentConfig) -> int:
    from agent.outbox import Outbox

    box = Outbox(cfg.agent.data_dir / "outbox.sqlite3")
    try:
        return box.depth()
    finally:
        box.close()


if __name__ == "__main__":
    sys.exit(main())
