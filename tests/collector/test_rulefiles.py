"""Rule files in rules/: every one loads, quotes its clause verbatim, and broken ones fail at the right line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from collector.eventkinds import EVENT_KINDS
from collector.rulefiles import (ID_RANGES, Rule, RuleError, RuleFileErrors, check_rules, load_rules,
                                 read_regulations, regulations_path)

RULES = Path(__file__).resolve().parents[2] / "rules"

# A small valid rule; the broken-file tests change one line of it and expect the error there.
GOOD = """\
id: 110
title: 考场网络存在非考试设备接入
clause:
  source: 粤应急规〔2023〕3号
  article: 三(二)5
  text: 考场网络存在非考试设备接入的
severity: warning
during:
  - period: exam
    lead_minutes: 15
    severity: violation
match:
  - event: device.unregistered
    where:
      randomized: false
description: 考场局域网中出现未登记设备，考点应断开该设备。
tests:
  - name: 考试期间出现未登记设备
    during: exam
    event:
      kind: device.unregistered
      data: {mac: "02:11:22:33:44:55", ip: 192.0.2.77, randomized: false}
    expect: violation
"""

# Stand-in regulation text: a line break inside the sentence, as in the real file.
REGULATION = "粤应急规〔2023〕3号\n5. 不严格执行考场纪律，考场网络存在非考试\n\n设备接入的；或者擅自改变……\n"


def _line(text: str, needle: str) -> int:
    """1-based number of the first line of ``text`` containing ``needle``."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def _check(tmp_path: Path, files: dict[str, str]) -> list[RuleError]:
    """Write ``files`` into a fresh rules folder and return the errors found there."""
    folder = tmp_path / "rules"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    regulations = tmp_path / "regulations.txt"
    regulations.write_text(REGULATION, encoding="utf-8")
    return check_rules(folder, regulations)[1]


def test_every_rule_file_loads_and_validates() -> None:
    """All rules/*.yaml pass every check against the real regulation texts, one rule per file."""
    rules = load_rules(RULES)
    assert len(rules) == len(list(RULES.glob("*.yaml"))) >= 5
    assert all(isinstance(r, Rule) for r in rules)
    assert not list(RULES.glob("*.yml"))


def test_the_issue_requirements_each_have_a_rule() -> None:
    """Unregistered device, IP changed, remote access, wireless and isolation each have their rule and events."""
    kinds = {r.id: {m.event for m in r.match} for r in load_rules(RULES)}
    assert kinds[110] == {"device.unregistered"}
    assert kinds[120] == {"device.ip_changed", "device.mac_changed", "host.registered_address_changed"}
    assert kinds[210] == {"host.remote_tool", "host.remote_listener"}
    assert kinds[220] == {"host.wireless_present"}
    assert kinds[310] == {"isolation.breached", "host.route_outside"}


def test_lan_rules_are_violations_in_exam_windows_and_warnings_outside() -> None:
    """The LAN/host/isolation issue's severity model (rules 100-399): warning at any time, violation
    from exam start − 15 min to its end. (The recorder must be on always: rule 510 is a violation.)"""
    for rule in (r for r in load_rules(RULES) if r.id < 400):
        assert rule.severity == "warning", rule.file.name
        exam = [p for p in rule.during if p.period == "exam"]
        assert len(exam) == 1 and exam[0].severity == "violation" and exam[0].lead_minutes == 15, rule.file.name


def test_clause_texts_occur_verbatim_in_the_regulations() -> None:
    """Each clause and `also` text is the regulation's own words once whitespace is dropped (checked here independently)."""
    files = sorted(regulations_path().glob("*.txt"))
    assert files, f"no regulation texts at {regulations_path()}"
    regulation = re.sub(r"\s", "", "".join(f.read_text(encoding="utf-8") for f in files))
    for rule in load_rules(RULES):
        for clause in [rule.clause, *rule.also]:
            assert re.sub(r"\s", "", clause.text) in regulation, (rule.file.name, clause.text)
            assert re.sub(r"\s", "", clause.source) in regulation, (rule.file.name, clause.source)


def test_ids_are_unique_and_within_their_file_prefix_range() -> None:
    """No two files share an id, and each id lies in the hundred its NNN- prefix declares."""
    rules = load_rules(RULES)
    assert len({r.id for r in rules}) == len(rules)
    for rule in rules:
        prefix = int(rule.file.name[:3])
        assert prefix // 100 in ID_RANGES
        assert prefix // 100 * 100 <= rule.id <= prefix // 100 * 100 + 99, rule.file.name


def test_samples_are_well_formed() -> None:
    """Samples name known kinds and fields, cover matching and non-matching events, and expected matches are matched kinds."""
    for rule in load_rules(RULES):
        matched = {m.event for m in rule.match}
        expects = {s.expect for s in rule.tests}
        assert expects & {"violation", "warning", "notice"}, rule.file.name
        for sample in rule.tests:
            kind = EVENT_KINDS[sample.event.kind]
            assert kind.fields is None or set(sample.event.data) <= kind.fields, (rule.file.name, sample.name)
            if sample.expect != "none":
                assert sample.event.kind in matched, (rule.file.name, sample.name)


def test_the_good_template_passes(tmp_path: Path) -> None:
    """The template the broken-file tests start from is itself valid, so each failure below is the one change."""
    assert _check(tmp_path, {"110-lan.yaml": GOOD}) == []


BROKEN = [
    # (what, old line, new line, where the error must be, words in the message)
    ("unknown key", "severity: warning", "severity: warning\nseverty: notice", "severty: notice", "unknown key 'severty'"),
    ("wrong severity", "severity: warning", "severity: error", "severity: error", "severity"),
    ("wrong period severity", "    severity: violation", "    severity: critical", "severity: critical", "during[0].severity"),
    ("unknown event kind", "  - event: device.unregistered", "  - event: device.unregistred", "event: device.unregistred", "unknown event kind"),
    ("unknown sample kind", "      kind: device.unregistered", "      kind: device.new", "kind: device.new", "tests[0].event.kind"),
    ("id outside range", "id: 110", "id: 210", "id: 210", "outside 100-199"),
    ("clause not in regulations", "  text: 考场网络存在非考试设备接入的", "  text: 考场网络存在非考试终端接入的", "text: 考场网络存在非考试终端", "not found verbatim"),
    ("clause cut short", "  text: 考场网络存在非考试设备接入的", "  text: 考场网络存在非考试设备接入", "text: 考场网络存在非考试设备接入", "mid-phrase"),
    ("source not in regulations", "  source: 粤应急规〔2023〕3号", "  source: 粤应急规〔2023〕4号", "source: 粤应急规〔2023〕4号", "clause.source"),
    ("missing clause key", "  article: 三(二)5\n", "", "clause:", "missing key 'article'"),
    ("unknown filter field", "      randomized: false", "      randomised: false", "randomised: false", "no data field 'randomised'"),
    ("unknown filter operator", "      randomized: false", "      randomized: {equals: false}", "randomized: {equals", "unknown key 'equals'"),
    ("unknown sample field", "ip: 192.0.2.77, randomized", "ipv4: 192.0.2.77, randomized", "ipv4: 192.0.2.77", "no data field 'ipv4'"),
    ("only_during without periods", "during:\n  - period: exam\n    lead_minutes: 15\n    severity: violation\n", "only_during: true\n", "only_during", "needs at least one period"),
    ("key given twice", "severity: warning", "severity: warning\nseverity: notice", "severity: notice", "appears twice"),
    ("title not Chinese", "title: 考场网络存在非考试设备接入", "title: Unregistered device", "title: Unregistered", "Simplified Chinese"),
    # The parser notices an unclosed bracket on the next line; the message names where it opened.
    ("YAML syntax", "    lead_minutes: 15", "    lead_minutes: [15", "    severity: violation", "at line 10"),
]


@pytest.mark.parametrize(("what", "old", "new", "at", "words"), BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_file_names_the_file_and_line(tmp_path: Path, what: str, old: str, new: str, at: str, words: str) -> None:
    """One broken line yields an error naming the file and that line, with words that say what is wrong."""
    assert old in GOOD, what
    text = GOOD.replace(old, new, 1)
    errors = _check(tmp_path, {"110-lan.yaml": text})
    assert errors, what
    first = errors[0]
    assert first.file.name == "110-lan.yaml"
    assert first.line == _line(text, at), str(first)
    assert words in first.message, str(first)
    assert str(first).startswith(f"{first.file}:{first.line}: ")


def test_duplicate_ids_name_both_files(tmp_path: Path) -> None:
    """A second file with an id already used is reported at its id line, naming the first file."""
    errors = _check(tmp_path, {"110-lan.yaml": GOOD, "111-lan-copy.yaml": GOOD})
    assert [(e.file.name, e.line) for e in errors] == [("111-lan-copy.yaml", 1)]
    assert "already used by 110-lan.yaml" in errors[0].message


def test_bad_file_names_are_reported(tmp_path: Path) -> None:
    """Names outside NNN-name.yaml (no prefix, .yml) are errors, not silently skipped rules."""
    errors = _check(tmp_path, {"lan.yaml": GOOD, "110-lan.yml": GOOD})
    assert {e.file.name for e in errors} == {"lan.yaml", "110-lan.yml"}


def test_load_rules_raises_every_error_printable(tmp_path: Path) -> None:
    """load_rules raises RuleFileErrors whose text is one `file:line: message` per error, ready for `rules check`."""
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "110-a.yaml").write_text(GOOD.replace("severity: warning", "severity: error"), encoding="utf-8")
    (folder / "120-b.yaml").write_text(GOOD.replace("id: 110", "id: 120").replace("event: device.unregistered", "event: x.y"), encoding="utf-8")
    regulations = tmp_path / "reg.txt"
    regulations.write_text(REGULATION, encoding="utf-8")
    with pytest.raises(RuleFileErrors) as caught:
        load_rules(folder, regulations)
    lines = str(caught.value).splitlines()
    assert len(lines) == len(caught.value.errors) == 2
    assert lines[0].startswith(f"{folder / '110-a.yaml'}:7: ")
    assert lines[1].startswith(f"{folder / '120-b.yaml'}:13: ")


def test_regulations_folder_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """VENUEGUARD_REGULATIONS overrides ../shared/regulations, and a missing folder is an error, not a pass."""
    monkeypatch.setenv("VENUEGUARD_REGULATIONS", str(tmp_path / "nowhere"))
    assert regulations_path() == tmp_path / "nowhere"
    rules, errors = check_rules(RULES)
    assert rules and [e.file for e in errors] == [tmp_path / "nowhere"]
    (tmp_path / "reg").mkdir()
    (tmp_path / "reg" / "a.txt").write_text(REGULATION, encoding="utf-8")
    monkeypatch.setenv("VENUEGUARD_REGULATIONS", str(tmp_path / "reg"))
    assert "考场网络存在非考试设备接入的" in read_regulations(regulations_path())
