#!/usr/bin/env python3
"""VenueGuard's rules for Mosquitto's dynamic-security plugin (collector cluster), as a file or live.

    dynsec.py init --out dynamic-security.json --collector venueguard-collector-a --collector … \
        [--ledger <data_dir>/pki/ledger.json] [--agent ID …] [--share-group vg-collectors]
    dynsec.py add-agent ID | remove-agent ID | add-collector ID | remove-collector ID  [--host … --cert …]

Standard library only, so it runs on the broker host without VenueGuard installed. ``init`` writes
the plugin's file before the broker's first start; the other commands change a running broker
through ``mosquitto_ctrl`` (in the mosquitto package) as the admin certificate's identity. Both
build the rules from the same functions below, so a file and a live change cannot disagree.

Why one role per agent: Mosquitto 2.0's dynamic-security plugin does not substitute ``%u``/``%c``
in ACL topics (measured on 2.0.11: a role with ``publishClientSend vg/v1/%u/ev`` refused agent a1's
publish on ``vg/v1/a1/ev``), so an agent's own topics must be spelt out in a role of its own.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

# Operator messages (Simplified Chinese, kept in one place as in deploy/*/install.sh).
M = {
    "bad_id": "标识 {id!r} 不合法：只能用 1–64 个字母、数字、'_'、'.'、'-'，且以字母或数字开头。",
    "written": "已写入 {path}：{collectors} 个收集器身份，{agents} 个终端，管理身份 {admin}。"
               "请把它放到 plugin_opt_config_file 指定的位置（归 mosquitto 用户所有，插件会改写它），再重启 Mosquitto。",
    "no_collector": "至少要给一个 --collector（收集器证书的 CN，即各节点的 [broker] client_id）。",
    "ledger_error": "读不了证书台账 {path}：{error}",
    "no_ctrl": "找不到 mosquitto_ctrl（它随 mosquitto 软件包安装）：{error}",
    "ctrl_failed": "mosquitto_ctrl {command} 失败：{output}",
    "done": "已完成：{what} {id}（{count} 条命令）。",
    "dry": "（仅显示，未执行）",
}

STREAMS_IN = ("ev", "log", "hb", "rpt", "state")  # what agents publish (protocol/topics.py AGENT_STREAMS)
STREAMS_OUT = ("ack", "cmd", "cfg")  # what the collector sends to one agent (COLLECTOR_STREAMS)
PREFIX = "vg/v1"
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # protocol/topics.py AGENT_ID_RE
COLLECTOR_ROLE = "vg-collector"
ADMIN_ROLE = "vg-dynsec-admin"
CONTROL = "$CONTROL/dynamic-security/#"
ETC = "/etc/mosquitto/venueguard/"

Acl = dict[str, Any]


class Refused(Exception):
    """An operator error, already worded for the operator."""


def check_id(value: str) -> str:
    """``value`` if usable as a user name inside a topic (no ``+``, ``#``, ``/``), else Refused."""
    if not ID_RE.match(value):
        raise Refused(M["bad_id"].format(id=value))
    return value


def _acl(acltype: str, topic: str) -> Acl:
    return {"acltype": acltype, "topic": topic, "allow": True}


def agent_role(agent_id: str) -> str:
    return f"vg-agent-{agent_id}"


def agent_acls(agent_id: str) -> list[Acl]:
    """Write its own streams; subscribe to and receive only what the collector sends to it.
    Its ``ack``/``cmd``/``cfg`` are not writable: those topics belong to the collector."""
    own = f"{PREFIX}/{check_id(agent_id)}"
    return ([_acl("publishClientSend", f"{own}/{s}") for s in STREAMS_IN]
            + [_acl("subscribeLiteral", f"{own}/{s}") for s in STREAMS_OUT]
            + [_acl("publishClientReceive", f"{own}/{s}") for s in STREAMS_OUT])


def collector_acls(share_group: str, cases_topic: str) -> list[Acl]:
    """Every collector identity: the cluster's shared subscriptions (checked literally, group
    included, so no other identity can join the group), the plain ones for a node run alone,
    reading every agent stream, and writing every agent's ack/cmd/cfg and the case notices."""
    group = check_id(share_group)
    subs = [f"$share/{group}/{PREFIX}/+/{s}" for s in STREAMS_IN] + [f"{PREFIX}/+/{s}" for s in STREAMS_IN]
    sends = [f"{PREFIX}/+/{s}" for s in STREAMS_OUT] + ([cases_topic] if cases_topic else [])
    return ([_acl("subscribeLiteral", f) for f in subs]
            + [_acl("publishClientReceive", f"{PREFIX}/+/{s}") for s in STREAMS_IN]
            + [_acl("publishClientSend", t) for t in sends])


def admin_acls() -> list[Acl]:
    """What ``mosquitto_ctrl dynsec`` needs, and nothing on VenueGuard's topics."""
    return [_acl("publishClientSend", CONTROL), _acl("publishClientReceive", CONTROL),
            _acl("subscribePattern", CONTROL)]


def _client(username: str, role: str) -> dict[str, Any]:
    """No password: identities come from certificate CNs (use_identity_as_username), and a
    client without a password cannot log in with a user name and password on any listener."""
    return {"username": check_id(username), "roles": [{"rolename": role}]}


def document(collectors: list[str], agents: list[str], admin: str, share_group: str,
             cases_topic: str) -> dict[str, Any]:
    """The plugin's whole file. Anything not granted is denied: default access is all false
    except unsubscribing (harmless)."""
    if not collectors:
        raise Refused(M["no_collector"])
    roles = [{"rolename": COLLECTOR_ROLE, "acls": collector_acls(share_group, cases_topic)},
             {"rolename": ADMIN_ROLE, "acls": admin_acls()}]
    roles += [{"rolename": agent_role(a), "acls": agent_acls(a)} for a in agents]
    clients = [_client(c, COLLECTOR_ROLE) for c in collectors] + [_client(admin, ADMIN_ROLE)]
    clients += [_client(a, agent_role(a)) for a in agents]
    return {"clients": clients, "groups": [], "roles": roles,
            "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": False,
                                 "subscribe": False, "unsubscribe": True}}


def ledger_agents(path: Path) -> list[str]:
    """Agent ids with a certificate that is not revoked, from ``<data_dir>/pki/ledger.json``."""
    try:
        ledger = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise Refused(M["ledger_error"].format(path=path, error=exc)) from exc
    revoked = {r["serial"] for r in ledger.get("revoked", [])}
    return sorted({i["agent_id"] for i in ledger.get("issued", []) if i["serial"] not in revoked})


# -- live changes through mosquitto_ctrl ------------------------------------------------------------

def acl_commands(role: str, acls: list[Acl]) -> list[list[str]]:
    return [["addRoleACL", role, a["acltype"], a["topic"], "allow"] for a in acls]


def add_agent_commands(agent_id: str) -> list[list[str]]:
    """Role first, client last: the agent gets its rights at the moment it becomes known."""
    role = agent_role(agent_id)
    return ([["createRole", role]] + acl_commands(role, agent_acls(agent_id))
            + [["createClient", agent_id], ["addClientRole", agent_id, role]])


def remove_agent_commands(agent_id: str) -> list[list[str]]:
    """deleteClient disconnects the agent at once; reconnecting it gets no rights at all.
    (disableClient does not: a disabled client with a certificate keeps its rights, 2.0.11.)"""
    return [["deleteClient", check_id(agent_id)], ["deleteRole", agent_role(agent_id)]]


def add_collector_commands(collector_id: str) -> list[list[str]]:
    return [["createClient", check_id(collector_id)], ["addClientRole", collector_id, COLLECTOR_ROLE]]


def remove_collector_commands(collector_id: str) -> list[list[str]]:
    return [["deleteClient", check_id(collector_id)]]


def ctrl_base(args: argparse.Namespace) -> list[str]:
    return ["mosquitto_ctrl", "-h", args.host, "-p", str(args.port), "--cafile", args.cafile,
            "--cert", args.cert, "--key", args.key, "dynsec"]


def run_ctrl(base: list[str], command: list[str]) -> str:
    """One ``mosquitto_ctrl dynsec`` command; its output. It exits 0 even when the plugin refuses,
    so the answer is read. "already exists" after an add and "not found" after a delete are fine
    (the command was repeated); any other error stops."""
    try:
        done = subprocess.run([*base, *command], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Refused(M["no_ctrl"].format(error=exc)) from exc
    output = (done.stdout + done.stderr).strip()
    fine = "not found" if command[0].startswith("delete") else "already exists"
    if (done.returncode or "Error" in output) and fine not in output:
        raise Refused(M["ctrl_failed"].format(command=" ".join(command), output=output or done.returncode))
    return output


def client_roles(get_client_output: str) -> set[str]:
    """Role names in ``getClient``'s answer ("Roles:    r1 (priority: -1)", more roles indented)."""
    roles, in_roles = set(), False
    for line in get_client_output.splitlines():
        if line.startswith("Roles:"):
            in_roles, line = True, line[len("Roles:"):]
        elif not line.startswith(" "):
            in_roles = False
        if in_roles and line.strip():
            roles.add(line.split()[0])
    return roles


def has_role(base: list[str], username: str, role: str) -> bool:
    """Whether the client exists with ``role``: 2.0.11 answers a repeated addClientRole with
    "Internal error", so a repeated add skips it instead of taking that error for success."""
    try:
        return role in client_roles(run_ctrl(base, ["getClient", username]))
    except Refused:
        return False  # "Client not found": addClientRole will say what is wrong


def live(args: argparse.Namespace) -> int:
    what, ident = args.command, args.id
    commands = {"add-agent": add_agent_commands, "remove-agent": remove_agent_commands,
                "add-collector": add_collector_commands, "remove-collector": remove_collector_commands}[what](ident)
    base = ctrl_base(args)
    for command in commands:
        if args.dry_run:
            print(shlex.join(base + command))
        elif command[0] != "addClientRole" or not has_role(base, command[1], command[2]):
            run_ctrl(base, command)
    print(M["done"].format(what=what, id=ident, count=len(commands)) + (M["dry"] if args.dry_run else ""))
    return 0


def init(args: argparse.Namespace) -> int:
    agents = sorted(set(args.agent) | set(ledger_agents(Path(args.ledger)) if args.ledger else set()))
    doc = document(args.collector, agents, args.admin, args.share_group, args.cases_topic)
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(out)  # a broker starting now never reads half a file
    print(M["written"].format(path=out, collectors=len(args.collector), agents=len(agents), admin=args.admin))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dynsec.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    i = sub.add_parser("init", help="write the plugin's file (before the broker starts with it)")
    i.add_argument("--out", required=True, help="where to write dynamic-security.json")
    i.add_argument("--collector", action="append", default=[], metavar="ID",
                   help="a collector identity (certificate CN = its [broker] client_id); repeat per node")
    i.add_argument("--agent", action="append", default=[], metavar="ID", help="an agent id (repeatable)")
    i.add_argument("--ledger", help="add every agent with a live certificate in <data_dir>/pki/ledger.json")
    i.add_argument("--admin", default="venueguard-dynsec-admin", help="CN of the certificate mosquitto_ctrl uses")
    i.add_argument("--share-group", default="vg-collectors", help="[cluster] share_group of the collectors")
    i.add_argument("--cases-topic", default="vg/v1/authority/cases", help="[notify] mqtt_topic ('' = none)")
    i.set_defaults(func=init)
    for name, what in (("add-agent", "an enrolled agent"), ("remove-agent", "a revoked agent"),
                       ("add-collector", "a collector node's identity"), ("remove-collector", "a collector node")):
        c = sub.add_parser(name, help=f"{name.split('-')[0]} {what} on the running broker (mosquitto_ctrl)")
        c.add_argument("id")
        c.add_argument("--host", default="127.0.0.1", help="the broker, by a name in its certificate")
        c.add_argument("--port", type=int, default=8883)
        c.add_argument("--cafile", default=f"{ETC}ca.crt")
        c.add_argument("--cert", default=f"{ETC}dynsec-admin.crt", help="the admin identity's certificate")
        c.add_argument("--key", default=f"{ETC}dynsec-admin.key")
        c.add_argument("--dry-run", action="store_true", help="print the mosquitto_ctrl commands only")
        c.set_defaults(func=live)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except Refused as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
