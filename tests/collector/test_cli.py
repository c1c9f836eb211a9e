"""The collector CLI: enrollment writes a private bundle and registers the key; config errors
and a tampered vault are reported in Chinese with a non-zero exit."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.cli import main
from collector.store import Store
from protocol import keys


def _cfg(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "collector.toml"
    path.write_text(f'[collector]\ndata_dir = "data"\n{extra}\n[broker]\nport = 18830\npublic_host = "mqtt.example.test"\n')
    return path


def test_enroll_registers_the_key_and_writes_the_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The bundle names the public broker, holds the key the registry has, and is mode 0600."""
    cfg = _cfg(tmp_path)
    out = tmp_path / "srv1.json"
    assert main(["--config", str(cfg), "enroll", "gz-th01-srv1", "--venue", "GZ-TH01", "--venue-name", "天河考点", "--out", str(out)]) == 0
    assert "已注册代理 gz-th01-srv1" in capsys.readouterr().out
    bundle = keys.read_bundle(out)
    assert (bundle.broker_host, bundle.broker_port, bundle.venue_id) == ("mqtt.example.test", 18830, "GZ-TH01")
    assert out.stat().st_mode & 0o777 == 0o600
    store = Store(f"sqlite:///{tmp_path / 'data' / 'index.sqlite3'}")
    (agent,) = store.agents()
    assert agent.public_key == keys.public_b64(bundle.private_key)
    assert store.venues()[0]["name"] == "天河考点"
    assert (tmp_path / "data" / "collector.key").stat().st_mode & 0o777 == 0o600
    # Re-enrolling replaces the key: the old bundle is no longer the registered one.
    assert main(["--config", str(cfg), "enroll", "gz-th01-srv1", "--venue", "GZ-TH01", "--out", str(out)]) == 0
    assert store.agents()[0].public_key != agent.public_key


def test_enroll_refuses_an_unsafe_agent_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An id that cannot be an MQTT topic level is refused with a reason."""
    assert main(["--config", str(_cfg(tmp_path)), "enroll", "a/b", "--venue", "V"]) == 2
    assert "注册失败" in capsys.readouterr().err


def test_bad_config_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A misspelt option is an error naming it, not a silent default."""
    assert main(["--config", str(_cfg(tmp_path, "databse_url = 'x'")), "migrate"]) == 2
    assert "option collector.databse_url: unknown option" in capsys.readouterr().err


def test_verify_vault_reports_tampering(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """verify-vault passes on an intact vault and fails, naming the spot, on a changed one."""
    from collector.vault import Vault

    cfg = _cfg(tmp_path)
    vault = Vault(tmp_path / "data" / "vault")  # no key: nothing sealed, both entries are the unsealed tail
    vault.append([(1.0, "t", '{"a":1}'), (2.0, "t", '{"a":2}')])
    vault.close()
    assert main(["--config", str(cfg), "verify-vault"]) == 0
    assert "证据库校验通过：2 条" in capsys.readouterr().out
    seg = next((tmp_path / "data" / "vault").glob("seg-*.log"))
    seg.write_bytes(seg.read_bytes().replace(b'{"a":1}', b'{"a":7}'))
    assert main(["--config", str(cfg), "verify-vault"]) == 1
    assert "证据库校验失败" in capsys.readouterr().err


def test_inventory_import_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`inventory import` reports the new version, `inventory show` lists the devices; a bad file
    lists its bad lines and exits 2."""
    cfg = _cfg(tmp_path)
    assert main(["--config", str(cfg), "enroll", "srv1", "--venue", "GZ-TH01", "--out", str(tmp_path / "b.json")]) == 0
    good = tmp_path / "inv.csv"
    good.write_text("venue_id,mac,ip,role,room,name\nGZ-TH01,00:11:22:33:44:01,192.0.2.21,摄像头,第1考场,前门\n")
    capsys.readouterr()
    assert main(["--config", str(cfg), "inventory", "import", str(good)]) == 0
    assert "版本 1" in capsys.readouterr().out
    assert main(["--config", str(cfg), "inventory", "show", "GZ-TH01"]) == 0
    assert "00:11:22:33:44:01  192.0.2.21" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text("venue_id,mac,ip,role,room,name\nGZ-TH01,zz,192.0.2.21,camera,,\n")
    assert main(["--config", str(cfg), "inventory", "import", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "未导入" in err and "第 2 行：MAC 地址 'zz' 不合法" in err


def test_rules_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`rules check` passes on the project's rules and names file:line of a broken copy."""
    import shutil

    root = Path(__file__).resolve().parents[2]
    assert main(["rules", "check", "--folder", str(root / "rules")]) == 0
    assert "规则文件全部有效" in capsys.readouterr().out
    broken = tmp_path / "rules"
    shutil.copytree(root / "rules", broken)
    path = next(broken.glob("110-*.yaml"))
    path.write_text(path.read_text().replace("severity: warning", "severity: fatal", 1))
    assert main(["rules", "check", "--folder", str(broken)]) == 1
    err = capsys.readouterr().err
    assert "规则文件有" in err and f"{path.name}:" in err and "severity" in err


def test_run_refuses_a_vault_id_another_host_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two collectors configured with one vault id would interleave two Merkle logs under one
    name: the second does not start, and says which collector holds the id and how to fix it."""
    path = _cfg(tmp_path)
    (tmp_path / "data").mkdir()
    store = Store(f"sqlite:///{tmp_path / 'data' / 'index.sqlite3'}")
    store.migrate()
    store.claim_vault("main", "other-host:/var/lib/venueguard-collector")
    store.close()
    assert main(["--config", str(path), "run"]) == 2
    err = capsys.readouterr().err
    assert "other-host:/var/lib/venueguard-collector" in err and "node_id" in err
