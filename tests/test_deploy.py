"""deploy/: systemd units pass `systemd-analyze verify`; install and uninstall scripts, run into a
throwaway root, produce and remove the expected files with the expected permissions; the example
collector config documents every option and loads."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Iterator

import pytest

from collector import config as collector_config
from collector.store import Store
from tests.support import ROOT, enroll_agent

DEPLOY = ROOT / "deploy"
SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze"
UNITS = {"agent": "venueguard-agent.service", "collector": "venueguard-collector.service"}


def _mode(path: Path) -> int:
    """Permission bits of ``path``."""
    return stat.S_IMODE(path.stat().st_mode)


def _run(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run a deploy script (or any command) and capture its output."""
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env)


# -- systemd units ------------------------------------------------------------------------------

def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` on a unit file (works without a running systemd)."""
    if not Path(SYSTEMD_ANALYZE).exists():
        pytest.fail("systemd-analyze is missing: apt-get install systemd")
    return _run(SYSTEMD_ANALYZE, "verify", unit, timeout=120)


def _rooted_unit(unit: Path, root: Path, out: Path) -> Path:
    """``unit`` with its /opt paths moved under ``root``, where the installed executables are."""
    out.write_text(unit.read_text(encoding="utf-8").replace("/opt/", f"{root}/opt/"), encoding="utf-8")
    return out


@pytest.mark.parametrize("role", ["agent", "collector"])
def test_unit_files_verify_clean(tmp_path: Path, role: str) -> None:
    """No error and not even a warning (an unknown key is only a warning, hence the empty stderr)."""
    name = UNITS[role]
    exe = tmp_path / "opt" / f"venueguard-{role}" / "venv" / "bin" / f"venueguard-{role}"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    out = _verify(_rooted_unit(DEPLOY / role / name, tmp_path, tmp_path / name))
    assert out.returncode == 0 and out.stderr.strip() == "", out.stderr
    text = (DEPLOY / role / name).read_text(encoding="utf-8")
    for setting in ("Restart=always", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                    f"StateDirectory=venueguard{'-collector' if role == 'collector' else ''}"):
        assert setting in text.splitlines(), setting


def test_agent_unit_grants_only_net_raw() -> None:
    """The agent's raw sockets (ARP sweep, sniffing, ICMP probe) need CAP_NET_RAW and nothing else."""
    lines = (DEPLOY / "agent" / UNITS["agent"]).read_text(encoding="utf-8").splitlines()
    assert "AmbientCapabilities=CAP_NET_RAW" in lines and "CapabilityBoundingSet=CAP_NET_RAW" in lines
    assert "User=venueguard" in lines and "SupplementaryGroups=adm" in lines  # reads root:adm 0640 logs
    collector = (DEPLOY / "collector" / UNITS["collector"]).read_text(encoding="utf-8").splitlines()
    assert "CapabilityBoundingSet=" in collector and any(line.startswith("ExecStartPre=") and line.endswith(" migrate")
                                                         for line in collector)


def test_verify_catches_a_typo(tmp_path: Path) -> None:
    """The clean-stderr check above means something: a misspelt hardening key is reported."""
    unit = tmp_path / "typo.service"
    unit.write_text("[Service]\nExecStart=/bin/true\nProtectSytem=strict\n")
    assert "Unknown key" in _verify(unit).stderr


# -- example config -----------------------------------------------------------------------------

def _documented(path: Path) -> dict[str, set[str]]:
    """Keys per section in a TOML example, set (``key =``) or shown commented (``# key =``)."""
    found: dict[str, set[str]] = {}
    section = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        head = re.match(r"^\[([\w.]+)\]", line)
        if head:
            section = head.group(1)
            found.setdefault(section, set())
            continue
        key = re.match(r"^#?\s?(\w+)\s*=", line)
        if key and section:
            found[section].add(key.group(1))
    return found


def test_collector_example_documents_every_option() -> None:
    """Every field of every section is in the example (generic: a field added later fails here)."""
    example = DEPLOY / "collector.example.toml"
    documented = _documented(example)
    model = collector_config.CollectorConfig
    missing = [f"[{s}] {k}" for s, f in model.model_fields.items() for k in f.annotation.model_fields  # type: ignore[union-attr]
               if k not in documented.get(s, set())]
    assert not missing, f"options missing from {example}: {', '.join(missing)}"
    unknown = [f"[{s}] {k}" for s, keys in documented.items() for k in keys
               if s not in model.model_fields or k not in model.model_fields[s].annotation.model_fields]  # type: ignore[union-attr]
    assert not unknown, f"options in {example} that the collector does not know: {', '.join(unknown)}"


def test_collector_example_loads(tmp_path: Path) -> None:
    """The example is valid as it stands, and with every commented option switched on."""
    example = DEPLOY / "collector.example.toml"
    cfg = collector_config.load(example)
    assert str(cfg.collector.data_dir) == "/var/lib/venueguard-collector"
    on = tmp_path / "all.toml"
    lines = example.read_text(encoding="utf-8").splitlines()
    text = "\n".join(re.sub(r"^# (\w+\s*=)", r"\1", line) for line in lines)
    on.write_text(text.replace('smtp_user = ""', 'smtp_user = "venueguard"'), encoding="utf-8")  # goes with the password file
    everything = tomllib.loads(on.read_text(encoding="utf-8"))
    assert everything["broker"]["tls_ca"] and everything["influx"]["token_file"]
    collector_config.load(on)


# -- install / uninstall into a throwaway root -------------------------------------------------------

@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The venueguard wheel and its dependencies' wheels, as an offline venue host would be given.

    Built from a copy of the tree so the build leaves nothing in it (setuptools builds in place).
    """
    base = tmp_path_factory.mktemp("wheels")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for pkg in ("agent", "collector", "protocol"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    out = base / "wheelhouse"
    built = _run(sys.executable, "-m", "pip", "wheel", "-q", "-w", out, src, timeout=900)
    assert built.returncode == 0, built.stderr[-3000:]
    return out


def _wheel(wheels: Path) -> Path:
    """The venueguard wheel in the wheelhouse."""
    return next(wheels.glob("venueguard-*.whl"))


@pytest.fixture
def bundle(tmp_path: Path) -> Iterator[Path]:
    """A real enrollment bundle, as `venueguard-collector enroll` writes it."""
    store = Store(f"sqlite:///{tmp_path / 'enroll.sqlite3'}")
    store.migrate()
    try:
        yield enroll_agent(store, tmp_path / "collector", "gz-th01-srv1", "GZ-TH01", 8883, tmp_path / "gz.bundle.json")
    finally:
        store.close()


def _install(role: str, root: Path, wheels: Path, *args: Path) -> subprocess.CompletedProcess[str]:
    """deploy/<role>/install.sh into ``root``, offline from the wheelhouse."""
    return _run("bash", DEPLOY / role / "install.sh", "--root", root, "--wheels", wheels, "--python", sys.executable,
                _wheel(wheels), *args)


def test_agent_install_and_uninstall(tmp_path: Path, wheels: Path, bundle: Path) -> None:
    """Files, permissions, a runnable entry point, a verifiable unit; uninstall keeps state; --purge not."""
    root = tmp_path / "root"
    out = _install("agent", root, wheels, bundle)
    assert out.returncode == 0, out.stdout + out.stderr
    etc, state = root / "etc/venueguard", root / "var/lib/venueguard"
    assert (etc / "agent.bundle.json").read_bytes() == bundle.read_bytes() and _mode(etc / "agent.bundle.json") == 0o600
    assert _mode(etc) == 0o750 and _mode(etc / "agent.toml") == 0o640 and _mode(state) == 0o750
    assert (etc / "agent.toml").read_text(encoding="utf-8") == (DEPLOY / "agent.example.toml").read_text(encoding="utf-8")
    unit = root / "etc/systemd/system" / UNITS["agent"]
    assert unit.read_bytes() == (DEPLOY / "agent" / UNITS["agent"]).read_bytes() and _mode(unit) == 0o644
    assert "useradd --system" in out.stdout and "systemctl daemon-reload; systemctl enable --now" in out.stdout
    assert "gz-th01-srv1" in out.stdout
    exe = root / "opt/venueguard-agent/venv/bin/venueguard-agent"
    ran = _run(exe, "check", "--help", timeout=120)
    assert ran.returncode == 0 and "--config" in ran.stdout
    # The installed config and bundle load with the installed code (paths as on the real host).
    loaded = _run(root / "opt/venueguard-agent/venv/bin/python", "-I", "-c",  # -I: not the source tree in cwd
                  "import sys; from pathlib import Path; from agent.config import load; from protocol.keys import read_bundle;"
                  "c = load(Path(sys.argv[1])); print(c.agent.data_dir, read_bundle(Path(sys.argv[2])).agent_id)",
                  etc / "agent.toml", etc / "agent.bundle.json")
    assert loaded.stdout.split() == ["/var/lib/venueguard", "gz-th01-srv1"], loaded.stderr
    verified = _verify(_rooted_unit(unit, root, tmp_path / UNITS["agent"]))
    assert verified.returncode == 0 and verified.stderr.strip() == "", verified.stderr
    # Uninstall: service and venv gone; the outbox (unsent evidence) and identity stay.
    with sqlite3.connect(state / "outbox.sqlite3") as box:  # two records the collector never acknowledged
        box.execute("CREATE TABLE records (seq INTEGER PRIMARY KEY, body BLOB)")
        box.executemany("INSERT INTO records (body) VALUES (?)", [(b"a",), (b"b",)])
    box.close()
    gone = _run("bash", DEPLOY / "agent" / "uninstall.sh", "--root", root)
    assert gone.returncode == 0, gone.stderr
    assert not unit.exists() and not (root / "opt/venueguard-agent").exists()
    assert (state / "outbox.sqlite3").exists() and (etc / "agent.bundle.json").exists() and "--purge" in gone.stdout
    purged = _run("bash", DEPLOY / "agent" / "uninstall.sh", "--root", root, "--purge")
    assert purged.returncode == 0, purged.stderr
    assert "2 条未经采集端确认的记录" in purged.stderr  # said before the evidence goes
    assert not state.exists() and not etc.exists() and "userdel venueguard" in purged.stdout


def test_agent_install_refuses_a_bad_bundle(tmp_path: Path, wheels: Path) -> None:
    """A file that is not an enrollment bundle is named, and nothing is put in /etc."""
    bad = tmp_path / "bad.bundle.json"
    bad.write_text('{"format": "something else"}')
    root = tmp_path / "root"
    out = _install("agent", root, wheels, bad)
    assert out.returncode == 1 and str(bad) in out.stderr and "注册包无效" in out.stderr
    assert not (root / "etc/venueguard").exists()


def test_collector_install_and_uninstall(tmp_path: Path, wheels: Path) -> None:
    """Config from the example, rules beside the code, a working CLI; the vault is never removed."""
    root = tmp_path / "root"
    out = _install("collector", root, wheels)
    assert out.returncode == 0, out.stdout + out.stderr
    etc, state = root / "etc/venueguard", root / "var/lib/venueguard-collector"
    conf = etc / "collector.toml"
    assert conf.read_bytes() == (DEPLOY / "collector.example.toml").read_bytes()
    assert _mode(conf) == 0o640 and _mode(etc) == 0o750 and _mode(state) == 0o750
    assert "venueguard-collector --config /etc/venueguard/collector.toml migrate" in out.stdout
    unit = root / "etc/systemd/system" / UNITS["collector"]
    verified = _verify(_rooted_unit(unit, root, tmp_path / UNITS["collector"]))
    assert verified.returncode == 0 and verified.stderr.strip() == "", verified.stderr
    exe = root / "opt/venueguard-collector/venv/bin/venueguard-collector"
    rules = _run(exe, "rules", "check", timeout=300)  # the shipped rules and regulations came along
    assert rules.returncode == 0, rules.stdout + rules.stderr
    (state / "vault").mkdir()
    gone = _run("bash", DEPLOY / "collector" / "uninstall.sh", "--root", root, "--purge")
    assert gone.returncode == 0, gone.stderr
    assert not unit.exists() and not (root / "opt/venueguard-collector").exists() and not conf.exists()
    assert (state / "vault").is_dir() and "3 年" in gone.stdout


def test_collector_install_refuses_a_bad_config(tmp_path: Path, wheels: Path) -> None:
    """A config with a misspelt option is refused with the option named; the config in force is untouched."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[broker]\nprot = 8883\n")
    root = tmp_path / "root"
    conf = root / "etc/venueguard/collector.toml"
    conf.parent.mkdir(parents=True)
    conf.write_text("[broker]\nport = 8883\n")  # the config in force stays as it was
    out = _install("collector", root, wheels, bad)
    assert out.returncode == 1 and "broker.prot" in out.stderr and "配置文件有误" in out.stderr
    assert conf.read_text() == "[broker]\nport = 8883\n" and not (conf.parent / "collector.toml.bak").exists()


# -- compose file (not run here: no container runtime; checked against the tested configs) ------------

def test_compose_mounts_what_the_tested_broker_config_names() -> None:
    """Every file deploy/mosquitto/mosquitto.conf reads is mounted at that path; the collector migrates
    before it runs, as the unit does; the InfluxDB bucket keeps 3 years."""
    import yaml

    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    broker = compose["services"]["mosquitto"]
    targets = {v.split(":")[1] for v in broker["volumes"]}
    sources = {v.split(":")[0] for v in broker["volumes"] if v.startswith("./mosquitto/")}
    assert all((DEPLOY / s).is_file() for s in sources) and sources
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text(encoding="utf-8")
    named = re.findall(r"^(?:cafile|certfile|keyfile|crlfile|acl_file) (\S+)$", conf, re.M)
    assert named and set(named) <= targets, set(named) - targets
    for folder in re.findall(r"^(?:persistence_location) (\S+?)/?$", conf, re.M):
        assert folder in targets
    listener = re.search(r"^listener (\d+)", conf, re.M)
    assert listener and any(p.endswith(f":{listener.group(1)}") for p in broker["ports"])
    assert any("/etc/mosquitto/venueguard/mosquitto.conf" in part for part in broker["command"])
    collector = compose["services"]["collector"]
    assert " migrate && exec " in " ".join(collector["entrypoint"])
    hours = int(compose["services"]["influxdb"]["environment"]["DOCKER_INFLUXDB_INIT_RETENTION"].rstrip("h"))
    assert hours >= 3 * 365 * 24
