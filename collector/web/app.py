"""The web application: one place builds it from the store and the configuration.

``create_app`` keeps the context every page module needs in ``app.state`` (the store, the
[schedule] time zone, the vault folder for inclusion proofs, the notification settings, a clock),
installs authentication first (sessions, /login, /logout, /static, default deny), then mounts
the pages and their JSON twins under ``/api/v1``:

- 总览 ``/`` (:mod:`.overview`), live through ``/api/v1/live`` (:mod:`.live`);
- 考点详情 ``/venues/<id>`` (:mod:`.venue`);
- 违规案件 ``/cases``, ``/cases/<id>``, exports (:mod:`.casepages`);
- 考前检查 ``/readiness`` (:mod:`.readiness`);
- 管理 ``/admin``, ``/maintenance`` (:mod:`.admin`).
"""

from __future__ import annotations

import time
from typing import Callable

from fastapi import FastAPI

from collector.config import CollectorConfig
from collector.store import Store
from collector.vault.wiring import vault_roots
from collector.web import admin, auth, casepages, live, overview, readiness, venue
from collector.web.render import WebContext, make_templates

API_DESCRIPTION = (
    "VenueGuard 考点合规监测: the data of every page as JSON. Authentication is the pages' session cookie "
    "(log in at /login); without it every /api/v1 endpoint answers 401. Venue operators (考点操作员) see only "
    "their venue: another venue's data answers 404. State-changing requests need the session's CSRF token in "
    "the X-CSRF-Token header."
)


def create_app(store: Store, cfg: CollectorConfig | None = None, *, tz: str | None = None,
               clock: Callable[[], float] = time.time) -> FastAPI:
    """The FastAPI application over ``store``.

    Args:
        store: the migrated SQL store.
        cfg: the collector configuration ([web] sessions and throttling, [schedule] time zone,
            the data folder whose vault the proofs come from, [notify]); embedded defaults if None.
        tz: overrides ``cfg.schedule.timezone`` (tests and tools that have no configuration).
        clock: the time source of the pages and the sessions (tests pin it to their exam days).
    """
    cfg = cfg or CollectorConfig()
    # No /docs or /redoc: FastAPI's pages load Swagger UI and ReDoc from a CDN, which the
    # authority's closed network cannot reach; the schema itself is at /openapi.json.
    app = FastAPI(title="VenueGuard collector", version="0.2.0", description=API_DESCRIPTION, docs_url=None,
                  redoc_url=None)
    app.state.ctx = WebContext(store=store, tz=tz or cfg.schedule.timezone, vault_roots=vault_roots(cfg),
                               notify=cfg.notify, clock=clock)
    app.state.templates = make_templates()  # before install: auth adds csrf_token to its globals
    auth.install(app, store, cfg.web, clock=clock)
    for module in (overview, live, venue, casepages, readiness):
        app.include_router(module.router)
    admin.add_routes(app, store, cfg)  # /admin/…, /maintenance and their API

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        """Liveness for service managers (public)."""
        return {"status": "ok"}

    return app

