"""``venueguard-collector pki init|revoke|collector-cert|crl``: the agents' CA, from the operator's side.

Messages come from ``collector/strings``; no key material is ever printed or logged, only paths.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from collector import config
from collector.pki import Pki, PkiError, pki_of
from collector.strings import t


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``pki init``, ``pki revoke``, ``pki collector-cert`` and ``pki crl``."""
    pki = sub.add_parser("pki", help="the agents' certificate authority (mutual TLS with the broker)")
    psub = pki.add_subparsers(dest="pki_command", required=True)
    init = psub.add_parser("init", help="create the CA, the broker's server certificate and the collector's "
                                        "client certificate under <data_dir>/pki")
    init.add_argument("--broker-host", action="append", default=[], metavar="NAME_OR_IP",
                      help="name or address agents and the collector dial (repeat for more); "
                           "default: [broker] public_host, else host")
    init.add_argument("--collector-id", default=None,
                      help="CN of the collector's certificate (its broker identity); default: [broker] client_id")
    revoke = psub.add_parser("revoke", help="revoke an agent's certificates, rewrite the CRL, mark it revoked")
    revoke.add_argument("agent_id")
    extra = psub.add_parser("collector-cert", help="a client certificate for another collector identity "
                                                   "(one per collector process; add its block to the broker ACL)")
    extra.add_argument("collector_id", help="the [broker] client_id of that collector")
    psub.add_parser("crl", help="sign the CRL again (after restoring a backup, or to refresh its dates)")


def handler(cfg: config.CollectorConfig, args: argparse.Namespace) -> int:
    """Run the ``pki`` sub-command; a refused operation exits 2 with the reason."""
    command: Callable[[config.CollectorConfig, Pki, argparse.Namespace], int] = {
        "init": _init, "revoke": _revoke, "collector-cert": _collector_cert, "crl": _crl}[args.pki_command]
    try:
        return command(cfg, pki_of(cfg.collector.data_dir), args)
    except PkiError as exc:
        print(t("pki_error", detail=exc.detail), file=sys.stderr)
        return 2


def _init(cfg: config.CollectorConfig, pki: Pki, args: argparse.Namespace) -> int:
    hosts = args.broker_host or [cfg.broker.public_host or cfg.broker.host]
    collector_id = args.collector_id or cfg.client_id
    pki.init(hosts, collector_id)
    print(t("pki_inited", dir=pki.folder, hosts=", ".join(hosts), collector_id=collector_id))
    return 0


def _revoke(cfg: config.CollectorConfig, pki: Pki, args: argparse.Namespace) -> int:
    """Revoke the certificates (the broker refuses the agent) and the registry entry (ingest
    refuses its envelopes even through a broker that has not reloaded the CRL yet)."""
    from collector.runtime import open_store
    from collector.store import schema

    serials = pki.revoke_agent(args.agent_id) if pki.exists() else []  # plain-MQTT sites: registry only
    store = open_store(cfg)
    try:
        with store.engine.begin() as conn:
            known = conn.execute(schema.agents.update().where(schema.agents.c.id == args.agent_id)
                                 .values(revoked=True)).rowcount
    finally:
        store.close()
    if not serials and not known:
        print(t("pki_unknown_agent", agent_id=args.agent_id), file=sys.stderr)
        return 2
    if serials:
        print(t("pki_revoked", agent_id=args.agent_id, count=len(serials), crl=pki.path("crl.pem")))
    else:
        print(t("pki_revoke_nocert", agent_id=args.agent_id))
    if cfg.cluster.enabled:
        print(t("pki_revoked_cluster", agent_id=args.agent_id))
    return 0


def _collector_cert(_cfg: config.CollectorConfig, pki: Pki, args: argparse.Namespace) -> int:
    cert, key = pki.issue_collector(args.collector_id)
    print(t("pki_collector_cert", collector_id=args.collector_id, cert=cert, key=key))
    return 0


def _crl(_cfg: config.CollectorConfig, pki: Pki, _args: argparse.Namespace) -> int:
    path = pki.write_crl()
    print(t("pki_crl_written", crl=path, count=len(pki.revoked_serials())))
    return 0

