"""Runs the real LAN watcher inside a test namespace: watcher → state → outbox, as the agent does,
minus the uplink (the test reads the outbox). The inventory is given as the collector would sign it.

Usage (inside ``ip netns exec``): python tests/lan_agent.py SETTINGS.json
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.outbox import Outbox  # noqa: E402
from agent.state import State  # noqa: E402
from agent.watchers.lan import LanWatcher  # noqa: E402
from protocol.inventory import Inventory  # noqa: E402


def main() -> None:
    cfg = json.loads(Path(sys.argv[1]).read_text())
    inventory = Inventory.from_json(cfg["inventory"])
    outbox = Outbox(Path(cfg["outbox"]))
    state = State(outbox, snapshot_interval=3600)
    watcher = LanWatcher(interfaces=cfg["interfaces"], subnets=cfg["subnets"], inventory=lambda: inventory,
                         interval=cfg["interval"], sweep_interval=cfg["sweep_interval"], sweep_rate=cfg["sweep_rate"],
                         missing_after=cfg["missing_after"])
    watcher.init()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    Path(cfg["ready"]).write_text("ready")
    while not stop.is_set():
        watcher.news.clear()
        outbox.append_many(state.observe("lan", watcher.collect()))
        outbox.save_state("sweeps", watcher.sweep_count)
        watcher.news.wait(cfg["interval"])  # like the runtime: news is judged at once
    watcher.stop()
    outbox.close()


if __name__ == "__main__":
    main()
