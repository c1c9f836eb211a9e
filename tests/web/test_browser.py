"""The pages in a real browser (issue 8): Debian's headless Chromium driven by Playwright against the
real app on uvicorn (loopback), over the seeded site of ``pagekit`` (four venues, agents,
inventory, today's and tomorrow's exams, records in a real vault, cases, users of every role) plus
two readiness rounds for V1's exams today.

Each role logs in through the form and sees what it may; the overview follows an agent going
offline and a case opening without a reload; a case is acknowledged by the venue's operator and
confirmed by the authority through the forms; a schedule with bad rows is refused on the page
with each row's error in Chinese and English; a readiness report is printed to an A4 PDF; the main
pages are screenshot at 1366×768 and on a tablet (768×1024), none scrolling sideways. Every
request the browser makes must stay on 127.0.0.1.

Screenshots and the PDF go to $VENUEGUARD_ARTIFACTS (default: a pytest tmp folder, printed).
"""

from __future__ import annotations

import contextlib
import re
import struct
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import sqlalchemy as sa
from playwright.sync_api import Browser, Page, expect, sync_playwright

from collector.store import Store, schema
from collector.web.strings import t
from protocol.readiness import ITEMS
from tests.web.browser import (CHROMIUM, DESKTOP, TABLET, LiveServer, OutsideGuard, agent_goes_offline, artifacts_dir,
                               case_actions, login, readiness_day, recorder_goes_down, require_chromium, serve)
from tests.web.pagekit import NOW, TODAY, USERS, Site

EVE = "2026-12-04"  # the day before TODAY: the readiness rounds for TODAY's exams run then

expect.set_options(timeout=15_000)  # generous for a loaded CI machine; passing runs never wait it out


# -- fixtures: one site, one server and one browser for the module; a fresh context per page -------

@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("browser-site")
    store = Store(f"sqlite:///{root / 'index.sqlite3'}")
    store.migrate()
    made = Site(store, root / "data")
    readiness_day(made, "V1", TODAY, ("a1", "a2"), EVE)
    yield made
    made.close()
    store.close()


@pytest.fixture(scope="module")
def server(site: Site) -> Iterator[LiveServer]:
    running = serve(site)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser(server: LiveServer) -> Iterator[Browser]:
    """Closed before the server stops (its live streams end with it)."""
    require_chromium()
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Path]:
    folder = artifacts_dir(tmp_path_factory)
    yield folder
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        print(f"\nbrowser test screenshots and PDF: {folder}")


@pytest.fixture
def open_page(browser: Browser, server: LiveServer) -> Iterator[Callable[..., Page]]:
    """``open_page(role, viewport=DESKTOP)``: a new browser context (own cookies) logged in as ``role``
    (None: not logged in); every request leaving 127.0.0.1 is aborted and fails the test."""
    guards: list[OutsideGuard] = []
    contexts: list[Any] = []

    def make(role: str | None, viewport: dict[str, int] = DESKTOP) -> Page:
        context = browser.new_context(viewport=viewport, locale="zh-CN", timezone_id="Asia/Shanghai")
        guard = OutsideGuard()
        context.route("**/*", guard)
        guards.append(guard)
        contexts.append(context)
        page = context.new_page()
        if role is not None:
            login(page, server.url, USERS[role][0])
        return page

    yield make
    for context in contexts:
        context.close()
    refused = [url for g in guards for url in g.refused]
    assert refused == [], f"the pages asked for something outside the collector: {refused}"


def _tiles(page: Page) -> Any:
    return page.locator("#ov-grid li.vg-tile")


# -- 1. roles ---------------------------------------------------------------------------------------

def test_each_role_logs_in_and_sees_what_it_may(open_page: Callable[..., Page], server: LiveServer, site: Site) -> None:
    """Admin: 管理 in the menu and the page; viewer: every venue, no 管理 (403); the venue operator:
    only V1 (its overview, venue page and cases), V2's page is the 404 page; no login: the form."""
    base = server.url
    anonymous = open_page(None)
    anonymous.goto(f"{base}/venues/V1")
    expect(anonymous).to_have_url(re.compile(r"/login\?next=%2Fvenues%2FV1$"))
    expect(anonymous.locator("#login-form")).to_be_visible()

    admin = open_page("admin")
    expect(admin.locator("#nav-admin")).to_have_text("管理")
    expect(admin.locator("#nav-user")).to_contain_text("kaowu-admin")
    expect(_tiles(admin)).to_have_count(4)
    admin.click("#nav-admin")
    expect(admin).to_have_url(f"{base}/admin")
    expect(admin.locator("main h1")).to_have_text("管理")
    expect(admin.locator("#vault-status")).to_be_visible()

    viewer = open_page("viewer")
    expect(_tiles(viewer)).to_have_count(4)
    assert [_tiles(viewer).nth(i).get_attribute("data-venue") for i in range(4)] == ["V1", "V2", "V3", "V4"]
    expect(viewer.locator("#nav-admin")).to_have_count(0)
    expect(viewer.locator(".mainnav")).not_to_contain_text("管理")
    expect(viewer.locator("#ov-dead_letters")).to_be_visible()
    response = viewer.goto(f"{base}/admin")
    assert response is not None and response.status == 403
    response = viewer.goto(f"{base}/venues/V2")
    assert response is not None and response.status == 200
    expect(viewer.locator("main h1")).to_contain_text("越秀考点")

    operator = open_page("venue")
    expect(operator.locator("#nav-user")).to_contain_text("th-operator")
    expect(operator.locator("#nav-admin")).to_have_count(0)
    expect(_tiles(operator)).to_have_count(1)
    expect(_tiles(operator).first).to_have_attribute("data-venue", "V1")
    expect(operator.locator("#ov-dead_letters")).to_have_count(0)
    response = operator.goto(f"{base}/venues/V2")
    assert response is not None and response.status == 404
    expect(operator.locator("#error-message")).to_have_text(t("auth_not_found"))
    expect(operator.locator("body")).not_to_contain_text("越秀考点")
    response = operator.goto(f"{base}/venues/V1")
    assert response is not None and response.status == 200
    expect(operator.locator("main h1")).to_contain_text("广州市天河区安全生产考试点")
    operator.goto(f"{base}/cases")
    rows = operator.locator("#cases tr[data-case]")
    expect(rows.first).to_be_visible()
    v1_cases = {str(site.case_ids["v1_recorder"]), str(site.case_ids["v1_camera"])}
    assert {rows.nth(i).get_attribute("data-case") for i in range(rows.count())} <= v1_cases
    response = operator.goto(f"{base}/cases/{site.case_ids['v2_device']}")
    assert response is not None and response.status == 404


# -- 2. live overview -------------------------------------------------------------------------------

def test_overview_follows_an_agent_going_offline_and_a_case_opening_without_reload(
        open_page: Callable[..., Page], site: Site) -> None:
    """V4 (正常) turns 离线 when its agent's Last Will comes, then 违规 when the rulebook opens a case
    for its recorder going down; the page is never reloaded (a mark set in the window survives)."""
    page = open_page("viewer")
    tile = page.locator('#ov-grid li.vg-tile[data-venue="V4"]')
    expect(tile).to_have_attribute("data-state", "ok")
    expect(tile.locator(".vg-tile-state")).to_have_text("正常")
    expect(page.locator("#live-status")).to_have_class(re.compile(r"\bon\b"))  # the stream is connected
    page.evaluate("window.vgNotReloaded = true")

    agent_goes_offline(site, "d1", "V4", NOW - 60)
    expect(tile).to_have_attribute("data-state", "offline")
    expect(tile.locator(".vg-tile-state")).to_have_text("离线")
    expect(page.locator('#offline-agents tr[data-agent="d1"]')).to_contain_text("番禺考点")
    expect(page.locator('#ov-counts li[data-state="offline"] .n')).to_have_text("2")

    case_id = recorder_goes_down(site, "d1", "V4", 300, "00:11:22:33:55:30", NOW - 30)
    row = page.locator(f'#open-violations tr[data-case="{case_id}"]')
    expect(row).to_contain_text("考点监控录像机未处于常开状态")
    expect(row).to_contain_text("番禺考点")
    expect(tile).to_have_attribute("data-state", "violation")
    expect(tile.locator(".vg-tile-state")).to_have_text("违规")
    assert page.evaluate("window.vgNotReloaded") is True


# -- 3. acknowledge and confirm ---------------------------------------------------------------------

def test_operator_acknowledges_and_viewer_confirms_a_case_through_the_forms(
        open_page: Callable[..., Page], server: LiveServer, site: Site) -> None:
    """The operator may only explain (考点说明); the viewer then confirms (认定违规): the status text
    moves 待处理 → 考点已说明 → 已认定, each action is a case_actions row and a line of the page."""
    cid = site.case_ids["v1_recorder"]
    url = f"{server.url}/cases/{cid}"

    operator = open_page("venue")
    operator.goto(url)
    expect(operator.locator("#case-status")).to_have_text("待处理")
    expect(operator.locator("#clause")).to_contain_text("考试点要确保考试点监控录像机处于常开状态")
    expect(operator.locator("#form-confirm")).to_have_count(0)
    expect(operator.locator("#form-dismiss")).to_have_count(0)
    operator.fill("#reason-acknowledge", "录像机电源故障，已更换")
    operator.click("#form-acknowledge button[type=submit]")
    expect(operator.locator("#flash")).to_have_text(t("ui_case_done_acknowledge"))
    expect(operator.locator("#case-status")).to_have_text("考点已说明")
    expect(operator.locator('#actions tr[data-action="acknowledge"]')).to_contain_text("录像机电源故障，已更换")

    viewer = open_page("viewer")
    viewer.goto(url)
    expect(viewer.locator("#case-status")).to_have_text("考点已说明")
    expect(viewer.locator("#form-acknowledge")).to_have_count(0)
    viewer.fill("#reason-confirm", "非特殊情况关机")
    viewer.click("#form-confirm button[type=submit]")
    expect(viewer.locator("#flash")).to_have_text(t("ui_case_done_confirm"))
    expect(viewer.locator("#case-status")).to_have_text("已认定")
    expect(viewer.locator('#actions tr[data-action="confirm"]')).to_contain_text("kaowu-viewer")
    expect(viewer.locator("form[id^='form-']")).to_have_count(0)  # decided: no more actions

    assert case_actions(site, cid)[1:] == [("acknowledge", "th-operator", "venue", "录像机电源故障，已更换"),
                                           ("confirm", "kaowu-viewer", "viewer", "非特殊情况关机")]


# -- 4. schedule import with errors -----------------------------------------------------------------

BAD_PLAN = ("考点编号,考场,科目,开始时间,结束时间,场次编号\n"
            "V1,第1考场,低压电工作业,2026-12-20 09:00,2026-12-20 11:00,BT-1220-1\n"
            "V1,第2考场,低压电工作业,2026-12-20 11:00,2026-12-20 09:00,BT-1220-2\n"
            "NOPE,第1考场,低压电工作业,2026-12-20 09:00,2026-12-20 11:00,BT-1220-3\n")


def test_admin_imports_a_schedule_with_bad_rows_and_sees_each_error(
        open_page: Callable[..., Page], server: LiveServer, site: Site) -> None:
    """A CSV with an end before its start (row 3) and an unknown venue (row 4): the page lists both
    in Chinese and English by row, and nothing is imported."""
    def versions() -> int:
        with site.store.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(schema.schedule_versions)).scalar_one())

    before = versions()
    admin = open_page("admin")
    admin.goto(f"{server.url}/admin/schedule")
    admin.set_input_files("#schedule-import input[type=file]",
                          files=[{"name": "2026-12-plan.csv", "mimeType": "text/csv", "buffer": BAD_PLAN.encode()}])
    admin.click("#schedule-import button[type=submit]")
    errors = admin.locator("#import-errors li")
    expect(errors).to_have_count(2)
    expect(errors.nth(0)).to_contain_text("第 3 行 / row 3")
    expect(errors.nth(0)).to_contain_text("结束时间不晚于开始时间 / end is not after start")
    expect(errors.nth(1)).to_contain_text("第 4 行 / row 4")
    expect(errors.nth(1)).to_contain_text("考点 NOPE 未注册")
    expect(errors.nth(1)).to_contain_text("venue NOPE is not registered")
    expect(admin.locator("#import-ok")).to_have_count(0)
    assert versions() == before


# -- 5. printing a readiness report -----------------------------------------------------------------

def _pdf_pages(pdf: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", pdf))


def test_readiness_report_prints_to_an_a4_pdf(open_page: Callable[..., Page], server: LiveServer,
                                              artifacts: Path) -> None:
    """V1's report for today's exams: every item in Chinese per agent, the fixed cameras, the seal,
    both rounds; for print the button bar goes and the page becomes an A4 PDF."""
    page = open_page("viewer")
    page.goto(f"{server.url}/readiness/V1/{TODAY}")
    expect(page.locator("#print-button")).to_be_visible()
    expect(page.locator("#status")).to_have_text("通过")
    items = page.locator("#items")
    for item in ITEMS:
        expect(items).to_contain_text(t(f"readiness_item_{item}"))
    expect(items.locator('tr[data-item="cameras"]').first).to_contain_text(t("readiness_fixed"))
    expect(page.locator("#seal")).to_be_visible()
    expect(page.locator("#history tr[data-round]")).to_have_count(2)
    expect(page.locator("#history")).to_contain_text("无法取流（RTSP 超时）")

    page.emulate_media(media="print")
    expect(page.locator(".vg-report-bar")).to_be_hidden()
    expect(page.locator(".topbar")).to_be_hidden()
    text = page.locator("main").inner_text()
    assert "考点考前准备检查报告" in text and "广州市天河区安全生产考试点" in text and TODAY in text
    assert all(t(f"readiness_item_{item}") in text for item in ITEMS)
    pdf = page.pdf(format="A4", print_background=True)
    (artifacts / f"readiness-V1-{TODAY}.pdf").write_bytes(pdf)
    assert pdf.startswith(b"%PDF-") and b"%%EOF" in pdf[-64:]
    assert _pdf_pages(pdf) >= 1
    width, height = (float(x) for x in re.search(rb"/MediaBox\s*\[\s*0\s+0\s+([\d.]+)\s+([\d.]+)\s*\]", pdf).groups())
    assert abs(width - 595.3) < 2 and abs(height - 841.9) < 2, (width, height)  # A4 in points (Chromium rounds up)


# -- 6. screenshots -------------------------------------------------------------------------------------

def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])


def _shoot(page: Page, path: Path, width: int) -> None:
    """A full-page PNG, after the live stream (if any) has connected; the page must not scroll sideways."""
    live = page.locator("#live-status")
    if live.count():
        expect(live).to_have_class(re.compile(r"\bon\b"))
    page.evaluate("document.fonts.ready.then(() => true)")
    scroll = page.evaluate("document.documentElement.scrollWidth")
    page.screenshot(path=str(path), full_page=True)
    assert _png_size(path)[0] == width
    assert scroll <= width, f"{page.url} is {scroll} px wide at {width} px: it scrolls sideways"


def test_screenshots_of_the_main_pages_at_1366_and_on_a_tablet(
        open_page: Callable[..., Page], browser: Browser, server: LiveServer, site: Site, artifacts: Path) -> None:
    """总览, 考点详情, 违规案件 (list and a case), 考前检查 (table and a report), 管理: PNGs at
    1366×768 and 768×1024 (portrait tablet), none wider than the screen. First, the guard every
    page runs under is shown to catch a request leaving 127.0.0.1."""
    probe = browser.new_context()
    guard = OutsideGuard()
    probe.route("**/*", guard)
    page = probe.new_page()
    page.goto(f"{server.url}/login")
    page.evaluate("fetch('http://192.0.2.1/cdn/htmx.min.js').catch(() => null)")
    assert guard.refused == ["http://192.0.2.1/cdn/htmx.min.js"]
    probe.close()

    pages = [("overview", "/"), ("venue-V1", "/venues/V1"), ("cases", "/cases"),
             ("case", f"/cases/{site.case_ids['v1_recorder']}"), ("readiness", "/readiness"),
             ("readiness-V1", f"/readiness/V1/{TODAY}"), ("admin", "/admin")]
    for viewport in (DESKTOP, TABLET):
        page = open_page("admin", viewport)
        size = f"{viewport['width']}x{viewport['height']}"
        for name, path in pages:
            response = page.goto(server.url + path)
            assert response is not None and response.status == 200, path
            expect(page.locator("main h1").first).to_be_visible()
            _shoot(page, artifacts / f"{name}-{size}.png", viewport["width"])
    operator = open_page("venue", TABLET)  # the operator's one-venue overview on its tablet
    _shoot(operator, artifacts / "overview-venue-operator-768x1024.png", TABLET["width"])
    assert len(list(artifacts.glob("*.png"))) >= 2 * len(pages) + 1
