#!/usr/bin/env python3
"""Where the agent's resident memory goes: import the agent's dependencies step by step, in the
order ``python -m agent.cli run`` meets them, and print the RSS after each step as JSON lines.

Run by ``bench/lan.py`` in a fresh interpreter (no packets are sent). By hand:
``.venv/bin/python bench/lan_rss.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402  (the agent imports it too: agent.watchers.host, _own_macs)

STEPS = (
    ("interpreter + psutil", ""),
    ("pydantic (agent.config)", "import agent.config"),
    ("cryptography (protocol.keys, envelope)", "import protocol.keys, protocol.envelope"),
    ("paho-mqtt", "import paho.mqtt.client"),
    ("rest of agent (runtime, outbox/sqlite3)", "import agent.cli, agent.runtime"),
    ("watchers (LAN raw-socket I/O, logs/watchdog, host, isolation)", "import agent.watchers.lan, agent.watchers.logs"),
)


def main() -> None:
    proc = psutil.Process()
    for name, code in STEPS:
        before = set(sys.modules)
        exec(code, {})  # noqa: S102 - fixed import statements above
        new = [m for m in sys.modules if m not in before]
        top: dict[str, int] = {}
        for m in new:
            top[m.split(".")[0]] = top.get(m.split(".")[0], 0) + 1
        print(json.dumps({"step": name, "rss_mb": proc.memory_info().rss / 2**20, "modules": len(new),
                          "packages": sorted(top.items(), key=lambda kv: -kv[1])[:4]}), flush=True)
    # The agent must not load a packet library (scapy alone cost ~22 MB here).
    print(json.dumps({"scapy_modules": sum(m.startswith("scapy") for m in sys.modules)}))


if __name__ == "__main__":
    main()
