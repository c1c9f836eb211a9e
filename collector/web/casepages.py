"""违规案件: the list with filters and per-venue annual counts, one case with its clause, exam
session, evidence timeline, actions and the forms to act on it, the vault inclusion proofs, and
the exports (XLSX, CSV) of what the filters select; plus the same as JSON.

Who may act (issue 8): a venue operator acknowledges its own venue's cases (the venue's
explanation), the admin may too; the authority's roles (admin, viewer) confirm or dismiss. Every
action goes through :func:`collector.cases.act`, so it is a ``case_actions`` row the running
collector seals into the vault, and each is written to the audit trail.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import asdict, dataclass
from typing import Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from collector import cases as case_store
from collector.store import Store, schema
from collector.web import auth
from collector.web.auth import User
from collector.web.render import XLSX_TYPE, WebContext, ctx, day_start, page, parse_day, when
from collector.web.strings import t

SEVERITIES = ("violation", "warning", "notice")
CASE_STATES = ("open", "closed")
STATUSES = ("new", "acknowledged", "confirmed", "dismissed")
#: Who may take each action through the pages (collector.cases.ACTIONS says from which status).
ACTION_ROLES = {"acknowledge": ("venue", "admin"), "confirm": ("admin", "viewer"), "dismiss": ("admin", "viewer")}
LIST_LIMIT = 500
EXPORT_LIMIT = 100_000
EXPORT_COLUMNS = ("id", "venue_id", "venue_name", "rule_id", "title", "article", "severity", "state", "status",
                  "room", "subject", "session_id", "agent_id", "first_seen", "last_seen", "closed_at", "events")

router = APIRouter()


@dataclass(frozen=True)
class CaseFilter:
    """The list's filters (all optional); the exports take the same."""

    venue: str | None = None
    rule: int | None = None
    article: str | None = None
    severity: str | None = None
    state: str | None = None
    status: str | None = None
    start: dt.date | None = None  # cases that lasted into [start, end] (local days, inclusive)
    end: dt.date | None = None

    def query_string(self) -> str:
        """The filters as a query string, for links to the exports."""
        from urllib.parse import urlencode

        return urlencode({k: str(v) for k, v in asdict(self).items() if v not in (None, "")})


def case_filter(venue: str | None = Query(None, description="venue id"),
                rule: str | None = Query(None, description="rule id, e.g. 510"),
                article: str | None = Query(None, description="clause article, e.g. 三(二)5 (the rule's clause or an `also` clause)"),
                severity: str | None = Query(None, description="violation / warning / notice"),
                state: str | None = Query(None, description="open / closed"),
                status: str | None = Query(None, description="new / acknowledged / confirmed / dismissed"),
                start: str | None = Query(None, alias="from", description="first day, YYYY-MM-DD"),
                end: str | None = Query(None, alias="to", description="last day, YYYY-MM-DD")) -> CaseFilter:
    """Dependency: the filters from the query string; a bad value is a 400 in Chinese."""
    for value, allowed in ((severity, SEVERITIES), (state, CASE_STATES), (status, STATUSES)):
        if value and value not in allowed:
            raise HTTPException(400, t("ui_bad_filter", value=value))
    if rule and not rule.strip().isdigit():
        raise HTTPException(400, t("ui_bad_filter", value=rule))
    return CaseFilter(venue or None, int(rule) if rule else None, (article or "").strip() or None, severity or None,
                      state or None, status or None, parse_day(start), parse_day(end))


# -- reading -------------------------------------------------------------------------------------

def rule_catalogue(store: Store) -> dict[int, dict[str, Any]]:
    """Each rule that has cases: its title and clause as its newest case quotes them (so the
    article filter works on what the cases say, whatever rule files are loaded now)."""
    c = schema.cases.c
    with store.engine.connect() as conn:
        newest = [i for (i,) in conn.execute(sa.select(sa.func.max(c.id)).group_by(c.rule_id))]
        rows = conn.execute(sa.select(c.rule_id, c.title, c.clause).where(c.id.in_(newest))).all() if newest else []
    out = {}
    for rule_id, title, clause in rows:
        articles = [clause.get("article", "")] + [a.get("article", "") for a in clause.get("also", [])]
        out[int(rule_id)] = {"rule_id": int(rule_id), "title": title, "article": clause.get("article", ""),
                             "articles": [a for a in articles if a]}
    return dict(sorted(out.items()))


def list_cases(store: Store, f: CaseFilter, scope: str | None, tz: str, limit: int = LIST_LIMIT) -> tuple[list[dict[str, Any]], bool]:
    """Cases matching ``f`` within ``scope`` (a venue operator's venue), newest first, and whether
    there were more than ``limit``."""
    c = schema.cases.c
    q = sa.select(schema.cases).order_by(c.opened_at.desc(), c.id.desc()).limit(limit + 1)
    for col, value in ((c.venue_id, f.venue), (c.venue_id, scope), (c.rule_id, f.rule), (c.severity, f.severity),
                       (c.state, f.state), (c.status, f.status)):
        if value is not None:
            q = q.where(col == value)
    if f.article is not None:
        rules = [r for r, info in rule_catalogue(store).items() if f.article in info["articles"]]
        q = q.where(c.rule_id.in_(rules or [-1]))
    if f.start is not None:  # still going on, or closed after the period began
        q = q.where(sa.or_(c.closed_at.is_(None), c.closed_at >= day_start(f.start, tz)))
    if f.end is not None:
        q = q.where(c.first_seen < day_start(f.end + dt.timedelta(days=1), tz))
    names = venue_names(store)
    with store.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(q).mappings()]
    for r in rows:
        r["venue_name"] = names.get(r["venue_id"], r["venue_id"])
    return rows[:limit], len(rows) > limit


def venue_names(store: Store) -> dict[str, str]:
    v = schema.venues.c
    with store.engine.connect() as conn:
        return dict(conn.execute(sa.select(v.id, v.name)).all())


def annual(store: Store, scope: str | None, tz: str) -> dict[str, dict[int, int]]:
    """Confirmed cases per venue and year (collector.cases.annual_counts), within ``scope``."""
    counts = case_store.annual_counts(store, None, tz)
    return {v: y for v, y in sorted(counts.items()) if scope is None or v == scope}


def detail(store: Store, case_id: int, user: User) -> dict[str, Any]:
    """One case as ``user`` may see it (404 when missing or another venue's), with its venue name,
    the exam session it affected and what this user may do with it."""
    try:
        case = case_store.case_detail(store, case_id)
    except case_store.CaseError as exc:
        raise HTTPException(404, t("ui_no_such_case", id=case_id)) from exc
    auth.check_venue(user, case["venue_id"])
    case["venue_name"] = venue_names(store).get(case["venue_id"], case["venue_id"])
    case["session"] = _session(store, case["venue_id"], case["session_id"])
    case["may"] = [a for a in ACTION_ROLES if may(user, a, case)]
    return case


def _session(store: Store, venue_id: str, session_id: str) -> dict[str, Any] | None:
    """The exam session a case names: the one in force, else the newest retired row (the plan as
    it was when the case happened)."""
    if not session_id:
        return None
    e = schema.exam_sessions.c
    q = (sa.select(e.session_id, e.room, e.subject, e.start, e.end, e.retired_in)
         .where(e.venue_id == venue_id, e.session_id == session_id)
         .order_by(e.retired_in.is_not(None), e.id.desc()).limit(1))
    with store.engine.connect() as conn:
        row = conn.execute(q).mappings().first()
    return dict(row) if row else None


def may(user: User, action: str, case: dict[str, Any]) -> bool:
    """Whether ``user``'s role may take ``action`` on ``case`` now (role, venue and status)."""
    starts = case_store.ACTIONS[action][1]
    own = user.role != "venue" or user.venue_id == case["venue_id"]
    return user.role in ACTION_ROLES[action] and own and case["status"] in starts


# -- acting --------------------------------------------------------------------------------------

def take_action(request: Request, c: WebContext, user: User, case_id: int, action: str, reason: str) -> dict[str, Any]:
    """Check and take one action; returns the case after it. Refusals raise HTTPException (403
    wrong role, 404 not visible, 400 no reason, 409 not in this status), each audited."""
    case = detail(c.store, case_id, user)
    target = f"case {case_id}"
    if action not in ACTION_ROLES:
        raise HTTPException(400, t("ui_bad_filter", value=action))
    if user.role not in ACTION_ROLES[action]:
        auth.audit(request, f"case.{action}", target, "role may not", ok=False)
        raise auth.Forbidden()
    if not reason.strip():
        raise HTTPException(400, t("ui_case_reason_required"))
    if action not in case["may"]:
        auth.audit(request, f"case.{action}", target, f"status {case['status']}", ok=False)
        raise HTTPException(409, t("ui_case_not_now", status=t(f"status.{case['status']}")))
    try:
        fresh = case_store.act(c.store, case_id, action, user.username, reason.strip(), c.now(), c.notify,
                               role=user.role)
    except case_store.CaseError as exc:  # another person acted first
        auth.audit(request, f"case.{action}", target, str(exc), ok=False)
        raise HTTPException(409, t("ui_case_not_now", status="")) from exc
    auth.audit(request, f"case.{action}", target, reason.strip())
    return fresh


def proofs(c: WebContext, case: dict[str, Any]) -> dict[str, Any]:
    """Inclusion proofs of the case's evidence leaves and of its sealed actions; leaves not yet
    sealed by a checkpoint (or purged) are listed with the reason instead."""
    from collector.vault.prove import ProofError, prove_in

    wanted = [("evidence", e["vault_id"], int(e["vault_index"])) for e in case["evidence"]]
    wanted += [("action", a["vault_id"], int(a["vault_index"])) for a in case["actions"] if a["vault_index"] is not None]
    out, missing = [], []
    for what, vault_id, leaf in wanted:
        try:
            out.append({"what": what, **prove_in(c.vault_roots, vault_id, leaf)})
        except (ProofError, OSError) as exc:
            missing.append({"what": what, "vault_id": vault_id, "leaf_index": leaf, "reason": str(exc)})
    return {"case_id": case["id"], "venue_id": case["venue_id"], "rule_id": case["rule_id"], "proofs": out,
            "unavailable": missing}


# -- exports -------------------------------------------------------------------------------------

def export_rows(rows: list[dict[str, Any]], tz: str) -> list[list[Any]]:
    """The cases as table rows in Chinese words (same for CSV and XLSX)."""
    out = []
    for r in rows:
        value = {**r, "article": f"{r['clause'].get('source', '')} {r['clause'].get('article', '')}".strip(),
                 "severity": t(f"severity.{r['severity']}"), "state": t(f"state.{r['state']}"),
                 "status": t(f"status.{r['status']}"), "first_seen": when(r["first_seen"], tz),
                 "last_seen": when(r["last_seen"], tz), "closed_at": when(r["closed_at"], tz) if r["closed_at"] else ""}
        out.append([value[k] for k in EXPORT_COLUMNS])
    return out


def export_csv(rows: list[dict[str, Any]], tz: str) -> bytes:
    """UTF-8 with a BOM, so Excel opens the Chinese text correctly."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([t(f"ui_col_{k}") for k in EXPORT_COLUMNS])
    w.writerows(export_rows(rows, tz))
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def export_xlsx(rows: list[dict[str, Any]], tz: str) -> bytes:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    ws = wb.active
    ws.title = t("ui_cases_sheet")
    ws.append([t(f"ui_col_{k}") for k in EXPORT_COLUMNS])
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for row in export_rows(rows, tz):
        ws.append(row)
    ws.freeze_panes = "A2"
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def _download(body: bytes, media_type: str, name: str) -> Response:
    return Response(body, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{name}"'})


# -- models --------------------------------------------------------------------------------------

class CaseRow(BaseModel):
    """One case in the list."""

    id: int
    venue_id: str
    venue_name: str
    rule_id: int
    title: str
    clause: dict[str, Any] = Field(description="{source, article, text, also: [...]}, quoted verbatim")
    severity: str
    subject: str
    room: str
    session_id: str
    agent_id: str
    state: str
    status: str
    first_seen: float
    last_seen: float
    opened_at: float
    closed_at: float | None
    events: int
    version: int


class CaseList(BaseModel):
    """The data of 违规案件."""

    cases: list[CaseRow]
    truncated: bool = Field(description=f"more than {LIST_LIMIT} matched; narrow the filters or use the exports")
    annual: dict[str, dict[str, int]] = Field(description="confirmed cases per venue and year")
    rules: list[dict[str, Any]] = Field(description="rules that have cases, with their clause articles (filter choices)")


class ActionRequest(BaseModel):
    """A person's action on a case."""

    action: Literal["acknowledge", "confirm", "dismiss"]
    reason: str = Field(min_length=1, description="the venue's explanation or the authority's reason")


# -- routes --------------------------------------------------------------------------------------

def _list_data(c: WebContext, user: User, f: CaseFilter) -> dict[str, Any]:
    scope = auth.venue_filter(user)
    rows, truncated = list_cases(c.store, f, scope, c.tz)
    counts = annual(c.store, scope, c.tz)
    return {"cases": rows, "truncated": truncated, "annual": counts, "rules": list(rule_catalogue(c.store).values())}


@router.get("/cases", response_class=HTMLResponse, include_in_schema=False)
def cases_page(request: Request, f: CaseFilter = Depends(case_filter), user: User = Depends(auth.current_user),
               c: WebContext = Depends(ctx)) -> HTMLResponse:
    """违规案件: the list with its filters, annual counts and export links."""
    data = _list_data(c, user, f)
    years = sorted({y for per in data["annual"].values() for y in per})
    venues = [] if user.role == "venue" else sorted(venue_names(c.store).items())
    return page(request, "cases.html", {**data, "f": f, "years": years, "venues": venues, "names": dict(venues),
                                        "severities": SEVERITIES, "states": CASE_STATES, "statuses": STATUSES})


@router.get("/cases.csv", include_in_schema=True, tags=["违规案件"], summary="Cases matching the filters as CSV")
def cases_csv(f: CaseFilter = Depends(case_filter), user: User = Depends(auth.current_user),
              c: WebContext = Depends(ctx)) -> Response:
    """UTF-8 CSV (with BOM) of every case the filters select, Chinese headers and words."""
    rows, _ = list_cases(c.store, f, auth.venue_filter(user), c.tz, EXPORT_LIMIT)
    return _download(export_csv(rows, c.tz), "text/csv; charset=utf-8", "cases.csv")


@router.get("/cases.xlsx", include_in_schema=True, tags=["违规案件"], summary="Cases matching the filters as XLSX")
def cases_xlsx(f: CaseFilter = Depends(case_filter), user: User = Depends(auth.current_user),
               c: WebContext = Depends(ctx)) -> Response:
    """An Excel workbook of every case the filters select."""
    rows, _ = list_cases(c.store, f, auth.venue_filter(user), c.tz, EXPORT_LIMIT)
    return _download(export_xlsx(rows, c.tz), XLSX_TYPE, "cases.xlsx")


@router.get("/cases/{case_id}", response_class=HTMLResponse, include_in_schema=False)
def case_page(case_id: int, request: Request, done: str | None = None, user: User = Depends(auth.current_user),
              c: WebContext = Depends(ctx)) -> HTMLResponse:
    """One case: clause, session, evidence timeline, actions, the forms this user may use."""
    return _case_page(request, detail(c.store, case_id, user), done=done)


def _case_page(request: Request, case: dict[str, Any], *, done: str | None = None, error: str = "",
               status: int = 200) -> HTMLResponse:
    return page(request, "case.html", {"case": case, "done": done if done in ACTION_ROLES else None, "error": error},
                status)


@router.post("/cases/{case_id}/actions", response_class=HTMLResponse, include_in_schema=False,
             dependencies=[Depends(auth.csrf_protect)])
def case_action_form(case_id: int, request: Request, action: str = Form(""), reason: str = Form(""),
                     user: User = Depends(auth.current_user), c: WebContext = Depends(ctx)) -> Response:
    """The forms on the case page: act, then back to the case (errors shown on it)."""
    try:
        take_action(request, c, user, case_id, action, reason)
    except HTTPException as exc:
        if exc.status_code not in (400, 409):
            raise
        return _case_page(request, detail(c.store, case_id, user), error=str(exc.detail), status=exc.status_code)
    return RedirectResponse(f"/cases/{case_id}?done={action}", status_code=303)


@router.get("/cases/{case_id}/proofs.json", tags=["违规案件"], summary="Vault inclusion proofs of a case",
            description="Each evidence leaf's and each sealed action's inclusion proof against the newest signed "
                        "checkpoint (format venueguard-inclusion-proof/1; `how_to_check` says how to verify it "
                        "without VenueGuard). Leaves not sealed yet are listed under `unavailable`.")
def case_proofs(case_id: int, user: User = Depends(auth.current_user), c: WebContext = Depends(ctx)) -> Response:
    body = proofs(c, detail(c.store, case_id, user))
    return JSONResponse(body, headers={"Content-Disposition": f'attachment; filename="case-{case_id}-proofs.json"'})


@router.get("/api/v1/cases", response_model=CaseList, tags=["违规案件"], summary="Cases with filters",
            description=f"Newest first, at most {LIST_LIMIT}; filters as on the page. A venue operator gets only its "
                        "venue's cases (the venue filter cannot widen that).")
def cases_api(f: CaseFilter = Depends(case_filter), user: User = Depends(auth.current_user),
              c: WebContext = Depends(ctx)) -> dict[str, Any]:
    data = _list_data(c, user, f)
    data["annual"] = {v: {str(y): n for y, n in per.items()} for v, per in data["annual"].items()}
    return data


@router.get("/api/v1/cases/{case_id}", tags=["违规案件"], summary="One case with clause, session, evidence and actions",
            description="`may` lists the actions this user may take now; 404 for another venue's case.")
def case_api(case_id: int, user: User = Depends(auth.current_user), c: WebContext = Depends(ctx)) -> dict[str, Any]:
    return detail(c.store, case_id, user)


@router.post("/api/v1/cases/{case_id}/actions", tags=["违规案件"], summary="Acknowledge, confirm or dismiss a case",
             description="Send the session's CSRF token as X-CSRF-Token. acknowledge: the case's venue operator or an "
                         "admin; confirm / dismiss: admin or viewer. 409 when the case's status does not allow it.",
             dependencies=[Depends(auth.csrf_protect)])
def case_action_api(case_id: int, body: ActionRequest, request: Request, user: User = Depends(auth.current_user),
                    c: WebContext = Depends(ctx)) -> dict[str, Any]:
    return take_action(request, c, user, case_id, body.action, body.reason)
