"""``venueguard-collector cases …`` and ``maintenance …``: the authority's and venues' case commands.

Actions taken here are written to the index at once and sealed into the vault by the running
collector within a second (it is the vault's only writer); ``cases show`` says which are sealed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import sys
import time
from typing import Any, Callable
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table

from collector import cases, config, maintenance
from collector.strings import t

Handler = Callable[[config.CollectorConfig, argparse.Namespace], int]


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``cases`` and ``maintenance``."""
    c = sub.add_parser("cases", help="violation cases: list, show with evidence, acknowledge, confirm, dismiss")
    csub = c.add_subparsers(dest="cases_command", required=True)
    ls = csub.add_parser("list", help="cases, newest first")
    ls.add_argument("--venue", default=None)
    ls.add_argument("--open", action="store_true", help="only cases whose condition still holds")
    ls.add_argument("--status", choices=["new", "acknowledged", "confirmed", "dismissed"], default=None)
    show = csub.add_parser("show", help="one case: clause, evidence with vault leaves, actions")
    show.add_argument("case_id", type=int)
    show.add_argument("--proofs", action="store_true", help="print the evidence's inclusion proofs (JSON)")
    for action, who in (("acknowledge", "venue"), ("confirm", "authority"), ("dismiss", "authority")):
        p = csub.add_parser(action, help=f"{action} a case ({who}; a reason is required)")
        p.add_argument("case_id", type=int)
        p.add_argument("--by", default=getpass.getuser(), help="who acts (default: the OS user)")
        p.add_argument("--reason", required=True, help="the venue's explanation / the authority's reason")
    stats = csub.add_parser("stats", help="confirmed cases per venue and year")
    stats.add_argument("--year", type=int, default=None)
    m = sub.add_parser("maintenance", help="special situations (特殊情况): declare, approve, reject, list")
    msub = m.add_subparsers(dest="maintenance_command", required=True)
    d = msub.add_parser("declare", help="a venue declares a maintenance window")
    d.add_argument("--venue", required=True)
    d.add_argument("--start", required=True, help="e.g. '2026-12-05 07:00' (the [schedule] time zone)")
    d.add_argument("--end", required=True)
    d.add_argument("--rules", default="", help="rule ids it covers, e.g. 510,520 (default: every rule)")
    d.add_argument("--reason", required=True)
    d.add_argument("--by", default=getpass.getuser())
    for verb in ("approve", "reject"):
        p = msub.add_parser(verb, help=f"the authority {verb}s a declared window")
        p.add_argument("window_id", type=int)
        p.add_argument("--by", default=getpass.getuser())
        p.add_argument("--reason", default="", required=verb == "reject")
    ml = msub.add_parser("list", help="declared windows and decisions")
    ml.add_argument("--venue", default=None)


def handler(command: str) -> Handler:
    return _cases if command == "cases" else _maintenance


def _store(cfg: config.CollectorConfig):  # noqa: ANN202 - Store, imported late to keep --help fast
    from collector.runtime import open_store

    return open_store(cfg)


def _when(t_: float | None, tz: str) -> str:
    return "—" if t_ is None else dt.datetime.fromtimestamp(t_, ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S")


def _cases(cfg: config.CollectorConfig, args: argparse.Namespace) -> int:
    store = _store(cfg)
    try:
        cmd = args.cases_command
        if cmd == "list":
            return _list(store, args, cfg.schedule.timezone)
        if cmd == "show":
            return _show(store, cfg, args)
        if cmd == "stats":
            return _stats(store, args, cfg.schedule.timezone)
        try:
            row = cases.act(store, args.case_id, cmd, args.by, args.reason, time.time(), cfg.notify)
        except cases.CaseError as exc:
            print(t("case_refused", detail=exc), file=sys.stderr)
            return 1
        print(t("case_acted", case_id=row["id"], status=t(f"case_status_{row['status']}")))
        return 0
    finally:
        store.close()


def _list(store: Any, args: argparse.Namespace, tz: str) -> int:
    rows = cases.cases(store, args.venue, "open" if args.open else None, args.status)
    table = Table(title=t("case_list_title", count=len(rows)))
    for key in ("id", "venue", "rule", "severity", "state", "status", "opened", "closed", "session", "subject"):
        table.add_column(t(f"case_col_{key}"))
    for r in rows:
        table.add_row(str(r["id"]), r["venue_id"], f"{r['rule_id']} {r['title']}", t(f"case_severity_{r['severity']}"),
                      t(f"case_state_{r['state']}"), t(f"case_status_{r['status']}"), _when(r["opened_at"], tz),
                      _when(r["closed_at"], tz), r["session_id"] or "—", r["subject"])
    Console().print(table)
    return 0


def _show(store: Any, cfg: config.CollectorConfig, args: argparse.Namespace) -> int:
    tz = cfg.schedule.timezone
    try:
        case = cases.case_detail(store, args.case_id)
    except cases.CaseError as exc:
        print(t("case_refused", detail=exc), file=sys.stderr)
        return 1
    clause = case["clause"]
    print(t("case_header", **{k: case[k] for k in ("id", "venue_id", "rule_id", "title")},
            severity=t(f"case_severity_{case['severity']}"), state=t(f"case_state_{case['state']}"),
            status=t(f"case_status_{case['status']}"), opened=_when(case["opened_at"], tz),
            closed=_when(case["closed_at"], tz), session=case["session_id"] or "—", subject=case["subject"],
            agent=case["agent_id"], events=case["events"], source=clause["source"], article=clause["article"],
            text=clause["text"]))
    print(t("case_evidence_title", count=len(case["evidence"])))
    for e in case["evidence"]:
        print(f"  {_when(e['at'], tz)}  {e['kind']:24} leaf {e['vault_index']}  {json.dumps(e['data'], ensure_ascii=False)[:160]}")
    print(t("case_actions_title"))
    for a in case["actions"]:
        sealed = t("case_sealed", leaf=a["vault_index"]) if a["vault_index"] is not None else t("case_unsealed")
        print(f"  {_when(a['at'], tz)}  {a['action']:12} {a['actor']}（{a['role']}） {a['reason']}  {sealed}")
    if args.proofs:
        return _proofs(cfg, case)
    return 0


def _proofs(cfg: config.CollectorConfig, case: dict[str, Any]) -> int:
    from collector.vault.prove import ProofError, prove_in
    from collector.vault.wiring import vault_roots

    out, status = [], 0
    for e in case["evidence"]:
        try:
            out.append(prove_in(vault_roots(cfg), e["vault_id"], int(e["vault_index"])))
        except ProofError as exc:
            print(t("case_proof_missing", leaf=e["vault_index"], detail=exc), file=sys.stderr)
            status = 1
    print(json.dumps(out, ensure_ascii=False, indent=1))
    return status


def _stats(store: Any, args: argparse.Namespace, tz: str) -> int:
    counts = cases.annual_counts(store, args.year, tz)
    table = Table(title=t("case_stats_title"))
    for key in ("venue", "year", "confirmed"):
        table.add_column(t(f"case_col_{key}"))
    for venue_id in sorted(counts):
        for year, n in sorted(counts[venue_id].items()):
            table.add_row(venue_id, str(year), str(n))
    Console().print(table)
    return 0


def _maintenance(cfg: config.CollectorConfig, args: argparse.Namespace) -> int:
    tz = cfg.schedule.timezone
    store = _store(cfg)
    try:
        cmd = args.maintenance_command
        if cmd == "list":
            for w in maintenance.windows(store, args.venue):
                print(t("maint_row", id=w["id"], venue=w["venue_id"], start=_when(w["start"], tz), end=_when(w["end"], tz),
                        rules=",".join(map(str, w["rules"])) or t("maint_all_rules"), status=t(f"maint_status_{w['status']}"),
                        reason=w["reason"], by=w["declared_by"], decided_by=w["decided_by"] or "—"))
            return 0
        if cmd == "declare":
            rules = [int(x) for x in args.rules.split(",") if x.strip()]
            wid = maintenance.declare(store, args.venue, _parse(args.start, tz), _parse(args.end, tz), rules, args.reason,
                                      args.by, time.time())
            print(t("maint_declared", id=wid))
            return 0
        row = maintenance.decide(store, args.window_id, cmd == "approve", args.by, args.reason, time.time())
        print(t("maint_decided", id=row["id"], status=t(f"maint_status_{row['status']}")))
        return 0
    except (maintenance.MaintenanceError, ValueError) as exc:
        print(t("maint_refused", detail=exc), file=sys.stderr)
        return 1
    finally:
        store.close()


def _parse(text: str, tz: str) -> float:
    """``YYYY-MM-DD HH:MM[:SS]`` in the schedule's time zone."""
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"):
        try:
            return dt.datetime.strptime(text.strip(), fmt).replace(tzinfo=ZoneInfo(tz)).timestamp()
        except ValueError:
            continue
    raise ValueError(t("maint_bad_time", value=text))
