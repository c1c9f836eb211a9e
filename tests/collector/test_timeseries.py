"""Telemetry to InfluxDB, tested against a real VictoriaMetrics (InfluxDB v2 write API).

What must hold: points derived from stored records and heartbeats are readable back with the
right tags and values; with the server away, ingest and acks go on untouched and the points
catch up when it returns; what cannot catch up is recorded as a telemetry gap; bad settings say
what is wrong.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from collector import config
from collector.broker import Mosquitto, free_port
from collector.config import InfluxSection
from collector.store import Store
from collector.store.store import Batch, NewRecord
from collector.timeseries import GAPS_FILE, TimeseriesSink, backfill
from collector.timeseries_influx import InfluxWriter, TelemetryError
from collector.timeseries_points import DERIVED_KINDS
from tests.support import ROOT, Rig, outbox_state, wait_for
from tests.victoria import VictoriaMetrics

CAM = "02:00:00:00:0c:01"
REC = "02:00:00:00:0d:01"


@pytest.fixture
def vstore(store: Store) -> Store:
    """A migrated store (SQLite, then PostgreSQL) with agent a1 of venue V1 enrolled."""
    store.add_venue("V1")
    store.enroll_agent("a1", "V1", "A" * 43 + "=")
    return store


def _commit(store: Store, records: list[tuple[str, float, dict[str, Any]]]) -> None:
    """Store agent a1's records ``(kind, at, data)`` as ingest would index them."""
    start = len(store.record_seqs("a1"))
    rows = [NewRecord("a1", "V1", start + i + 1, "b1", "ev", kind, at, at, data, f"{start + i:064x}", start + i)
            for i, (kind, at, data) in enumerate(records)]
    store.commit(Batch(records=rows))


def _heartbeat(store: Store, at: float, depth: int, offset: float = 0.25) -> None:
    """What ingest writes of a heartbeat: the agent's latest outbox depth and clock offset."""
    batch = Batch()
    batch.update_agent("a1", last_heartbeat=at, outbox_depth=depth, clock_offset=offset)
    store.commit(batch)


def _sink(store: Store, tmp_path: Path, url: str, **kw: Any) -> TimeseriesSink:
    section = InfluxSection(url=url, flush_seconds=0.1, **kw)
    return TimeseriesSink(store, section, tmp_path)


def _ms(t: float) -> int:
    return round(t * 1000)


def _labels(**kw: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kw.items()))


def test_records_become_series_with_tags_and_values(vstore: Store, tmp_path: Path,
                                                   victoria: VictoriaMetrics) -> None:
    """A stream of stored records (cameras, recorders, isolation, LAN, host, agent) and a heartbeat
    are written and read back from /api/v1/export with the venue/agent/device tags and 0/1 states."""
    sink = _sink(vstore, tmp_path, victoria.url)
    t0 = time.time() - 60
    cam = {"mac": CAM, "ip": "192.0.2.21", "room": "第1考场", "name": "前门 枪机", "duration_ms": 42.5}
    _commit(vstore, [
        ("agent.online", t0, {"boot": "b1", "previous_boot": None, "reason": "birth"}),
        ("camera.down", t0 + 1, {**cam, "error": "timeout"}),
        ("camera.up", t0 + 2, cam),
        ("cameras.snapshot", t0 + 3, {"cameras": {CAM: {"status": "up", "since": t0, "data": cam, "reboots": 0},
                                                  "02:00:00:00:0c:02": {"status": "unknown", "data": {}}}}),
        ("camera.room_uncovered", t0 + 4, {"room": "第1考场", "cameras": [], "since": t0}),
        ("recorder.down", t0 + 5, {"recorder": REC, "room": "机房", "name": "NVR", "since": t0, "error": "x"}),
        ("recorder.disk_low", t0 + 6, {"recorder": REC, "room": "机房", "name": "NVR", "free_gb": 12.5}),
        ("isolation.breached", t0 + 7, {"target": "tcp:203.0.113.5:443", "method": "tcp", "how": "connect",
                                        "rtt_ms": 3.25}),
        ("lan.snapshot", t0 + 8, {"devices": {"a": {}, "b": {}, "c": {}},
                                  "episodes": {"unregistered:x": {}, "missing:y": {}, "missing:z": {}}}),
        ("host.snapshot", t0 + 9, {"interfaces": {"eth0": {}, "eth1": {}}, "wireless": {"wlan0": {}}}),
        ("host.address_changed", t0 + 10, {"interface": "eth0"}),  # no telemetry of its own
    ])
    _heartbeat(vstore, t0 + 11, depth=7)
    sink.step()
    sink.flush(force=True)
    assert sink.counters["written"] > 0 and len(sink.buffer) == 0

    agent = _labels(venue="V1", agent="a1")
    camera = _labels(venue="V1", agent="a1", camera=CAM, room="第1考场", name="前门 枪机")
    recorder = _labels(venue="V1", agent="a1", recorder=REC, room="机房", name="NVR")
    expected = {
        "vg_agent_online": {agent: {_ms(t0): 1.0}},
        "vg_camera_up": {camera: {_ms(t0 + 1): 0.0, _ms(t0 + 2): 1.0, _ms(t0 + 3): 1.0}},
        "vg_camera_probe_ms": {camera: {_ms(t0 + 1): 42.5, _ms(t0 + 2): 42.5, _ms(t0 + 3): 42.5}},
        "vg_room_covered": {_labels(venue="V1", agent="a1", room="第1考场"): {_ms(t0 + 4): 0.0}},
        "vg_recorder_up": {recorder: {_ms(t0 + 5): 0.0}},
        "vg_recorder_free_gb": {recorder: {_ms(t0 + 6): 12.5}},
        "vg_isolation_reachable": {_labels(venue="V1", agent="a1", target="tcp:203.0.113.5:443"): {_ms(t0 + 7): 1.0}},
        "vg_isolation_rtt_ms": {_labels(venue="V1", agent="a1", target="tcp:203.0.113.5:443"): {_ms(t0 + 7): 3.25}},
        "vg_lan_devices": {agent: {_ms(t0 + 8): 3.0}},
        "vg_lan_unregistered": {agent: {_ms(t0 + 8): 1.0}},
        "vg_lan_missing": {agent: {_ms(t0 + 8): 2.0}},
        "vg_host_interfaces": {agent: {_ms(t0 + 9): 2.0}},
        "vg_host_wireless": {agent: {_ms(t0 + 9): 1.0}},
        "vg_agent_outbox_depth": {agent: {_ms(t0 + 11): 7.0}},
        "vg_agent_clock_offset_s": {agent: {_ms(t0 + 11): 0.25}},
    }
    for metric, series in expected.items():
        wait_for(lambda: victoria.points(metric) == series, 30, 0.25, f"{metric} == {series} in VictoriaMetrics")
    assert not victoria.points("vg_host_address_changed")
    assert json.loads((tmp_path / "timeseries-cursor.json").read_text())["record_id"] == 11
    sink.writer.close()


def test_server_away_points_wait_and_gap_is_recorded(vstore: Store, tmp_path: Path,
                                                   victoria: VictoriaMetrics) -> None:
    """With nothing listening, record points wait (the cursor holds: the store is the spool) and
    heartbeat samples beyond spool_max are dropped as a counted, logged, filed telemetry gap;
    when the server is there again every record's point is written."""
    down = _sink(vstore, tmp_path, f"http://127.0.0.1:{free_port()}", spool_max=100, batch_size=50)
    t0 = time.time() - 600
    _commit(vstore, [("host.snapshot", t0 + i, {"interfaces": {f"eth{j}": {} for j in range(i % 4)}})
                           for i in range(150)])
    down.step()
    assert down.counters["failures"] >= 1 and down.counters["written"] == 0
    assert len(down.buffer) == 100 and down.written_upto() == 0  # the rest waits in the store
    for i in range(5):  # heartbeats while the buffer is full
        _heartbeat(vstore, t0 + 200 + i, depth=i)
        down.sample_heartbeats()
    assert down.counters["dropped"] == 5
    down.stop()  # closes the open gap: logged and filed
    gaps = [json.loads(line) for line in (tmp_path / GAPS_FILE).read_text().splitlines()]
    assert [(g["first"], g["last"], g["points"]) for g in gaps] == [(t0 + 200, t0 + 204, 5)]
    assert "spool_max = 100" in gaps[0]["reason"]

    up = _sink(vstore, tmp_path, victoria.url, spool_max=100, batch_size=50)
    assert up.read_upto == 0  # resumes where the points stopped being written
    while up.read_upto < 150 or len(up.buffer):
        up.step()
        up.flush(force=True)
    wait_for(lambda: len(victoria.points("vg_host_interfaces").get(_labels(venue="V1", agent="a1"), {})) == 150,
             30, 0.25, "all 150 host.snapshot points")
    series = victoria.points("vg_host_interfaces")[_labels(venue="V1", agent="a1")]
    assert series == {_ms(t0 + i): float(i % 4) for i in range(150)}
    up.stop()


def test_backfill_rewrites_a_period_from_the_store(vstore: Store, victoria: VictoriaMetrics) -> None:
    """backfill re-derives the points of the stored records of [since, until) only."""
    t0 = time.time() - 3600
    _commit(vstore, [("agent.online" if i % 2 else "agent.offline", t0 + i * 60, {}) for i in range(10)])
    writer = InfluxWriter(InfluxSection(url=victoria.url))
    records, points = backfill(vstore, writer, since=t0 + 120, until=t0 + 420)
    writer.close()
    assert (records, points) == (5, 5)
    expected = {_ms(t0 + i * 60): float(i % 2) for i in range(2, 7)}
    wait_for(lambda: victoria.points("vg_agent_online").get(_labels(venue="V1", agent="a1")) == expected,
             30, 0.25, "the backfilled period")


def test_backfill_to_a_dead_server_says_so(vstore: Store) -> None:
    """A failed backfill raises, naming the server, instead of reporting success."""
    _commit(vstore, [("agent.online", time.time(), {})])
    port = free_port()
    writer = InfluxWriter(InfluxSection(url=f"http://127.0.0.1:{port}"))
    with pytest.raises(TelemetryError, match=f"127.0.0.1:{port}.*unreachable|unreachable.*{port}"):
        backfill(vstore, writer, since=0)
    writer.close()


def test_every_derived_kind_is_a_known_event_kind() -> None:
    """The telemetry table names only kinds some part of VenueGuard emits (no silent never-match)."""
    from collector.eventkinds import is_known

    assert [k for k in DERIVED_KINDS if not is_known(k)] == []


# -- settings and commands -------------------------------------------------------------------------


def _cli(tmp_path: Path, influx: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    toml = tmp_path / "collector.toml"
    toml.write_text(f'[collector]\ndata_dir = "{tmp_path / "data"}"\n\n[broker]\nport = {free_port()}\n\n'
                    f'[web]\nport = {free_port()}\n\n[influx]\n{influx}\n')
    env = {"PYTHONPATH": str(ROOT), "VENUEGUARD_LANG": "en", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "collector.cli", "--config", str(toml), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)


def test_bad_url_is_refused_naming_the_option(tmp_path: Path) -> None:
    """A URL that is not http(s) stops the collector at start with the option and an example."""
    (tmp_path / "c.toml").write_text('[influx]\nurl = "influx.example:8086"\n')
    with pytest.raises(config.ConfigError, match=r"influx\.url.*not an http:// or https:// URL.*http://127.0.0.1:8086"):
        config.load(tmp_path / "c.toml")
    out = _cli(tmp_path, 'url = "ftp://127.0.0.1:8086"', "run")
    assert out.returncode == 2 and "influx.url" in out.stderr and "ftp://127.0.0.1:8086" in out.stderr


def test_missing_token_file_stops_run_with_the_fix(tmp_path: Path) -> None:
    """`run` with an unreadable token file exits 2 naming the file and what to put in it."""
    missing = tmp_path / "nope" / "influx.token"
    out = _cli(tmp_path, f'url = "http://127.0.0.1:{free_port()}"\ntoken_file = "{missing}"', "run")
    assert out.returncode == 2, out.stderr
    assert f"token_file {missing}: cannot read it" in out.stderr and "API token" in out.stderr


def test_empty_token_file_is_refused(tmp_path: Path) -> None:
    """An empty token file is an error at start, not a stream of 401s later."""
    token = tmp_path / "influx.token"
    token.write_text("\n")
    with pytest.raises(TelemetryError, match="is empty"):
        InfluxWriter(InfluxSection(url="http://127.0.0.1:8086", token_file=token))


def test_check_against_victoriametrics(tmp_path: Path, victoria: VictoriaMetrics) -> None:
    """`timeseries check` writes a probe point and says the retention cannot be checked there
    (no buckets API), without failing."""
    token = tmp_path / "influx.token"
    token.write_text("not-needed-by-victoria\n")
    out = _cli(tmp_path, f'url = "{victoria.url}"\ntoken_file = "{token}"', "timeseries", "check")
    assert out.returncode == 0, out.stderr
    assert f"Telemetry server {victoria.url} accepts writes" in out.stdout
    assert "no InfluxDB 2.x buckets API" in out.stderr and "-retentionPeriod=3y" in out.stderr
    wait_for(lambda: victoria.points("vg_collector_check"), 30, 0.25, "the check's probe point")


def test_check_names_a_dead_server(tmp_path: Path) -> None:
    """Against a port nobody listens on, check exits 1 naming the URL."""
    url = f"http://127.0.0.1:{free_port()}"
    check = _cli(tmp_path, f'url = "{url}"', "timeseries", "check")
    assert check.returncode == 1 and f"{url} unreachable" in check.stderr, check.stderr


def test_commands_say_telemetry_is_off(tmp_path: Path) -> None:
    """Without [influx] url the commands say how to turn telemetry on."""
    out = _cli(tmp_path, "", "timeseries", "check")
    assert out.returncode == 2 and "[influx] url is empty" in out.stderr


# -- end to end ------------------------------------------------------------------------------------


def test_ingest_goes_on_while_the_server_is_down_then_catches_up(tmp_path: Path, broker: Mosquitto,
                                                               victoria: VictoriaMetrics) -> None:
    """Real broker, collector and agent: with VictoriaMetrics stopped mid-stream every record is still
    stored once and acked (the outbox drains); when it is back, every host.snapshot stored meanwhile
    and the heartbeats of the outage are in VictoriaMetrics."""
    extra = f'[influx]\nurl = "{victoria.url}"\nflush_seconds = 0.5\n'
    rig = Rig(tmp_path, broker.port, collector_extra=extra, agent={"interval": 0.05, "steps": 200, "heartbeat": 0.5})
    agent_toml = rig.home / "agent.toml"
    agent_toml.write_text(agent_toml.read_text().replace("[agent]\n", "[agent]\nsnapshot_interval = 0.5\n", 1))
    agent = _labels(venue="V1", agent="a1")
    rig.collector.start()
    rig.agent.start()
    wait_for(lambda: victoria.points("vg_agent_online"), 60, 0.25, "the first points")
    victoria.stop()
    outage_from = time.time()
    last = wait_for(lambda: outbox_state(rig.home)[0] >= 150 and rig.drained(), 180, 0.25,
                    "the outbox to drain while VictoriaMetrics is down")
    outage_to = time.time()
    wait_for(lambda: "telemetry write failed" in (tmp_path / "collector.log").read_text(), 30, 0.25,
             "the collector to log the failed write")
    victoria.start()
    snapshots = {_ms(r["at"]) for r in rig.store.records_of("a1", "host.snapshot")}
    assert len(snapshots) >= 5
    wait_for(lambda: snapshots <= set(victoria.points("vg_host_interfaces").get(agent, {})), 90, 0.5,
             "every stored host.snapshot in VictoriaMetrics after its return")
    beats = victoria.points("vg_agent_outbox_depth").get(agent, {})
    assert any(_ms(outage_from) <= ts <= _ms(outage_to) for ts in beats), "heartbeats of the outage caught up"
    rig.stop()
    seqs = rig.seqs()
    assert seqs[:last] == list(range(1, last + 1)) and len(set(seqs)) == len(seqs)
    assert not (rig.data / GAPS_FILE).exists()


def test_a_hung_server_never_holds_ingest_or_shutdown(tmp_path: Path, broker: Mosquitto) -> None:
    """A telemetry server that takes connections and never answers (the worst case: every write
    waits for its timeout): the agent's records are all stored and acked, and the collector still
    stops cleanly on SIGTERM, recording the heartbeat samples it could not write as a gap."""
    import socket

    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(64)  # never accepted: the kernel completes connects, nobody ever answers
    extra = f'[influx]\nurl = "http://127.0.0.1:{hung.getsockname()[1]}"\nflush_seconds = 0.5\ntimeout = 3\n'
    rig = Rig(tmp_path, broker.port, collector_extra=extra, agent={"interval": 0.05, "steps": 200, "heartbeat": 0.5})
    try:
        rig.collector.start()
        rig.agent.start()
        last = wait_for(lambda: outbox_state(rig.home)[0] >= 150 and rig.drained(), 180, 0.25,
                        "the outbox to drain while the telemetry server hangs")
        log = tmp_path / "collector.log"
        wait_for(lambda: "telemetry write failed" in log.read_text() and "timed out" in log.read_text(), 60, 0.25,
                 "a telemetry write to time out")
        rig.agent.stop()
        assert rig.collector.proc is not None
        rig.collector.signal(15)
        assert rig.collector.proc.wait(timeout=90) == 0  # ingest, web and telemetry each bound their stop
        assert "VenueGuard collector stopped" in log.read_text()
        gaps = [json.loads(line) for line in (rig.data / GAPS_FILE).read_text().splitlines()]
        assert gaps and gaps[-1]["reason"].startswith("collector stopped before") and gaps[-1]["points"] > 0
        seqs = rig.seqs()
        assert seqs[:last] == list(range(1, last + 1)) and len(set(seqs)) == len(seqs)
    finally:
        rig.stop()
        hung.close()
