"""总览's cache (collector/web/pagecache.py, overview.snapshot): one build serves every request
while nothing the page shows changed, a change shows in the very next response, time still moves
what the signature does not follow, and a role's or venue's view never reaches anyone else."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa

from collector.store import Store, schema
from collector.store.store import Batch, NewRecord
from collector.web import overview
from collector.web.pagecache import SignedCache
from collector.web.signature import signature
from tests.web.pagekit import NOW, TODAY, Site, add_case


@pytest.fixture
def site(store: Store, tmp_path: Path) -> Iterator[Site]:
    made = Site(store, tmp_path / "data")
    yield made
    made.close()


def _tiles(html: str) -> dict[str, str]:
    return dict(re.findall(r'<li class="vg-tile [^"]*" data-venue="(V\d)" data-state="(\w+)"', html))


def _builds(site: Site) -> int:
    return site.app.state.overview_cache.builds


# -- the cache itself ----------------------------------------------------------------------------

def test_one_build_serves_concurrent_requests() -> None:
    """Eight threads asking at once for a stale key wait for one builder and all get its value."""
    cache: SignedCache[int] = SignedCache(max_age=5.0)
    calls: list[int] = []

    def build(_previous: int | None) -> int:
        calls.append(1)
        time.sleep(0.3)
        return len(calls)

    got: list[int] = []
    threads = [threading.Thread(target=lambda: got.append(cache.get("k", ("s",), 100.0, build))) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    assert got == [1] * 8 and len(calls) == 1 and cache.builds == 1


def test_entry_is_valid_for_one_signature_and_max_age() -> None:
    """Same signature inside max_age: cached; a new signature, an old entry or a clock that went
    back: built again; keys never share entries."""
    cache: SignedCache[str] = SignedCache(max_age=5.0)
    n = iter(range(100))

    def build(_previous: str | None) -> str:
        return f"v{next(n)}"

    assert cache.get("a", 1, 100.0, build) == "v0"
    assert cache.get("a", 1, 104.9, build) == "v0"
    assert cache.get("b", 1, 104.9, build) == "v1"
    assert cache.get("a", 2, 104.9, build) == "v2"
    assert cache.get("a", 2, 110.0, build) == "v3"
    assert cache.get("a", 2, 109.0, build) == "v4"
    assert cache.builds == 5


def test_an_entry_only_too_old_is_served_while_it_is_rebuilt() -> None:
    """Same signature, past max_age: the first request rebuilds (and gets the previous value to
    reuse), a request meanwhile gets the current copy without waiting; a new signature waits."""
    cache: SignedCache[str] = SignedCache(max_age=5.0)
    cache.get("k", 1, 100.0, lambda _p: "old")
    started, release = threading.Event(), threading.Event()
    seen: list[str | None] = []

    def slow(previous: str | None) -> str:
        seen.append(previous)
        started.set()
        release.wait(30)
        return "new"

    builder = threading.Thread(target=lambda: cache.get("k", 1, 110.0, slow))
    builder.start()
    assert started.wait(30)
    t0 = time.monotonic()
    assert cache.get("k", 1, 110.0, lambda _p: "never") == "old"
    assert time.monotonic() - t0 < 1.0
    waiter: list[str] = []
    other = threading.Thread(target=lambda: waiter.append(cache.get("k", 2, 110.0, lambda _p: "sig2")))
    other.start()
    time.sleep(0.2)
    assert waiter == []  # a moved signature waits for the builder
    release.set()
    builder.join(30)
    other.join(30)
    assert seen == ["old"] and waiter == ["sig2"] and cache.get("k", 2, 111.0, lambda _p: "x") == "sig2"


# -- on the overview -----------------------------------------------------------------------------

def test_signature_sees_which_agents_are_offline(site: Site) -> None:
    """One agent back online and another offline leaves every count equal; the signature still
    moves and the next page shows the swap."""
    admin = site.client("admin")
    assert 'data-agent="b1"' in admin.get("/").text
    before = signature(site.store, None, TODAY)
    batch = Batch()
    batch.update_agent("b1", online=True)
    batch.update_agent("d1", online=False)
    site.store.commit(batch)
    assert signature(site.store, None, TODAY) != before
    offline = admin.get("/").text.split('id="ov-offline"', 1)[1].split("</section>", 1)[0]
    assert 'data-agent="d1"' in offline and 'data-agent="b1"' not in offline
    assert signature(site.store, "V2", TODAY)[1:] != signature(site.store, "V4", TODAY)[1:]


def test_unchanged_overview_is_served_from_one_build(site: Site) -> None:
    """Page, API and live stream of the same role share one build while nothing changed."""
    admin = site.client("admin")
    first = admin.get("/").text
    builds = _builds(site)
    assert admin.get("/").text.replace(" ", "") == first.replace(" ", "")
    assert admin.get("/api/v1/overview").status_code == 200
    assert _builds(site) == builds


def test_a_change_shows_in_the_next_response(site: Site) -> None:
    """With the cache warm, an agent going offline and then a violation case opening each show in
    the very next page and API response."""
    admin = site.client("admin")
    assert _tiles(admin.get("/").text)["V4"] == "ok"
    batch = Batch()
    batch.update_agent("d1", online=False)
    site.store.commit(batch)
    page = admin.get("/").text
    assert _tiles(page)["V4"] == "offline" and 'data-agent="d1"' in page
    assert next(v for v in admin.get("/api/v1/overview").json()["venues"] if v["id"] == "V4")["state"] == "offline"
    case_id = add_case(site.store, "V4", 510, "open", NOW - 60)
    page = admin.get("/").text
    assert _tiles(page)["V4"] == "violation" and f'data-case="{case_id}"' in page


def test_what_the_signature_does_not_follow_moves_after_max_age(site: Site) -> None:
    """A venue renamed behind the signature's back shows once the entry is MAX_AGE old on the pages'
    clock; the API's events are read fresh every time."""
    admin = site.client("admin")
    assert "番禺" in admin.get("/").text
    with site.store.engine.begin() as conn:
        conn.execute(schema.venues.update().where(schema.venues.c.id == "V4").values(name="番禺新址考试点"))
    assert "番禺新址考试点" not in admin.get("/").text
    site.clock.now += overview.MAX_AGE + 1
    assert "番禺新址考试点" in admin.get("/").text
    batch = Batch()
    batch.records.append(NewRecord("d1", "V4", 99, "boot1", "ev", "camera.down", site.clock.now, site.clock.now,
                                   {"mac": "00:11:22:33:44:55"}, hashlib.sha256(b"x").hexdigest(), 10_000))
    site.store.commit(batch)
    events = admin.get("/api/v1/overview?limit=1").json()["events"]
    assert [(e["agent_id"], e["seq"]) for e in events] == [("d1", 99)]


def test_api_body_is_what_the_response_model_documents(site: Site) -> None:
    """The API's body, encoded once per build with fresh events appended, validates against the
    Overview model of the OpenAPI schema, for every role and event limit."""
    for role in ("admin", "viewer", "venue"):
        for limit in (0, 3, 50):
            r = site.client(role).get(f"/api/v1/overview?limit={limit}")
            assert r.status_code == 200 and r.headers["content-type"] == "application/json"
            model = overview.Overview.model_validate(r.json())
            assert len(model.events) <= limit and bool(model.events) == bool(limit)
    schema_ref = site.client("admin").get("/openapi.json").json()["paths"]["/api/v1/overview"]["get"]["responses"]["200"]
    assert schema_ref["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Overview"}


def test_no_view_leaks_through_the_cache(site: Site) -> None:
    """With the authority's entries warm, each venue operator gets only its own venue in the page,
    the API and the live stream, and the authority still gets all of them; no entry is shared
    between roles or venues."""
    everyone = {"V1", "V2", "V3", "V4"}
    assert set(_tiles(site.client("admin").get("/").text)) == everyone
    assert set(_tiles(site.client("viewer").get("/").text)) == everyone
    for role, venue in (("venue", "V1"), ("venue2", "V2"), ("venue", "V1")):
        client = site.client(role)
        page = client.get("/").text
        assert set(_tiles(page)) == {venue} and 'id="ov-dead_letters"' not in page
        assert not [v for v in everyone - {venue} if f'href="/venues/{v}"' in page]
        data = client.get("/api/v1/overview").json()
        assert [v["id"] for v in data["venues"]] == [venue] and data["dead_letters"] == {}
        assert {a["venue_id"] for a in data["offline_agents"]} <= {venue}
        assert {e["venue_id"] for e in data["events"]} <= {venue}
    assert set(_tiles(site.client("admin").get("/").text)) == everyone
    keys = site.app.state.overview_cache.keys()
    assert keys == {("admin", None), ("viewer", None), ("venue", "V1"), ("venue", "V2")}


def test_the_live_stream_uses_the_same_build(site: Site) -> None:
    """A live stream connecting after the page takes its fragments from the page's build."""
    import dataclasses

    site.app.state.ctx = dataclasses.replace(site.app.state.ctx, live_seconds=0.3, live_interval=0.1)
    client = site.client("venue")
    client.get("/")
    builds = _builds(site)
    body = client.get("/api/v1/live?page=overview").text
    assert "ov-grid" in body and 'data-venue="V2"' not in body
    assert _builds(site) == builds


def test_schema_has_the_overview_indexes(store: Store) -> None:
    """The overview reads sessions of two days across venues and every venue's agents by index."""
    indexes = {ix["name"] for table in ("exam_sessions", "agents") for ix in sa.inspect(store.engine).get_indexes(table)}
    assert {"ix_exam_sessions_start", "ix_agents_venue"} <= indexes
