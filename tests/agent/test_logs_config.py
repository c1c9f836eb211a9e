"""The [watchers.logs] section: parsed into a running watcher; bad options named."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import config
from agent.outbox import Outbox
from agent.runtime import build_watchers


def _cfg(tmp_path: Path, body: str) -> config.AgentConfig:
    path = tmp_path / "agent.toml"
    path.write_text("[watchers.host]\nenabled = false\n\n" + body)
    return config.load(path)


def test_logs_section_builds_the_watcher(tmp_path: Path) -> None:
    """Sources, limits and the install date reach the watcher, which starts on the outbox given."""
    (tmp_path / "logs").mkdir()
    cfg = _cfg(tmp_path, f"""[watchers.logs]
enabled = true
max_line_bytes = 4096
install_date = 2024-09-01
[[watchers.logs.sources]]
name = "db"
type = "database"
paths = ["{tmp_path}/logs/*.log"]
""")
    box = Outbox(tmp_path / "o.sqlite3")
    [w] = build_watchers(cfg, lambda: None, box)
    try:
        assert w.name == "logs" and w.max_line_bytes == 4096 and w.install_date is not None  # type: ignore[attr-defined]
        assert [s.type for s in w.sources] == ["database"]  # type: ignore[attr-defined]
    finally:
        w.stop()  # type: ignore[attr-defined]
        box.close()


@pytest.mark.parametrize("body, needle", [
    ('[[watchers.logs.sources]]\nname = "x"\ntype = "web"\npaths = ["/var/log/x.log"]', "type"),
    ('[[watchers.logs.sources]]\nname = "x"\ntype = "system"\npaths = ["/var/log/x.log"]\npath = "/y"', "path"),
    ("max_line_bytes = 100000", "max_line_bytes"),
    ("retention_years = 1", "retention_years"),
])
def test_bad_logs_option_is_named(tmp_path: Path, body: str, needle: str) -> None:
    """A typo or a value out of range is an error naming the option, not a silent default."""
    with pytest.raises(config.ConfigError, match=needle):
        _cfg(tmp_path, "[watchers.logs]\nenabled = true\n" + body)


def test_relative_or_missing_sources_are_refused_at_start(tmp_path: Path) -> None:
    """The watcher refuses relative globs and an empty source list, naming the option."""
    box = Outbox(tmp_path / "o.sqlite3")
    for body, needle in [("", "sources"), ('[[watchers.logs.sources]]\nname = "x"\ntype = "system"\npaths = ["x.log"]', "absolute")]:
        with pytest.raises(ValueError, match=needle):
            build_watchers(_cfg(tmp_path, "[watchers.logs]\nenabled = true\n" + body), lambda: None, box)
    box.close()
