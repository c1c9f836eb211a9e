"""Administration (管理): inventories, the exam plan, agent enrollment, users, the vault's state and
the audit trail — for the authority's administrators only — and maintenance windows (特殊情况),
which venue operators declare for their own venue and administrators decide.

Each page has its JSON twin under ``/api/v1/admin/…`` (``/api/v1/maintenance``) with the same
authorisation. Every form is CSRF-protected and every change audited. The work itself is done by
the same functions as the CLI (:func:`collector.inventory.import_file`,
:func:`collector.schedule.import_plan`, :func:`collector.enroll.enroll`,
:mod:`collector.maintenance`, :mod:`collector.web.accounts`), so both refuse in the same words.
Call :func:`add_routes` after :func:`collector.web.auth.install`.
"""

from __future__ import annotations

import datetime as dt
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from collector import keys, maintenance
from collector.config import CollectorConfig
from collector.store import Store, schema
from collector.vault import checkpoints
from collector.vault.wiring import vault_dir, witness_dir
from collector.web import accounts
from collector.web.auth import AuthState, User, require, venue_filter
from collector.web.strings import t

MAX_UPLOAD = 10 << 20  # an inventory or a monthly plan is kilobytes; refuse anything absurd
DONE = ("user_added", "user_disabled", "user_enabled", "password_set", "device_saved", "device_deleted", "declared",
        "approved", "rejected")
admin_only = require("admin")
anyone = require("admin", "viewer", "venue")


@dataclass
class AdminState:
    """What the routes share: the store, the whole configuration, the templates, the clock."""

    store: Store
    cfg: CollectorConfig
    auth: AuthState

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.cfg.schedule.timezone)

    def when(self, ts: float | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
        """A time in the schedule's zone, as staff read it."""
        return "—" if ts is None else dt.datetime.fromtimestamp(ts, self.tz).strftime(fmt)

    def page(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        """Render an admin template with the page helpers."""
        done = request.query_params.get("done", "")
        context.setdefault("done", t(f"admin_done_{done}") if done in DONE else "")
        return self.auth.templates.TemplateResponse(request, name, {"when": self.when, **context}, status_code=status)


def add_routes(app: FastAPI, store: Store, cfg: CollectorConfig) -> None:
    """Mount /admin/…, /maintenance and their JSON API on an app that has auth installed."""
    auth_state: AuthState | None = getattr(app.state, "auth", None)
    if auth_state is None:
        raise RuntimeError("call collector.web.auth.install(app, …) before admin.add_routes")
    from collector.web import admin_forms  # the POST handlers; they use the helpers below

    app.state.admin = AdminState(store, cfg, auth_state)
    app.include_router(_pages())
    app.include_router(_api())
    app.include_router(admin_forms.router())


def state_of(request: Request) -> AdminState:
    """The admin state of the app serving ``request``."""
    return request.app.state.admin


# -- data the pages and the API share ------------------------------------------------------------

def venue_rows(store: Store) -> list[dict[str, Any]]:
    """Every venue with its inventory version, device count and agent count."""
    v, d, a = schema.venues.c, schema.devices.c, schema.agents.c
    with store.engine.connect() as conn:
        devices = dict(conn.execute(sa.select(d.venue_id, sa.func.count()).group_by(d.venue_id)).all())
        agents = dict(conn.execute(sa.select(a.venue_id, sa.func.count()).group_by(a.venue_id)).all())
        rows = conn.execute(sa.select(v.id, v.name, v.inventory_version).order_by(v.id)).all()
    return [{"id": r.id, "name": r.name, "inventory_version": int(r.inventory_version),
             "devices": int(devices.get(r.id, 0)), "agents": int(agents.get(r.id, 0))} for r in rows]


def venue_exists(store: Store, venue_id: str) -> bool:
    """Whether ``venue_id`` is registered."""
    with store.engine.connect() as conn:
        return conn.execute(sa.select(schema.venues.c.id).where(schema.venues.c.id == venue_id)).first() is not None


def agent_rows(store: Store) -> list[dict[str, Any]]:
    """Enrolled agents, for the enrollment page."""
    return [{"id": a.id, "venue_id": a.venue_id, "online": a.online, "revoked": a.revoked, "last_seen": a.last_seen}
            for a in store.agents()]


def schedule_rows(store: Store) -> list[dict[str, Any]]:
    """Every plan import, newest first."""
    from collector.schedule import versions

    return [{"id": v.id, "imported_at": v.imported_at, "imported_by": v.imported_by, "source": v.source,
             "sha256": v.sha256, "months": list(v.months), "sessions": v.sessions, "venues": list(v.venues)}
            for v in reversed(versions(store))]


def vault_status(cfg: CollectorConfig, store: Store, now: float) -> dict[str, Any]:
    """The newest checkpoint here and at the witness, their age, the segments' size, and the last
    ``vault verify`` run with its age.

    Two different proofs: a checkpoint at most ``[vault] checkpoint_interval`` old shows the vault
    is being sealed while the collector runs; a recent passing verify shows nothing sealed was
    altered since (it re-hashes every leaf, so it runs from the command line, not from the page).
    """
    root = vault_dir(cfg)
    segments = sorted(root.glob("seg-*.log")) if root.exists() else []
    last = store.last_vault_verification()
    if last is not None:
        last["age_seconds"] = round(now - last["finished_at"], 1)
    out: dict[str, Any] = {"folder": str(root), "segments": len(segments),
                           "bytes": sum(p.stat().st_size for p in segments),
                           "checkpoint_interval": cfg.vault.checkpoint_interval, "last_verify": last}
    for name, folder in (("checkpoint", root / checkpoints.FOLDER), ("witness", witness_dir(cfg))):
        try:
            doc = checkpoints.latest(folder)
        except (OSError, ValueError):
            doc = None
        out[name] = None if doc is None else {"n": int(doc["n"]), "leaves": int(doc["size"]), "time": float(doc["time"]),
                                              "age_seconds": round(now - float(doc["time"]), 1)}
    cp = out["checkpoint"]
    out["fresh"] = cp is not None and cp["age_seconds"] <= 3 * cfg.vault.checkpoint_interval
    return out


def maintenance_rows(store: Store, user: User) -> list[dict[str, Any]]:
    """Maintenance windows the user may see, newest first."""
    return maintenance.windows(store, venue_filter(user))


# -- pages ---------------------------------------------------------------------------------------

def _pages() -> APIRouter:
    router = APIRouter(include_in_schema=False)
    get = router.get
    get("/admin", response_class=HTMLResponse)(admin_home)
    get("/admin/inventory", response_class=HTMLResponse)(inventory_page)
    get("/admin/inventory/{venue_id}", response_class=HTMLResponse)(venue_page)
    get("/admin/schedule", response_class=HTMLResponse)(schedule_page)
    get("/admin/agents", response_class=HTMLResponse)(agents_page)
    get("/admin/users", response_class=HTMLResponse)(users_page)
    get("/admin/audit", response_class=HTMLResponse)(audit_page)
    get("/maintenance", response_class=HTMLResponse)(maintenance_page)
    return router


def admin_home(request: Request, user: User = Depends(admin_only)) -> Response:
    """管理 home: the sections, the vault's state and the latest audit rows."""
    st = state_of(request)
    return st.page(request, "admin.html", vault=vault_status(st.cfg, st.store, st.auth.clock()),
                   audit_rows=accounts.audit_rows(st.store, limit=10), venues=len(st.store.venues()),
                   users=len(accounts.users(st.store)))


def inventory_page(request: Request, user: User = Depends(admin_only)) -> Response:
    """Venues with their inventory versions, and the CSV import form."""
    st = state_of(request)
    return st.page(request, "admin_inventory.html", venues=venue_rows(st.store), errors=[], imported={})


def venue_page(request: Request, venue_id: str, edit: str = "", user: User = Depends(admin_only)) -> Response:
    """One venue's devices, each editable and deletable, and a form to add one."""
    st = state_of(request)
    if not venue_exists(st.store, venue_id):
        return st.page(request, "auth_error.html", 404, message=t("auth_not_found"))
    inv = st.store.inventory(venue_id)
    editing = next((d for d in inv.devices if d.mac == edit), None)
    return st.page(request, "admin_venue.html", inventory=inv, editing=editing, errors=[], form=None)


def schedule_page(request: Request, user: User = Depends(admin_only)) -> Response:
    """The plan's import form and every version imported so far."""
    st = state_of(request)
    return st.page(request, "admin_schedule.html", versions=schedule_rows(st.store), errors=[], warnings=[], result=None)


def agents_page(request: Request, user: User = Depends(admin_only)) -> Response:
    """Enrolled agents and the enrollment form."""
    st = state_of(request)
    return st.page(request, "admin_agents.html", agents=agent_rows(st.store), venues=st.store.venues(), error="")


def users_page(request: Request, user: User = Depends(admin_only)) -> Response:
    """Every account; forms to add, disable, enable and reset passwords."""
    st = state_of(request)
    return st.page(request, "admin_users.html", users=accounts.users(st.store), venues=st.store.venues(), error="")


def audit_page(request: Request, user_name: str = "", action: str = "", before: int | None = None,
               user: User = Depends(admin_only)) -> Response:
    """The audit trail, newest first, 200 rows a page, by user or action prefix."""
    st = state_of(request)
    rows = accounts.audit_rows(st.store, 200, user_name or None, action or None, before)
    return st.page(request, "admin_audit.html", rows=rows, user_name=user_name, action=action,
                   older=rows[-1]["id"] if len(rows) == 200 else None)


def maintenance_page(request: Request, user: User = Depends(anyone)) -> Response:
    """Windows the user may see; the declaration form for admins and operators; decisions for admins."""
    st = state_of(request)
    venues = [v for v in st.store.venues() if venue_filter(user) in (None, v["id"])]
    return st.page(request, "admin_maintenance.html", windows=maintenance_rows(st.store, user), venues=venues,
                   error="", form={})


# -- JSON ----------------------------------------------------------------------------------------

def _api() -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["admin"])
    get = router.get
    get("/admin/inventory")(api_inventory)
    get("/admin/inventory/{venue_id}")(api_venue_inventory)
    get("/admin/schedule")(api_schedule)
    get("/admin/agents")(api_agents)
    get("/admin/users")(api_users)
    get("/admin/vault")(api_vault)
    get("/admin/audit")(api_audit)
    get("/maintenance", tags=["maintenance"])(api_maintenance)
    return router


def api_inventory(request: Request, user: User = Depends(admin_only)) -> list[dict[str, Any]]:
    """Venues with inventory version, device and agent counts."""
    return venue_rows(state_of(request).store)


def api_venue_inventory(request: Request, venue_id: str, user: User = Depends(admin_only)) -> dict[str, Any]:
    """One venue's registered devices."""
    st = state_of(request)
    if not venue_exists(st.store, venue_id):
        raise HTTPException(404, "no such venue")
    inv = st.store.inventory(venue_id)
    return {"venue_id": venue_id, "version": inv.version, "devices": [d.to_json() for d in inv.devices]}


def api_schedule(request: Request, user: User = Depends(admin_only)) -> list[dict[str, Any]]:
    """Every plan import, newest first."""
    return schedule_rows(state_of(request).store)


def api_agents(request: Request, user: User = Depends(admin_only)) -> list[dict[str, Any]]:
    """Enrolled agents."""
    return agent_rows(state_of(request).store)


def api_users(request: Request, user: User = Depends(admin_only)) -> list[dict[str, Any]]:
    """Accounts (no hashes)."""
    return accounts.users(state_of(request).store)


def api_vault(request: Request, user: User = Depends(admin_only)) -> dict[str, Any]:
    """Newest checkpoint and its age, the witness's, the segments' size, the last ``vault verify`` run."""
    st = state_of(request)
    return vault_status(st.cfg, st.store, st.auth.clock())


def api_audit(request: Request, limit: int = 200, user_name: str = "", action: str = "", before: int | None = None,
              user: User = Depends(admin_only)) -> list[dict[str, Any]]:
    """Audit rows, newest first (``before`` = an id, to page back)."""
    return accounts.audit_rows(state_of(request).store, min(max(limit, 1), 1000), user_name or None, action or None,
                               before)


def api_maintenance(request: Request, user: User = Depends(anyone)) -> list[dict[str, Any]]:
    """Maintenance windows the user may see (an operator: its venue's)."""
    return maintenance_rows(state_of(request).store, user)


# -- helpers for the form handlers ----------------------------------------------------------------

def read_upload(upload: UploadFile) -> tuple[str, bytes] | None:
    """A safe file name (extension kept, it decides the format) and the bytes; None when too large."""
    data = upload.file.read(MAX_UPLOAD + 1)
    if len(data) > MAX_UPLOAD:
        return None
    stem = Path(upload.filename or "upload").name
    safe = re.sub(r"[^\w.\-]", "_", stem)[-120:] or "upload"
    return safe, data


def with_upload(name: str, data: bytes, run: Callable[[Path], Any]) -> Any:
    """Run ``run`` on the upload written to a private temporary file (the importers read paths)."""
    with tempfile.TemporaryDirectory(prefix="vg-upload-") as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        return run(path)


def collector_key(cfg: CollectorConfig):  # noqa: ANN201 - Ed25519PrivateKey
    """The collector's signing key (bundles name its public half)."""
    return keys.load_or_create(cfg.collector.data_dir / "collector.key")


def done(url: str, key: str) -> RedirectResponse:
    """Back to a page after a change, which then says what was done."""
    return RedirectResponse(f"{url}?done={key}", status_code=303)


def now(request: Request) -> float:
    """The app's clock (tests move it)."""
    return state_of(request).auth.clock()

