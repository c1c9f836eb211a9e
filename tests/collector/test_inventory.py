"""Inventory import from CSV: per-line errors in Chinese, all-or-nothing, versioned (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.inventory import InventoryError, import_file, parse_csv
from collector.store import Store
from protocol.inventory import Device

GOOD = """venue_id,mac,ip,role,room,name
GZ-TH01,00:11:22:33:44:01,192.0.2.21,摄像头,第1考场,前门摄像头
GZ-TH01,00-11-22-33-44-02,192.0.2.22,recorder,,录像机
GZ-TH01,0011.2233.4403,DHCP,考试终端,第1考场,考试机 01
"""


def test_good_file_imports_and_versions(store: Store, tmp_path: Path) -> None:
    """Devices land normalised; each import bumps the venue's inventory version and replaces the set."""
    store.add_venue("GZ-TH01")
    path = tmp_path / "inv.csv"
    path.write_text(GOOD, encoding="utf-8")
    assert import_file(store, path) == {"GZ-TH01": 1}
    inv = store.inventory("GZ-TH01")
    assert inv.version == 1 and inv.devices == (
        Device("00:11:22:33:44:01", "192.0.2.21", "camera", "第1考场", "前门摄像头"),
        Device("00:11:22:33:44:02", "192.0.2.22", "recorder", "", "录像机"),
        Device("00:11:22:33:44:03", None, "exam_terminal", "第1考场", "考试机 01"),
    )
    path.write_text(GOOD.splitlines()[0] + "\n" + GOOD.splitlines()[1] + "\n", encoding="utf-8")
    assert import_file(store, path) == {"GZ-TH01": 2}
    assert [d.mac for d in store.inventory("GZ-TH01").devices] == ["00:11:22:33:44:01"]
    assert store.inventory_versions() == {"GZ-TH01": 2}


def test_every_bad_line_is_named_and_nothing_changes(store: Store, tmp_path: Path) -> None:
    """Bad venue, MAC, IP, role and duplicates are each reported by line; the inventory is untouched."""
    store.add_venue("GZ-TH01")
    bad = GOOD + "\n".join([
        "GZ-XX99,00:11:22:33:44:09,192.0.2.30,camera,,",
        "GZ-TH01,00:11:22:33:44,192.0.2.31,camera,,",
        "GZ-TH01,00:11:22:33:44:0a,192.0.2.300,camera,,",
        "GZ-TH01,00:11:22:33:44:0b,192.0.2.32,printer,,",
        "GZ-TH01,00:11:22:33:44:01,192.0.2.33,camera,,",
        "GZ-TH01,00:11:22:33:44:0c,192.0.2.21,camera,,",
    ]) + "\n"
    path = tmp_path / "inv.csv"
    path.write_text(bad, encoding="utf-8")
    with pytest.raises(InventoryError) as info:
        import_file(store, path)
    lines = [(e.line, e.message.split("（")[0]) for e in info.value.errors]
    assert [n for n, _ in lines] == [5, 6, 7, 8, 9, 10]
    assert "GZ-XX99" in lines[0][1] and "未注册" in lines[0][1]
    assert "MAC 地址" in lines[1][1] and "IP 地址" in lines[2][1] and "printer" in lines[3][1]
    assert "与第 2 行重复" in lines[4][1] and "已在第 2 行" in lines[5][1]
    assert str(info.value.errors[0]).startswith("第 5 行：")
    assert store.inventory("GZ-TH01").devices == () and store.inventory_versions() == {"GZ-TH01": 0}


def test_header_must_name_the_columns() -> None:
    """A file without the expected header is refused at line 1, naming the columns."""
    with pytest.raises(InventoryError, match="表头缺少列 venue_id, mac"):
        parse_csv("a,b\n1,2\n", {"V"})


def test_camera_and_recorder_endpoints_are_imported(store: Store, tmp_path: Path) -> None:
    """The optional vendor/stream/http_port/channel columns reach the signed inventory; a bad one is named."""
    store.add_venue("GZ-TH01")
    path = tmp_path / "inv.csv"
    path.write_text("venue_id,mac,ip,role,room,name,vendor,stream,http_port,channel\n"
                    "GZ-TH01,00:11:22:33:44:01,198.51.100.21,摄像头,第1考场,前门,海康,/Streaming/Channels/102,80,1\n"
                    "GZ-TH01,00:11:22:33:44:02,198.51.100.22,录像机,,录像机,dahua,,8080,\n", encoding="utf-8")
    import_file(store, path)
    cam, rec = store.inventory("GZ-TH01").devices
    assert (cam.vendor, cam.stream, cam.http_port, cam.channel) == ("hikvision", "/Streaming/Channels/102", 80, 1)
    assert (rec.vendor, rec.http_port, rec.channel) == ("dahua", 8080, 0)
    path.write_text("venue_id,mac,ip,role,room,name,vendor,http_port\nGZ-TH01,00:11:22:33:44:01,198.51.100.21,camera,,,sony,99999\n",
                    encoding="utf-8")
    with pytest.raises(InventoryError, match="厂商 'sony' 不合法"):
        import_file(store, path)
