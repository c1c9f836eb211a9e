"""``venueguard-collector user add|list|disable|enable|password``: accounts from the command line.

The first administrator can only be made here (the pages need someone to log in). Passwords are
typed twice without echo, or read from ``--password-file`` (first line) for scripted installs;
never from an argument, which would sit in the shell history and the process list. Messages are
the pages' ``auth_*`` catalogue entries, so the CLI and the pages refuse in the same words.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import sys
import time
from pathlib import Path
from typing import Callable

from collector import config

Handler = Callable[[config.CollectorConfig, argparse.Namespace], int]
_CN = dt.timezone(dt.timedelta(hours=8), "CST")


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``user add|list|disable|enable|password``."""
    user = sub.add_parser("user", help="web accounts: add, list, disable, enable, password")
    usub = user.add_subparsers(dest="user_command", required=True)
    add = usub.add_parser("add", help="add a user (asks for the password twice)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=("admin", "viewer", "venue"),
                     help="admin 考试机构管理员, viewer 考试机构查看, venue 考点操作员")
    add.add_argument("--venue", default=None, help="the venue (考点编号) of a venue operator")
    add.add_argument("--password-file", type=Path, default=None, help="read the password from this file's first line")
    usub.add_parser("list", help="every user with role, venue and state")
    for verb, text in (("disable", "disable a user and end its sessions"), ("enable", "re-enable a disabled user")):
        p = usub.add_parser(verb, help=text)
        p.add_argument("name")
    pw = usub.add_parser("password", help="set a new password (ends the user's sessions)")
    pw.add_argument("name")
    pw.add_argument("--password-file", type=Path, default=None, help="read the password from this file's first line")


def handler(cfg: config.CollectorConfig, args: argparse.Namespace) -> int:
    """Run ``user <command>``; refusals print the Chinese reason and return 1."""
    from collector.runtime import open_store
    from collector.web.accounts import AccountError
    from collector.web.strings import t

    store = open_store(cfg)
    try:
        command = {"add": _add, "list": _list, "disable": _disable, "enable": _enable, "password": _password}
        return command[args.user_command](store, args)
    except AccountError as exc:
        print(t("auth_cli_refused", detail=t(exc.key, **exc.params)), file=sys.stderr)
        return 1
    except _NoPassword as exc:
        print(str(exc), file=sys.stderr)
        return 2
    finally:
        store.close()


class _NoPassword(Exception):
    """No password could be read (no terminal, unreadable file)."""


def _add(store, args: argparse.Namespace) -> int:  # noqa: ANN001 - Store, imported late
    from collector.web import accounts
    from collector.web.strings import t

    if args.role == "venue" and not args.venue:
        raise accounts.AccountError("auth_err_venue_required")
    password = _read_password(args.password_file)
    user = accounts.add_user(store, args.name, password, args.role, args.venue, time.time())
    venue = f" · {user.venue_id}" if user.venue_id else ""
    print(t("auth_cli_added", name=user.username, role=t(f"auth_role_{user.role}"), venue=venue))
    return 0


def _list(store, _args: argparse.Namespace) -> int:  # noqa: ANN001
    from collector.web import accounts
    from collector.web.strings import t

    rows = accounts.users(store)
    if not rows:
        print(t("auth_cli_no_users"))
        return 0
    print(t("auth_cli_header"))
    for u in rows:
        print(t("auth_cli_row", name=u["username"], role=t(f"auth_role_{u['role']}"), venue=u["venue_id"] or "—",
                created=dt.datetime.fromtimestamp(u["created_at"], _CN).strftime("%Y-%m-%d %H:%M"),
                state=t("auth_state_disabled" if u["disabled"] else "auth_state_enabled")))
    return 0


def _disable(store, args: argparse.Namespace) -> int:  # noqa: ANN001
    from collector.web import accounts
    from collector.web.strings import t

    accounts.set_disabled(store, args.name, True)
    print(t("auth_cli_disabled", name=args.name))
    return 0


def _enable(store, args: argparse.Namespace) -> int:  # noqa: ANN001
    from collector.web import accounts
    from collector.web.strings import t

    accounts.set_disabled(store, args.name, False)
    print(t("auth_cli_enabled", name=args.name))
    return 0


def _password(store, args: argparse.Namespace) -> int:  # noqa: ANN001
    from collector.web import accounts
    from collector.web.strings import t

    if accounts.find_user(store, args.name) is None:  # before asking for a password, not after
        raise accounts.AccountError("auth_err_no_user", name=args.name)
    accounts.set_password(store, args.name, _read_password(args.password_file))
    print(t("auth_cli_password_set", name=args.name))
    return 0


def _read_password(path: Path | None) -> str:
    """From the file's first line, else typed twice without echo; checked before anything is stored."""
    from collector.web.accounts import AccountError, check_password
    from collector.web.strings import t

    if path is not None:
        try:
            password = path.read_text(encoding="utf-8").splitlines()[0] if path.stat().st_size else ""
        except (OSError, UnicodeDecodeError) as exc:
            raise _NoPassword(t("auth_cli_password_file", path=path, detail=exc)) from exc
    else:
        try:
            password = getpass.getpass(t("auth_cli_password"))
            again = getpass.getpass(t("auth_cli_password_again"))
        except EOFError as exc:
            raise _NoPassword(t("auth_cli_no_tty")) from exc
        if again != password:
            raise AccountError("auth_err_password_mismatch")
    check_password(password)
    return password
