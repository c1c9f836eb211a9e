"""Administration on the real app and store: the role matrix for every admin page, form and API;
inventory and schedule imports showing their per-line errors; device edit and delete; agent
enrollment as a download; maintenance windows declared by venue operators (own venue only) and
decided by admins; users; the vault's checkpoint age; the `user` CLI; and the audit rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from collector import cli, maintenance
from collector.config import CollectorConfig, CollectorSection
from collector.store import Store
from collector.vault.wiring import open_vault
from collector.web import accounts
from protocol.keys import read_bundle
from tests.web import PASSWORD, Clock, add_user, login, make_app, session_csrf

PAGES = ["/admin", "/admin/inventory", "/admin/inventory/GZ-TH01", "/admin/schedule", "/admin/agents",
         "/admin/users", "/admin/audit"]
APIS = ["/api/v1/admin/inventory", "/api/v1/admin/inventory/GZ-TH01", "/api/v1/admin/schedule",
        "/api/v1/admin/agents", "/api/v1/admin/users", "/api/v1/admin/vault", "/api/v1/admin/audit"]
FORMS = ["/admin/inventory/import", "/admin/inventory/GZ-TH01/device", "/admin/inventory/GZ-TH01/device/delete",
         "/admin/schedule/import", "/admin/agents/enroll", "/admin/users/add", "/admin/users/boss/disable",
         "/admin/users/boss/enable", "/admin/users/boss/password", "/maintenance/1/decide",
         "/api/v1/admin/inventory", "/api/v1/admin/schedule"]
INVENTORY = ("venue_id,mac,ip,role,room,name\n"
             "GZ-TH01,00:11:22:33:44:01,192.0.2.11,摄像头,第1考场,前门摄像头\n"
             "GZ-TH01,00:11:22:33:44:02,DHCP,考试机,第1考场,考试机01\n")


@pytest.fixture
def clients(store: Store, tmp_path: Path) -> dict[str, TestClient]:
    """Two venues and one logged-in client per role (the operator belongs to GZ-TH01)."""
    store.add_venue("GZ-TH01", "广州市天河区安全生产考试点")
    store.add_venue("GZ-YX02", "广州市越秀区安全生产考试点")
    add_user(store, "boss", "admin")
    add_user(store, "ann", "viewer")
    add_user(store, "op", "venue", "GZ-TH01")
    app = make_app(store, tmp_path / "data", Clock())
    out = {}
    for role, name in (("admin", "boss"), ("viewer", "ann"), ("venue", "op")):
        out[role] = TestClient(app)
        assert login(out[role], name).status_code == 303
    return out


def _audit(store: Store, action: str) -> list[dict]:
    return [r for r in accounts.audit_rows(store, 1000) if r["action"] == action]


def test_role_matrix(clients: dict[str, TestClient], store: Store) -> None:
    """Admins reach every admin page, API and form; viewers and venue operators get 403 everywhere."""
    for path in PAGES + APIS:
        assert clients["admin"].get(path).status_code == 200, path
        for role in ("viewer", "venue"):
            r = clients[role].get(path)
            assert r.status_code == 403, (role, path)
            assert ("无权访问" in r.text) if not path.startswith("/api/") else r.json() == {"detail": "forbidden"}
    for path in FORMS:
        for role in ("viewer", "venue"):
            token = session_csrf(clients[role])
            r = clients[role].post(path, data={"csrf_token": token, "username": "x", "password": PASSWORD,
                                               "password2": PASSWORD, "role": "admin", "version": "1", "mac": "x"},
                                   files={"file": ("a.csv", b"x")})
            assert r.status_code == 403, (role, path)
    assert [u["username"] for u in accounts.users(store)] == ["ann", "boss", "op"]  # nothing was added
    for path in ("/maintenance", "/api/v1/maintenance"):  # the maintenance list is for every role
        assert all(c.get(path).status_code == 200 for c in clients.values())


def test_inventory_import_shows_errors_then_imports(clients: dict[str, TestClient], store: Store) -> None:
    """A bad file: every bad line on the page in Chinese, nothing changed; a good one: a new version."""
    admin = clients["admin"]
    bad = INVENTORY + "GZ-TH01,zz:zz,192.0.2.12,camera,第1考场,坏MAC\nGZ-TH01,00:11:22:33:44:03,999.1.1.1,camera,1,x\n"
    r = admin.post("/admin/inventory/import", data={"csrf_token": session_csrf(admin)},
                   files={"file": ("venues.csv", bad.encode())})
    assert r.status_code == 400 and 'id="import-errors"' in r.text
    assert "第 4 行：MAC 地址 &#39;zz:zz&#39; 不合法" in r.text and "第 5 行：IP 地址" in r.text
    assert store.inventory("GZ-TH01").devices == ()
    r = admin.post("/admin/inventory/import", data={"csrf_token": session_csrf(admin)},
                   files={"file": ("venues.csv", INVENTORY.encode())})
    assert r.status_code == 200 and "考点 GZ-TH01 的登记设备清单已更新为第 1 版" in r.text
    assert [d.name for d in store.inventory("GZ-TH01").devices] == ["前门摄像头", "考试机01"]
    api = admin.post("/api/v1/admin/inventory", headers={"X-CSRF-Token": session_csrf(admin)},
                     files={"file": ("v.csv", b"venue_id,mac,ip,role,room,name\nNOPE,00:11:22:33:44:09,DHCP,other,,\n")})
    assert api.status_code == 400 and "未注册" in api.json()["errors"][0]
    assert [(a["target"], a["ok"]) for a in _audit(store, "inventory.import")] == [
        ("v.csv", False), ("venues.csv", True), ("venues.csv", False)]


def test_device_edit_and_delete(clients: dict[str, TestClient], store: Store) -> None:
    """One device replaced, one refused (IP taken), one deleted; each a new inventory version."""
    admin = clients["admin"]
    admin.post("/admin/inventory/import", data={"csrf_token": session_csrf(admin)},
               files={"file": ("venues.csv", INVENTORY.encode())})
    page = admin.get("/admin/inventory/GZ-TH01?edit=00:11:22:33:44:01")
    assert "编辑设备 00:11:22:33:44:01" in page.text and "前门摄像头" in page.text
    form = {"csrf_token": session_csrf(admin), "version": "1", "original_mac": "00:11:22:33:44:01",
            "mac": "00-11-22-33-44-01", "ip": "192.0.2.21", "role": "camera", "room": "第1考场", "name": "前门摄像头（新）",
            "vendor": "海康", "stream": "", "http_port": "80", "channel": "1"}
    r = admin.post("/admin/inventory/GZ-TH01/device", data=form, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/admin/inventory/GZ-TH01?done=device_saved"
    inv = store.inventory("GZ-TH01")
    cam = next(d for d in inv.devices if d.mac == "00:11:22:33:44:01")
    assert inv.version == 2 and (cam.ip, cam.name, cam.vendor) == ("192.0.2.21", "前门摄像头（新）", "hikvision")
    clash = admin.post("/admin/inventory/GZ-TH01/device", data={**form, "version": "2", "original_mac": "",
                                                                  "mac": "00:11:22:33:44:05", "name": "x"})
    assert clash.status_code == 400 and "IP 192.0.2.21 已分配给该考点的设备 前门摄像头（新）" in clash.text
    stale = admin.post("/admin/inventory/GZ-TH01/device/delete", data={
        "csrf_token": session_csrf(admin), "mac": "00:11:22:33:44:02", "version": "1"})
    assert stale.status_code == 400 and "清单已被修改" in stale.text
    gone = admin.post("/admin/inventory/GZ-TH01/device/delete", data={
        "csrf_token": session_csrf(admin), "mac": "00:11:22:33:44:02", "version": "2"}, follow_redirects=False)
    assert gone.status_code == 303 and [d.mac for d in store.inventory("GZ-TH01").devices] == ["00:11:22:33:44:01"]
    assert [a["ok"] for a in _audit(store, "inventory.device_delete")] == [True, False]


def test_schedule_import_shows_bilingual_row_errors(clients: dict[str, TestClient], store: Store) -> None:
    """A plan with a bad row is refused with 第 N 行 / row N in both languages; a good one is a version."""
    admin = clients["admin"]
    head = "考点编号,考场,科目,开始时间,结束时间,场次编号\n"
    good = "GZ-TH01,第1考场,电工作业,2026-12-05 09:00,2026-12-05 11:00,TH-1205-1\n"
    bad = "GZ-TH01,第2考场,焊接作业,2026-12-05 11:00,2026-12-05 10:00,TH-1205-2\n"
    r = admin.post("/admin/schedule/import", data={"csrf_token": session_csrf(admin)},
                   files={"file": ("2026-12.csv", (head + good + bad).encode())})
    assert r.status_code == 400 and 'id="import-errors"' in r.text
    assert "第 3 行 / row 3: 结束时间不晚于开始时间 / end is not after start" in r.text
    r = admin.post("/admin/schedule/import", data={"csrf_token": session_csrf(admin)},
                   files={"file": ("2026-12.csv", (head + good).encode())})
    assert r.status_code == 200 and "已导入考试安排第 1 版（2026-12.csv，月份 2026-12，共 1 场）" in r.text
    versions = admin.get("/api/v1/admin/schedule").json()
    assert [(v["id"], v["imported_by"], v["source"]) for v in versions] == [(1, "boss", "2026-12.csv")]
    assert [a["ok"] for a in _audit(store, "schedule.import")] == [True, False]


def test_enrollment_downloads_the_bundle(clients: dict[str, TestClient], store: Store, tmp_path: Path) -> None:
    """The bundle comes back as an attachment and the agent is registered; re-keying must be asked for."""
    admin = clients["admin"]
    form = {"csrf_token": session_csrf(admin), "agent_id": "gz-th01-srv1", "venue_id": "GZ-TH01"}
    r = admin.post("/admin/agents/enroll", data=form)
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    assert r.headers["content-disposition"] == 'attachment; filename="gz-th01-srv1.bundle.json"'
    saved = tmp_path / "b.json"
    saved.write_bytes(r.content)
    bundle = read_bundle(saved)
    assert (bundle.agent_id, bundle.venue_id) == ("gz-th01-srv1", "GZ-TH01")
    key = next(a.public_key for a in store.agents() if a.id == "gz-th01-srv1")
    again = admin.post("/admin/agents/enroll", data=form)
    assert again.status_code == 400 and "已注册" in again.text
    assert admin.post("/admin/agents/enroll", data={**form, "rekey": "yes"}).status_code == 200
    assert next(a.public_key for a in store.agents() if a.id == "gz-th01-srv1") != key
    bad = admin.post("/admin/agents/enroll", data={**form, "agent_id": "bad id/x"})
    assert bad.status_code == 400 and "代理标识或考点编号不合法" in bad.text
    assert [a["ok"] for a in _audit(store, "agent.enroll")] == [False, True, False, True]


def test_enrollment_on_the_page_issues_the_client_certificate_once_a_pki_exists(
        clients: dict[str, TestClient], tmp_path: Path) -> None:
    """After `pki init`, a bundle downloaded from the page carries a certificate with CN = agent id
    (without it the agent could not reach a TLS broker)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    from collector.pki import pki_of

    pki_of(tmp_path / "data").init(["127.0.0.1"], "venueguard-collector")
    admin = clients["admin"]
    r = admin.post("/admin/agents/enroll", data={"csrf_token": session_csrf(admin), "agent_id": "gz-th01-srv2",
                                                 "venue_id": "GZ-TH01"})
    assert r.status_code == 200
    saved = tmp_path / "b.json"
    saved.write_bytes(r.content)
    bundle = read_bundle(saved)
    assert bundle.has_tls
    cert = x509.load_pem_x509_certificate(bundle.tls_cert.encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gz-th01-srv2"


def test_maintenance_declared_by_venue_operator_own_venue_only(clients: dict[str, TestClient], store: Store) -> None:
    """An operator declares for its venue; another venue (or none) is 404; viewers may not; admins decide."""
    op, admin, viewer = clients["venue"], clients["admin"], clients["viewer"]
    form = {"csrf_token": session_csrf(op), "venue_id": "GZ-TH01", "start": "2026-12-05T07:00",
            "end": "2026-12-05T08:00", "rules": "510，520", "reason": "更换录像机硬盘"}
    r = op.post("/maintenance/declare", data=form, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/maintenance?done=declared"
    (w,) = maintenance.windows(store)
    assert (w["venue_id"], w["declared_by"], w["rules"], w["status"]) == ("GZ-TH01", "op", [510, 520], "declared")
    assert w["end"] - w["start"] == 3600
    for venue in ("GZ-YX02", "NO-SUCH"):
        assert op.post("/maintenance/declare", data={**form, "venue_id": venue}).status_code == 404
    assert viewer.post("/maintenance/declare", data={**form, "csrf_token": session_csrf(viewer)}).status_code == 403
    backwards = op.post("/maintenance/declare", data={**form, "end": "2026-12-05T06:00"})
    assert backwards.status_code == 400 and "结束时间须晚于开始时间" in backwards.text
    assert len(maintenance.windows(store)) == 1
    assert op.post(f"/maintenance/{w['id']}/decide", data={"csrf_token": session_csrf(op),
                                                          "decision": "approve"}).status_code == 403
    no_reason = admin.post(f"/maintenance/{w['id']}/decide", data={"csrf_token": session_csrf(admin),
                                                                   "decision": "reject"})
    assert no_reason.status_code == 400 and "驳回须填写审批意见" in no_reason.text
    ok = admin.post(f"/maintenance/{w['id']}/decide", data={"csrf_token": session_csrf(admin),
                                                            "decision": "approve"}, follow_redirects=False)
    assert ok.status_code == 303 and maintenance.windows(store)[0]["status"] == "approved"
    store.add_venue("GZ-YX02")
    maintenance.declare(store, "GZ-YX02", 1.8e9, 1.8e9 + 60, [], "x", "y", 0)
    assert [x["venue_id"] for x in op.get("/api/v1/maintenance").json()] == ["GZ-TH01"]
    assert len(admin.get("/api/v1/maintenance").json()) == 2
    assert "已批准" in op.get("/maintenance").text
    declared = _audit(store, "maintenance.declare")
    assert [(a["username"], a["ok"]) for a in declared] == [("op", False), ("op", True)]
    assert [(a["username"], a["target"]) for a in _audit(store, "maintenance.approve")] == [("boss", "GZ-TH01 #1")]


def test_users_page_adds_disables_and_resets(clients: dict[str, TestClient], store: Store) -> None:
    """Users are added, refused in Chinese, disabled (not oneself), and reset (ending their sessions)."""
    admin, viewer = clients["admin"], clients["viewer"]
    add = {"csrf_token": session_csrf(admin), "username": "zhang", "role": "venue", "venue_id": "GZ-YX02",
           "password": PASSWORD, "password2": PASSWORD}
    assert admin.post("/admin/users/add", data=add, follow_redirects=False).status_code == 303
    assert accounts.find_user(store, "zhang")["venue_id"] == "GZ-YX02"
    dup = admin.post("/admin/users/add", data=add)
    assert dup.status_code == 400 and "用户 zhang 已存在" in dup.text
    nov = admin.post("/admin/users/add", data={**add, "username": "li", "venue_id": ""})
    assert nov.status_code == 400 and "考点操作员必须指定所属考点" in nov.text
    me = admin.post("/admin/users/boss/disable", data={"csrf_token": session_csrf(admin)})
    assert me.status_code == 400 and "不能停用当前登录的账号" in me.text
    token = session_csrf(admin)
    assert admin.post("/admin/users/ann/password", data={"csrf_token": token, "password": "new password 1",
                                                         "password2": "new password 1"}).status_code == 200
    assert viewer.get("/api/v1/maintenance").status_code == 401  # the reset ended ann's session
    assert login(viewer, "ann", "new password 1").status_code == 303
    assert admin.post("/admin/users/ann/disable", data={"csrf_token": token}).status_code == 200
    assert accounts.find_user(store, "ann")["disabled"] is True
    assert "已停用用户" in admin.get("/admin/users?done=user_disabled").text
    assert [a["target"] for a in _audit(store, "user.disable")] == ["ann", "boss"]


def test_vault_status_shows_the_checkpoint_age(clients: dict[str, TestClient], tmp_path: Path) -> None:
    """The newest checkpoint, its age on the app's clock, the witness copy and the segments' size."""
    cfg = CollectorConfig(collector=CollectorSection(data_dir=tmp_path / "data"))
    vault = open_vault(cfg)
    vault.append([(1.8e9, "vg/v1/a/ev", "x" * 100)])
    vault.checkpoint(now=1.8e9 - 90)
    vault.close(seal=False)
    status = clients["admin"].get("/api/v1/admin/vault").json()
    assert status["checkpoint"]["leaves"] == 1 and status["checkpoint"]["age_seconds"] == 90
    assert status["witness"]["n"] == status["checkpoint"]["n"] and status["segments"] == 1 and status["bytes"] > 100
    assert status["fresh"] is True
    page = clients["admin"].get("/admin").text
    assert 'id="vault-status"' in page and "90 秒" in page and "检查点按时签发" in page


def test_each_vault_verify_run_is_shown_on_the_admin_page(clients: dict[str, TestClient], store: Store,
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before any run the page says so; `vault verify` on the collector records its result, time and
    counts in the store, and the page and API show the latest: a pass, then a failure after a leaf
    was altered, with its first problem named."""
    assert clients["admin"].get("/api/v1/admin/vault").json()["last_verify"] is None
    assert "尚未运行过完整校验" in clients["admin"].get("/admin").text
    cfg = CollectorConfig(collector=CollectorSection(data_dir=tmp_path / "data"))
    vault = open_vault(cfg)
    vault.append([(1.8e9, "vg/v1/a/ev", "record one"), (1.8e9, "vg/v1/a/ev", "record two")])
    vault.checkpoint(now=1.8e9)
    vault.close(seal=False)
    toml = tmp_path / "collector.toml"
    toml.write_text(f'[collector]\ndata_dir = "data"\ndatabase_url = {json.dumps(store.url)}\n', encoding="utf-8")
    assert cli.main(["--config", str(toml), "vault", "verify", "--no-signatures"]) == 0  # the leaves are no envelopes
    last = clients["admin"].get("/api/v1/admin/vault").json()["last_verify"]
    assert (last["ok"], last["records"], last["sealed"], last["problem_count"], last["problem"]) == (True, 2, 2, 0, "")
    assert last["signatures_checked"] is False and last["started_at"] <= last["finished_at"]
    page = clients["admin"].get("/admin").text
    assert 'id="last-verify" data-ok="true"' in page and "通过：未发现篡改" in page and "2 条记录" in page
    assert "本次未复核" in page
    seg = sorted((tmp_path / "data" / "vault").glob("seg-*.log"))[0]
    seg.write_bytes(seg.read_bytes().replace(b"record two", b"record 2!!", 1))
    assert cli.main(["--config", str(toml), "vault", "verify", "--no-signatures"]) == 1
    last = clients["admin"].get("/api/v1/admin/vault").json()["last_verify"]
    assert last["ok"] is False and last["problem_count"] >= 1 and last["problem"].startswith("MODIFIED")
    page = clients["admin"].get("/admin").text
    assert 'data-ok="false"' in page and "未通过：发现" in page and "MODIFIED" in page
    assert clients["viewer"].get("/api/v1/admin/vault").status_code == 403


def test_vault_verify_says_when_its_result_cannot_be_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A database that does not answer does not change the verdict, and the operator is told the
    run was not recorded, where, and what to do (the password of the URL is not printed)."""
    cfg = CollectorConfig(collector=CollectorSection(data_dir=tmp_path / "data"))
    vault = open_vault(cfg)
    vault.append([(1.8e9, "vg/v1/a/ev", "record one")])
    vault.checkpoint(now=1.8e9)
    vault.close(seal=False)
    dead = "postgresql+psycopg://vg:s3cret@127.0.0.1:9/none?connect_timeout=3"  # discard port: nothing listens
    toml = tmp_path / "collector.toml"
    toml.write_text(f'[collector]\ndata_dir = "data"\ndatabase_url = {json.dumps(dead)}\n', encoding="utf-8")
    assert cli.main(["--config", str(toml), "vault", "verify", "--no-signatures"]) == 0
    out, err = capsys.readouterr()
    assert "证据库校验通过" in out
    assert "本次校验结果未能记录到数据库" in err and "127.0.0.1:9" in err and "s3cret" not in err


def test_user_cli(store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`user add/list/disable/enable/password` on the configured store, in Chinese; the last admin stays."""
    store.add_venue("GZ-TH01")
    toml = tmp_path / "collector.toml"
    toml.write_text(f'[collector]\ndata_dir = "data"\ndatabase_url = {json.dumps(store.url)}\n', encoding="utf-8")
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n", encoding="utf-8")

    def run(*args: str) -> int:
        return cli.main(["--config", str(toml), "user", *args])

    assert run("add", "boss", "--role", "admin", "--password-file", str(pw)) == 0
    assert run("add", "op", "--role", "venue", "--venue", "GZ-TH01", "--password-file", str(pw)) == 0
    assert run("add", "op2", "--role", "venue", "--password-file", str(pw)) == 1
    assert run("add", "boss", "--role", "viewer", "--password-file", str(pw)) == 1
    out = capsys.readouterr()
    assert "已添加用户 boss（考试机构管理员）" in out.out and "已添加用户 op（考点操作员 · GZ-TH01）" in out.out
    assert "考点操作员必须指定所属考点" in out.err and "用户 boss 已存在" in out.err
    assert run("list") == 0
    listing = capsys.readouterr().out
    assert "boss  考试机构管理员  —" in listing and "op  考点操作员  GZ-TH01" in listing and "启用" in listing
    assert run("disable", "boss") == 1 and "最后一个" in capsys.readouterr().err
    assert run("disable", "op") == 0 and accounts.find_user(store, "op")["disabled"] is True
    assert "已停用" in capsys.readouterr().out
    assert accounts.authenticate(store, "op", PASSWORD) == (None, "disabled")
    assert run("enable", "op") == 0
    pw.write_text("another long password\n", encoding="utf-8")
    assert run("password", "op", "--password-file", str(pw)) == 0
    assert accounts.authenticate(store, "op", "another long password")[1] == "ok"
    assert accounts.find_user(store, "boss")["password_hash"].startswith("$argon2id$")
