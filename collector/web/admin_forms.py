"""The administration forms (POST): each CSRF-checked by its router, each change audited here.

A form that is refused is shown again with the reason in Chinese (status 400) and nothing
changed; a small change that worked redirects back (303) to its page, which says what was done;
an import shows what it did on the page. The imports also have JSON twins for scripts.
"""

from __future__ import annotations

import csv
import hashlib
import io
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from collector import maintenance
from collector.inventory import InventoryError, import_file, parse_csv
from collector.pki import pki_of
from collector.web import accounts
from collector.web.admin import (admin_only, agent_rows, collector_key, done, maintenance_rows, read_upload,
                                 schedule_rows, state_of, venue_exists, venue_rows, with_upload)
from collector.web.auth import User, audit, check_venue, csrf_protect, require, venue_filter
from collector.web.strings import t
from protocol.inventory import Device

declarers = require("admin", "venue")

def router() -> APIRouter:
    """Every POST of the administration, behind the CSRF check."""
    r = APIRouter(dependencies=[Depends(csrf_protect)], include_in_schema=False)
    r.post("/admin/inventory/import")(inventory_import)
    r.post("/admin/inventory/{venue_id}/device")(device_save)
    r.post("/admin/inventory/{venue_id}/device/delete")(device_delete)
    r.post("/admin/schedule/import")(schedule_import)
    r.post("/admin/agents/enroll")(enroll_agent)
    r.post("/admin/users/add")(user_add)
    r.post("/admin/users/{name}/disable")(user_disable)
    r.post("/admin/users/{name}/enable")(user_enable)
    r.post("/admin/users/{name}/password")(user_password)
    r.post("/maintenance/declare")(maintenance_declare)
    r.post("/maintenance/{window_id}/decide")(maintenance_decide)
    api = APIRouter(prefix="/api/v1/admin", dependencies=[Depends(csrf_protect)], tags=["admin"])
    api.post("/inventory")(api_inventory_import)
    api.post("/schedule")(api_schedule_import)
    r.include_router(api)
    return r


# -- inventory -----------------------------------------------------------------------------------

def _inventory_import(request: Request, upload: UploadFile) -> tuple[dict[str, int], list[str]]:
    """Import an uploaded CSV; (versions per venue, Chinese per-line errors). Audited."""
    st = state_of(request)
    got = read_upload(upload)
    if got is None:
        audit(request, "inventory.import", upload.filename or "", "too large", False)
        return {}, [t("admin_err_too_large", mb=10)]
    name, data = got
    digest = hashlib.sha256(data).hexdigest()[:16]
    try:
        versions = with_upload(name, data, lambda path: import_file(st.store, path))
    except InventoryError as exc:
        audit(request, "inventory.import", name, f"sha256 {digest}: {len(exc.errors)} errors", False)
        return {}, [str(e) for e in exc.errors]
    audit(request, "inventory.import", name, f"sha256 {digest}: " + ", ".join(f"{v} v{n}" for v, n in versions.items()))
    return versions, []


def inventory_import(request: Request, file: UploadFile = File(...), user: User = Depends(admin_only)) -> Response:
    """设备清单导入: all or nothing; every bad line shown in Chinese."""
    versions, errors = _inventory_import(request, file)
    return state_of(request).page(request, "admin_inventory.html", 400 if errors else 200,
                                  venues=venue_rows(state_of(request).store), errors=errors, imported=versions)


def api_inventory_import(request: Request, file: UploadFile = File(...), user: User = Depends(admin_only)) -> Response:
    """The same import for scripts: {"imported": {venue: version}} or 400 {"errors": [...]}."""
    versions, errors = _inventory_import(request, file)
    return JSONResponse({"imported": versions, "errors": errors}, status_code=400 if errors else 200)


def device_save(request: Request, venue_id: str, version: int = Form(...), original_mac: str = Form(""),
                mac: str = Form(""), ip: str = Form(""), role: str = Form(""), room: str = Form(""),
                name: str = Form(""), vendor: str = Form(""), stream: str = Form(""), http_port: str = Form("0"),
                channel: str = Form("0"), user: User = Depends(admin_only)) -> Response:
    """Add one device (no original MAC) or replace one; checked like a CSV line."""
    st = state_of(request)
    fields = {"mac": mac, "ip": ip, "role": role, "room": room, "name": name, "vendor": vendor, "stream": stream,
              "http_port": http_port or "0", "channel": channel or "0"}
    if not venue_exists(st.store, venue_id):
        return st.page(request, "auth_error.html", 404, message=t("auth_not_found"))
    inv = st.store.inventory(venue_id)
    try:
        device = _one_device(venue_id, fields)
        errors = _conflicts(inv.devices, device, original_mac, inv.version, version)
    except InventoryError as exc:
        errors = [e.message for e in exc.errors]
    if errors:
        audit(request, "inventory.device_save", f"{venue_id} {mac}", "; ".join(errors), False)
        return st.page(request, "admin_venue.html", 400, inventory=inv, editing=None, errors=errors,
                       form={"original_mac": original_mac, **fields})
    kept = [d for d in inv.devices if d.mac != original_mac]
    new_version = st.store.replace_inventory(venue_id, sorted([*kept, device], key=lambda d: d.mac))
    audit(request, "inventory.device_save", f"{venue_id} {device.mac}",
          f"{'replaces ' + original_mac if original_mac else 'added'}; version {new_version}")
    return done(f"/admin/inventory/{venue_id}", "device_saved")


def device_delete(request: Request, venue_id: str, mac: str = Form(...), version: int = Form(...),
                  user: User = Depends(admin_only)) -> Response:
    """Remove one device from a venue's inventory (a new version, pushed to its agents)."""
    st = state_of(request)
    if not venue_exists(st.store, venue_id):
        return st.page(request, "auth_error.html", 404, message=t("auth_not_found"))
    inv = st.store.inventory(venue_id)
    if inv.version != version or all(d.mac != mac for d in inv.devices):
        audit(request, "inventory.device_delete", f"{venue_id} {mac}", "stale form", False)
        return st.page(request, "admin_venue.html", 400, inventory=inv, editing=None, form=None,
                       errors=[t("admin_err_stale", version=inv.version)])
    new_version = st.store.replace_inventory(venue_id, [d for d in inv.devices if d.mac != mac])
    audit(request, "inventory.device_delete", f"{venue_id} {mac}", f"version {new_version}")
    return done(f"/admin/inventory/{venue_id}", "device_deleted")


def _one_device(venue_id: str, fields: dict[str, str]) -> Device:
    """Check one device exactly as a CSV line would be (same Chinese messages)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["venue_id", *fields])
    writer.writerow([venue_id, *fields.values()])
    return parse_csv(out.getvalue(), {venue_id})[venue_id][0]


def _conflicts(devices: tuple[Device, ...], device: Device, original_mac: str, current: int, seen: int) -> list[str]:
    """A stale form, or a MAC or fixed IP another device of the venue already has."""
    if current != seen:
        return [t("admin_err_stale", version=current)]
    others = [d for d in devices if d.mac != original_mac]
    errors = []
    if original_mac and all(d.mac != original_mac for d in devices):
        errors.append(t("admin_err_stale", version=current))
    if any(d.mac == device.mac for d in others):
        errors.append(t("admin_err_mac_taken", mac=device.mac))
    clash = next((d for d in others if device.ip and d.ip == device.ip), None)
    if clash:
        errors.append(t("admin_err_ip_taken", ip=device.ip, name=clash.name or clash.mac))
    return errors


# -- schedule ------------------------------------------------------------------------------------

def _schedule_import(request: Request, upload: UploadFile, by: str) -> dict[str, Any]:
    """Import an uploaded plan; the result, warnings and bilingual per-row errors. Audited."""
    from collector.schedule import ScheduleError, import_plan

    st = state_of(request)
    got = read_upload(upload)
    if got is None:
        audit(request, "schedule.import", upload.filename or "", "too large", False)
        return {"errors": [t("admin_err_too_large", mb=10)], "warnings": [], "result": None}
    name, data = got
    digest = hashlib.sha256(data).hexdigest()[:16]
    try:
        result, warnings = with_upload(name, data, lambda path: import_plan(
            st.store, path, by=by, timezone=st.cfg.schedule.timezone, now=st.auth.clock()))
    except ScheduleError as exc:
        audit(request, "schedule.import", name, f"sha256 {digest}: {len(exc.errors)} errors", False)
        return {"errors": [str(p) for p in exc.errors], "warnings": [], "result": None}
    audit(request, "schedule.import", name, f"sha256 {digest}: version {result.version}, {result.sessions} sessions")
    summary = {"version": result.version, "sessions": result.sessions, "months": list(result.months),
               "same_file_as": result.same_file_as, "source": name,
               "venues": {v: {"added": len(c.added), "changed": len(c.changed), "removed": len(c.removed),
                              "unchanged": c.unchanged} for v, c in sorted(result.changes.items())}}
    return {"errors": [], "warnings": [str(p) for p in warnings], "result": summary}


def schedule_import(request: Request, file: UploadFile = File(...), user: User = Depends(admin_only)) -> Response:
    """考试安排导入: all or nothing; errors and warnings per row in Chinese and English."""
    st = state_of(request)
    out = _schedule_import(request, file, user.username)
    return st.page(request, "admin_schedule.html", 400 if out["errors"] else 200, versions=schedule_rows(st.store), **out)


def api_schedule_import(request: Request, file: UploadFile = File(...), user: User = Depends(admin_only)) -> Response:
    """The same import for scripts: {"result", "warnings", "errors"}; 400 when refused."""
    out = _schedule_import(request, file, user.username)
    return JSONResponse(out, status_code=400 if out["errors"] else 200)


# -- enrollment ----------------------------------------------------------------------------------

def enroll_agent(request: Request, agent_id: str = Form(""), venue_id: str = Form(""), venue_name: str = Form(""),
                 rekey: str = Form(""), user: User = Depends(admin_only)) -> Response:
    """Register an agent and hand its bundle (with its private key) over as a download, once."""
    from collector.enroll import enroll
    from protocol.errors import ProtocolError

    st = state_of(request)
    agent_id, venue_id = agent_id.strip(), venue_id.strip()
    error = ""
    if any(a["id"] == agent_id for a in agent_rows(st.store)) and rekey != "yes":
        error = t("admin_enroll_exists", agent=agent_id)
    if not error:
        b = st.cfg.broker
        try:
            bundle = with_upload("agent.bundle.json", b"", lambda path: enroll(
                st.store, collector_key(st.cfg), agent_id, venue_id, venue_name=venue_name.strip() or None,
                broker_host=b.public_host or b.host, broker_port=b.public_port or b.port, out=path,
                pki=pki_of(st.cfg.collector.data_dir)).read_bytes())
        except ProtocolError as exc:
            error = t("admin_enroll_bad_id", detail=exc.detail)
    if error:
        audit(request, "agent.enroll", agent_id, error, False)
        return st.page(request, "admin_agents.html", 400, agents=agent_rows(st.store), venues=st.store.venues(),
                       error=error)
    audit(request, "agent.enroll", agent_id, f"venue {venue_id}{' (re-keyed)' if rekey == 'yes' else ''}")
    return Response(bundle, media_type="application/json", headers={
        "Content-Disposition": f'attachment; filename="{agent_id}.bundle.json"', "Cache-Control": "no-store"})


# -- users ---------------------------------------------------------------------------------------

def _users_error(request: Request, message: str, target: str, action: str) -> Response:
    st = state_of(request)
    audit(request, action, target, message, False)
    return st.page(request, "admin_users.html", 400, users=accounts.users(st.store), venues=st.store.venues(),
                   error=message)


def user_add(request: Request, username: str = Form(""), role: str = Form(""), venue_id: str = Form(""),
             password: str = Form(""), password2: str = Form(""), user: User = Depends(admin_only)) -> Response:
    """Add an account; the password typed twice."""
    st = state_of(request)
    try:
        if password != password2:
            raise accounts.AccountError("auth_err_password_mismatch")
        made = accounts.add_user(st.store, username, password, role, venue_id or None, st.auth.clock())
    except accounts.AccountError as exc:
        return _users_error(request, t(exc.key, **exc.params), username, "user.add")
    audit(request, "user.add", made.username, f"{made.role} {made.venue_id or ''}".strip())
    return done("/admin/users", "user_added")


def user_disable(request: Request, name: str, user: User = Depends(admin_only)) -> Response:
    """Disable an account and end its sessions (never one's own, never the last admin)."""
    try:
        if name == user.username:
            raise accounts.AccountError("auth_err_self")
        accounts.set_disabled(state_of(request).store, name, True)
    except accounts.AccountError as exc:
        return _users_error(request, t(exc.key, **exc.params), name, "user.disable")
    audit(request, "user.disable", name)
    return done("/admin/users", "user_disabled")


def user_enable(request: Request, name: str, user: User = Depends(admin_only)) -> Response:
    """Re-enable an account."""
    try:
        accounts.set_disabled(state_of(request).store, name, False)
    except accounts.AccountError as exc:
        return _users_error(request, t(exc.key, **exc.params), name, "user.enable")
    audit(request, "user.enable", name)
    return done("/admin/users", "user_enabled")


def user_password(request: Request, name: str, password: str = Form(""), password2: str = Form(""),
                  user: User = Depends(admin_only)) -> Response:
    """Set a new password (the user's sessions end)."""
    try:
        if password != password2:
            raise accounts.AccountError("auth_err_password_mismatch")
        accounts.set_password(state_of(request).store, name, password)
    except accounts.AccountError as exc:
        return _users_error(request, t(exc.key, **exc.params), name, "user.password")
    audit(request, "user.password", name)
    return done("/admin/users", "password_set")


# -- maintenance windows -------------------------------------------------------------------------

def maintenance_declare(request: Request, venue_id: str = Form(""), start: str = Form(""), end: str = Form(""),
                        rules: str = Form(""), reason: str = Form(""), user: User = Depends(declarers)) -> Response:
    """A venue operator (own venue only: another is 404) or an admin declares a window."""
    st = state_of(request)
    check_venue(user, venue_id)
    form = {"venue_id": venue_id, "start": start, "end": end, "rules": rules, "reason": reason}
    try:
        window = _window(st.cfg.schedule.timezone, start, end, rules, reason)
        if not venue_exists(st.store, venue_id):
            raise _Refused(t("auth_err_unknown_venue", venue=venue_id))
        wid = maintenance.declare(st.store, venue_id, *window, user.username, st.auth.clock())
    except (_Refused, maintenance.MaintenanceError) as exc:
        message = str(exc) if isinstance(exc, _Refused) else t("admin_maint_refused", detail=exc)
        audit(request, "maintenance.declare", venue_id, message, False)
        return _maintenance_page(request, user, 400, message, form)
    audit(request, "maintenance.declare", f"{venue_id} #{wid}", f"{start} – {end} rules {rules or 'all'}: {reason}")
    return done("/maintenance", "declared")


def maintenance_decide(request: Request, window_id: int, decision: str = Form(""), reason: str = Form(""),
                       user: User = Depends(admin_only)) -> Response:
    """The authority approves or rejects (with a reason) a declared window."""
    st = state_of(request)
    try:
        if decision not in ("approve", "reject"):
            raise _Refused(t("admin_maint_err_decision"))
        if decision == "reject" and not reason.strip():
            raise _Refused(t("admin_maint_err_reject_reason"))
        row = maintenance.decide(st.store, window_id, decision == "approve", user.username, reason, st.auth.clock())
    except (_Refused, maintenance.MaintenanceError) as exc:
        message = str(exc) if isinstance(exc, _Refused) else t("admin_maint_refused", detail=exc)
        audit(request, f"maintenance.{decision or 'decide'}"[:64], f"#{window_id}", message, False)
        return _maintenance_page(request, user, 400, message, {})
    audit(request, f"maintenance.{decision}", f"{row['venue_id']} #{window_id}", reason)
    return done("/maintenance", "approved" if decision == "approve" else "rejected")


class _Refused(ValueError):
    """A form value refused here, already in Chinese."""


def _window(tz: str, start: str, end: str, rules: str, reason: str) -> tuple[float, float, list[int], str]:
    """The declaration's fields checked, in Chinese: times in the schedule's zone, rule ids, a reason."""
    begin, finish = _local_time(start, tz), _local_time(end, tz)
    if finish <= begin:
        raise _Refused(t("admin_maint_err_order"))
    if finish - begin > maintenance.MAX_HOURS * 3600:
        raise _Refused(t("admin_maint_err_long", hours=maintenance.MAX_HOURS))
    try:
        ids = [int(x) for x in rules.replace("，", ",").split(",") if x.strip()]
    except ValueError:
        raise _Refused(t("admin_maint_err_rules", value=rules)) from None
    if not reason.strip():
        raise _Refused(t("admin_maint_err_reason"))
    return begin, finish, ids, reason.strip()


def _local_time(value: str, tz: str) -> float:
    """``2026-12-05T07:00`` (a datetime-local field) or ``2026-12-05 07:00`` in ``tz``."""
    from zoneinfo import ZoneInfo

    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise _Refused(t("admin_maint_err_time", value=value)) from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=ZoneInfo(tz))).timestamp()


def _maintenance_page(request: Request, user: User, status: int, error: str, form: dict[str, str]) -> Response:
    st = state_of(request)
    venues = [v for v in st.store.venues() if venue_filter(user) in (None, v["id"])]
    return st.page(request, "admin_maintenance.html", status, windows=maintenance_rows(st.store, user), venues=venues,
                   error=error, form=form)
