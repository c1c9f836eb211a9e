"""``venueguard-agent``: run the agent on a venue host."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from agent import config
from agent.runtime import Runtime
from agent.strings import t
from protocol.errors import ProtocolError
from protocol.keys import read_bundle


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="venueguard-agent", description="VenueGuard exam-venue agent")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the agent until stopped")
    run.add_argument("--config", type=Path, default=Path("/etc/venueguard/agent.toml"), help="agent TOML config")
    args = parser.parse_args(argv)
    return _run(args.config)


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
