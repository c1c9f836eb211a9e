"""The outbox: durable seqs, acks, and overflow that is counted and reported, never silent."""

from __future__ import annotations

from pathlib import Path

from agent.outbox import MAX_RECORD_BYTES, Outbox, Pending


def test_seq_is_strictly_increasing_across_restarts(tmp_path: Path) -> None:
    """Seqs continue after reopening even when every row was acknowledged and deleted."""
    box = Outbox(tmp_path / "o.sqlite3")
    assert [box.append("ev", "k", {}) for _ in range(3)] == [1, 2, 3]
    box.ack(3)
    assert box.depth() == 0
    box.close()
    box = Outbox(tmp_path / "o.sqlite3")
    assert box.append("ev", "k", {}) == 4
    assert box.acked_seq() == 3
    assert [r.seq for r in box.pending(0, 10)] == [4]


def test_full_outbox_drops_are_recorded(tmp_path: Path) -> None:
    """Past max_records new records are dropped, an outbox.full record says so, and the
    recovery record counts exactly what was lost, by kind."""
    box = Outbox(tmp_path / "o.sqlite3", max_records=100)
    box.append_many([Pending("ev", "fill", 0.0, {}) for _ in range(100)])
    out = box.append_many([Pending("ev", "host.snapshot", 0.0, {}) for _ in range(5)] + [Pending("ev", "x", 0.0, {})])
    assert out == [None] * 6
    kinds = [r.record["kind"] for r in box.pending(0, 1000)]
    assert kinds.count("outbox.full") == 1 and len(kinds) == 101
    box.append("ev", "x", {})  # still full: counted in the same episode, no second full record
    box.ack(101)
    rows = box.pending(0, 10)
    assert [r.record["kind"] for r in rows] == ["outbox.recovered"]
    assert rows[0].record["data"]["dropped"] == {"host.snapshot": 5, "x": 2}
    assert box.dropped_total() == 7


def test_low_disk_is_treated_as_full(tmp_path: Path) -> None:
    """A free-space floor above what the disk has makes every append a counted drop."""
    box = Outbox(tmp_path / "o.sqlite3", min_free_bytes=1 << 62)
    assert box.append("ev", "k", {}) is None
    rec = box.pending(0, 10)[0].record
    assert rec["kind"] == "outbox.full" and rec["data"]["dropped"] == {"k": 1}


def test_oversized_record_is_cut_and_says_so(tmp_path: Path) -> None:
    """A record too large for any envelope keeps an excerpt and its original size."""
    box = Outbox(tmp_path / "o.sqlite3")
    box.append("ev", "big", {"blob": "x" * (MAX_RECORD_BYTES * 2)})
    row = box.pending(0, 1)[0]
    assert row.record["data"]["truncated"] is True
    assert row.record["data"]["original_bytes"] > MAX_RECORD_BYTES * 2
    assert row.size < MAX_RECORD_BYTES


def test_state_survives_reopen(tmp_path: Path) -> None:
    """Watcher state saved in the outbox is there after a restart."""
    box = Outbox(tmp_path / "o.sqlite3")
    box.save_state("host", {"interfaces": {"eth0": {}}})
    box.close()
    assert Outbox(tmp_path / "o.sqlite3").load_state("host") == {"interfaces": {"eth0": {}}}


def test_rebase_renumbers_pending_records_after_the_collectors_watermark(tmp_path: Path) -> None:
    """A replaced outbox whose seqs restarted is renumbered above what the collector holds,
    keeping every record and saying so."""
    box = Outbox(tmp_path / "o.sqlite3")
    box.append_many([Pending("ev", f"k{i}", 0.0, {}) for i in range(3)])
    assert box.rebase(40) == 3
    rows = box.pending(0, 10)
    assert [(r.seq, r.record["seq"], r.record["kind"]) for r in rows] == [
        (41, 41, "k0"), (42, 42, "k1"), (43, 43, "k2"), (44, 44, "outbox.rebased")]
    assert rows[-1].record["data"] == {"collector_acked": 40, "previous_last_seq": 3, "rows_renumbered": 3}
    assert box.append("ev", "next", {}) == 45 and box.acked_seq() == 40


def test_state_commits_with_records_and_never_ahead_of_dropped_ones(tmp_path: Path) -> None:
    """``append_many(items, state=...)`` saves the state in the records' transaction, and not at all
    when a record was dropped, so a reader's offsets never run ahead of the lines it shipped."""
    box = Outbox(tmp_path / "o.sqlite3", max_records=100)
    assert box.append_many([Pending("log", "log.lines", 0.0, {"end": 10})], state=("logs", {"offset": 10})) == [1]
    assert box.load_state("logs") == {"offset": 10}
    assert box.append_many([], state=("logs", {"offset": 11})) == []
    assert box.load_state("logs") == {"offset": 11}
    box.append_many([Pending("ev", "fill", 0.0, {}) for _ in range(99)])
    assert box.append_many([Pending("log", "log.lines", 0.0, {})], state=("logs", {"offset": 99})) == [None]
    assert box.load_state("logs") == {"offset": 11}
