"""Agent configuration: defaults work, and every mistake names the option."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import config
from agent.cli import main


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    """An empty file is valid; relative paths resolve against the file's folder."""
    cfg = config.load(_write(tmp_path, ""))
    assert cfg.agent.heartbeat_interval == 10
    assert cfg.agent.bundle == tmp_path / "agent.bundle.json"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[agent]\nheartbeat_intervall = 5\n", "option agent.heartbeat_intervall: unknown option"),
        ("[agent]\nheartbeat_interval = -1\n", "option agent.heartbeat_interval: Input should be greater than 0"),
        ("[uplink]\nreconnect_min = 10\nreconnect_max = 1\n", "uplink.reconnect_max must be >= uplink.reconnect_min"),
        ("[agent\n", "not valid TOML"),
        ("[watchers.host]\ninclude = 5\n", "option watchers.host.include"),
    ],
)
def test_bad_config_names_the_option(tmp_path: Path, text: str, needle: str) -> None:
    """Typos, bad values and broken TOML each raise ConfigError naming the problem."""
    with pytest.raises(config.ConfigError) as info:
        config.load(_write(tmp_path, text))
    assert needle in str(info.value)
    assert str(tmp_path / "agent.toml") in str(info.value)


def test_cli_reports_config_and_bundle_errors_in_chinese(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The operator sees 配置错误 / 注册包错误 and exit code 2, not a traceback."""
    assert main(["run", "--config", str(_write(tmp_path, "[agent]\nbogus = 1\n"))]) == 2
    assert "配置错误" in capsys.readouterr().err
    assert main(["run", "--config", str(_write(tmp_path, ""))]) == 2
    err = capsys.readouterr().err
    assert "注册包错误" in err and "agent.bundle.json" in err


def test_every_watcher_is_built_from_the_example_config(tmp_path: Path) -> None:
    """deploy/agent.example.toml is valid as shipped, and enabling its watchers builds them (the LAN
    watcher is left off here: starting it would sniff and sweep a real interface of this host)."""
    from agent.runtime import build_watchers

    root = Path(__file__).resolve().parents[2]
    text = (root / "deploy" / "agent.example.toml").read_text()
    config.load(_write(tmp_path, text))
    text = text.replace("[watchers.isolation]\nenabled = false", "[watchers.isolation]\nenabled = true")
    text = text.replace('targets = []', 'targets = ["tcp:192.0.2.1:443"]')
    watchers = build_watchers(config.load(_write(tmp_path, text)), lambda: None)
    assert [w.name for w in watchers] == ["host", "isolation"]
