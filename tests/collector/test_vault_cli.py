"""The vault's operator commands: `vault verify` (and its alias) names problems and exits
non-zero, `vault prove` prints a proof a third party checks with hashlib and Ed25519 alone,
`vault purge` refuses young data, and `rebuild` re-creates an index equal to the live one."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from collector.cli import main
from collector.config import CollectorConfig, CollectorSection
from collector.ingest import Ingestor, Message
from collector.rebuild import rebuild
from collector.rulerunner import SHIPPED_RULES, RulebookRunner
from collector.rulewindows import MemoryCalendar
from collector.store import Store, schema
from collector.vault import wiring
from protocol import keys
from protocol.envelope import Envelope, canonical_json, record

NOW = 1_800_000_000.0


def _cfg(tmp_path: Path) -> Path:
    path = tmp_path / "collector.toml"
    path.write_text('[collector]\ndata_dir = "data"\n[vault]\nsegment_mb = 1\n')
    return path


def _ingest(tmp_path: Path, store: Store) -> tuple[Ingestor, keys.Ed25519PrivateKey]:
    """A live collector's ingest over the configured vault, fed events, log lines, a birth."""
    cfg = CollectorConfig(collector=CollectorSection(data_dir=tmp_path / "data"))
    akey = keys.new_private_key()
    store.add_venue("V1")
    store.enroll_agent("a1", "V1", keys.public_b64(akey))
    clock = [NOW]
    ing = Ingestor(store, wiring.open_vault(cfg), keys.new_private_key(), gap_grace=5, clock=lambda: clock[0])
    ing.load()

    def msg(stream: str, seq: int, recs: tuple[dict, ...]) -> Message:  # type: ignore[type-arg]
        env = Envelope("a1", "boot1", seq, NOW, stream, recs).signed(akey)
        return Message(f"vg/v1/a1/{stream}", env.encode(), clock[0])

    ing.handle([msg("state", 0, (record("birth", NOW, {"heartbeat_interval": 10}),))])
    for s in range(1, 30, 3):
        clock[0] += 1
        lines = record("log.lines", NOW, {"file_key": "f1", "source": "syslog", "type": "system", "path": "/var/log/syslog",
                                          "lines": [[s * 100, f"line {s}"], [s * 100 + 10, "第二行"]]}, seq=s)
        ing.handle([msg("ev", s + 1, (record("camera.down", NOW, {"ip": "192.0.2.9"}, seq=s + 1),)), msg("log", s, (lines,))])
        ing.vault.tick()
    clock[0] += 60
    ing.tick()  # seq gaps (every third seq is missing) become collector events
    ing.vault.checkpoint()
    return ing, akey


def _snapshot(store: Store) -> dict[str, list[tuple]]:  # type: ignore[type-arg]
    out = {}
    with store.engine.connect() as conn:
        cols = [c for c in schema.records.c if c.name != "id"]
        out["records"] = sorted((tuple(json.dumps(v, sort_keys=True) for v in r)
                                 for r in conn.execute(sa.select(*cols)).all()))
        out["log_lines"] = sorted(tuple(r) for r in conn.execute(sa.select(schema.log_lines)).all())
        out["agents"] = [tuple(r) for r in conn.execute(sa.select(schema.agents.c.id, schema.agents.c.acked_seq)).all()]
    return out


def test_rebuilt_index_equals_the_live_one(store: Store, tmp_path: Path) -> None:
    """Records (agent and collector events), log lines and ack watermarks come back identical."""
    ing, _ = _ingest(tmp_path, store)
    live = _snapshot(store)
    assert len(live["records"]) > 20 and live["log_lines"]
    assert rebuild(store, {"main": ing.vault}) == len(live["records"])
    assert _snapshot(store) == live
    with store.engine.connect() as conn:
        top = conn.execute(sa.select(sa.func.max(schema.records.c.id))).scalar()
    runner = RulebookRunner(store, SHIPPED_RULES, MemoryCalendar())
    assert runner.cursors == {"main": top} and runner.step() == 0, "the rulebook does not judge rebuilt history again"
    ing.vault.close()


def test_verify_prove_and_alias_on_a_live_vault(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """verify passes with agent signatures re-checked; the proof checks with hashlib + Ed25519 only;
    a tampered leaf makes both `vault verify` and `verify-vault` exit 1 naming MODIFIED."""
    cfg = _cfg(tmp_path)
    (tmp_path / "data").mkdir()
    store = Store(f"sqlite:///{tmp_path / 'data' / 'index.sqlite3'}")
    store.migrate()
    ing, _ = _ingest(tmp_path, store)
    ing.vault.close()
    store.close()
    assert main(["--config", str(cfg), "vault", "verify"]) == 0
    out = capsys.readouterr().out
    assert "证据库校验通过" in out and "已复核代理签名 20 个" in out
    assert main(["--config", str(cfg), "vault", "prove", "3"]) == 0
    proof = json.loads(capsys.readouterr().out)
    assert proof["vault_id"] == "main"
    vault_pub = keys.public_b64(keys.load_private_pem((tmp_path / "data" / "vault.key").read_text()))
    assert _third_party_check(proof, vault_pub)
    proof["leaf"] = proof["leaf"].replace("192.0.2.9", "192.0.2.8")
    assert not _third_party_check(proof, vault_pub)
    assert main(["--config", str(cfg), "vault", "prove", "99999"]) == 1
    assert main(["--config", str(cfg), "vault", "prove", "--vault", "b", "3"]) == 1
    assert "[vault] roots" in capsys.readouterr().err  # another collector's vault, not listed here
    seg = sorted((tmp_path / "data" / "vault").glob("seg-*.log"))[0]
    seg.write_bytes(seg.read_bytes().replace(b"line 4", b"line 5", 1))
    capsys.readouterr()
    for argv in (["vault", "verify"], ["verify-vault"]):
        assert main(["--config", str(cfg), *argv]) == 1
        err = capsys.readouterr().err
        assert "MODIFIED（内容被篡改）" in err and "证据库校验失败" in err


def _third_party_check(proof: dict, vault_key_b64: str) -> bool:  # type: ignore[type-arg]
    """RFC 9162 §2.1.3.2 re-implemented here from the proof's own instructions (no project code)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    import base64

    cp = proof["checkpoint"]
    body = json.dumps({k: v for k, v in cp.items() if k != "sig"}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()
    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(vault_key_b64)).verify(base64.b64decode(cp["sig"]), body)
    except InvalidSignature:
        return False
    node = hashlib.sha256(b"\x00" + proof["leaf"].encode()).digest()
    fn, sn = proof["leaf_index"], cp["size"] - 1
    for p in map(bytes.fromhex, proof["audit_path"]):
        if fn & 1 or fn == sn:
            node = hashlib.sha256(b"\x01" + p + node).digest()
            while fn & 1 == 0 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            node = hashlib.sha256(b"\x01" + node + p).digest()
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and node.hex() == cp["root"] and cp["key"] == vault_key_b64


def test_purge_refuses_young_data_and_short_retention(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`vault purge` keeps anything younger than 3 years, refuses --older-than-years below it,
    and will not run beside a running collector (the vault lock)."""
    cfg = _cfg(tmp_path)
    assert main(["--config", str(cfg), "vault", "purge", "--older-than-years", "1"]) == 2
    assert "拒绝清理" in capsys.readouterr().err
    vault = wiring.open_vault(CollectorConfig(collector=CollectorSection(data_dir=tmp_path / "data")))
    vault.append([(NOW, "collector/a1", canonical_json({"n": 1}).decode())])
    assert main(["--config", str(cfg), "vault", "purge"]) == 2
    assert "请先停止采集端" in capsys.readouterr().err
    vault.close()
    assert main(["--config", str(cfg), "vault", "purge"]) == 0
    assert "未删除任何内容" in capsys.readouterr().out
