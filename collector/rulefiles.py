"""Load and validate the rule files in ``rules/`` (the rules-as-data format of ``rules/README.md``).

A rule is evidence in a penalty case, so a rule file that is subtly wrong must fail loudly, not
match nothing: unknown keys, unknown event kinds or fields, ids outside the file's range, duplicate
ids, and clause text that is not the regulation's own words are all errors. Every error names the
file and the line, so ``venueguard-collector rules check`` can print them as they are.

This module only loads and checks; evaluating rules against events is the rulebook's job.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal, NamedTuple, Sequence

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, Tag,
                      ValidationError, field_validator, model_validator)

from collector.eventkinds import is_known, subject_mismatch, unknown_fields

Severity = Literal["violation", "warning", "notice"]
Expect = Literal["violation", "warning", "notice", "none"]
PeriodName = Literal["exam", "sealed"]
Scalar = str | int | float | bool | None
YamlPath = tuple[str | int, ...]

# First digit of a file's three-digit prefix -> what that hundred holds (see rules/README.md).
ID_RANGES: dict[int, str] = {
    1: "LAN devices and addresses",
    2: "exam host: addresses, remote access, wireless",
    3: "network isolation",
    4: "cameras",
    5: "recorders",
    6: "logs",
    7: "readiness and seal",
    8: "agent and delivery health",
    9: "local rules of one authority",
}
FILE_NAME = re.compile(r"^(?P<prefix>[1-9]\d\d)-[a-z0-9]+(?:-[a-z0-9]+)*\.yaml$")
ARTICLE = re.compile(r"^[一二三四五六七八九十]+(?:\([一二三四五六七八九十]+\)(?:\d+)?)?$")
CLAUSE_END = frozenset("，。；：、）」”！？,.;:)")
CJK = re.compile(r"[\u4e00-\u9fff]")
REGULATIONS_ENV = "VENUEGUARD_REGULATIONS"
#: Point rules (events without a clearing event) fold events this close together into one case.
DEFAULT_QUIET_SECONDS = 600


# -- errors -----------------------------------------------------------------------------------


class Finding(NamedTuple):
    """A problem at a YAML path; ``under`` names it by its parent (an unknown key is under its mapping)."""

    path: YamlPath
    message: str
    under: bool = False


@dataclass(frozen=True)
class RuleError:
    """One problem in one rule file; ``str()`` gives ``file:line: message`` like a compiler."""

    file: Path
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else str(self.file)
        return f"{where}: {self.message}"


class RuleFileErrors(ValueError):
    """Raised by :func:`load_rules`; carries every error, not just the first."""

    def __init__(self, errors: Sequence[RuleError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


# -- the schema -------------------------------------------------------------------------------


class _Strict(BaseModel):
    """Unknown keys are errors and YAML types are taken as written (no "15" for 15)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Clause(_Strict):
    """The regulation sentence a rule enforces, quoted verbatim."""

    source: str = Field(min_length=1, description="Document, e.g. 粤应急规〔2023〕3号")
    article: str = Field(pattern=ARTICLE.pattern, description="Article, e.g. 三(二)5 or 二(四)")
    text: str = Field(min_length=4, description="The exact sentence(s), as in the regulation")


class Operator(_Strict):
    """A filter on one data field, written as ``{op: value}`` with exactly one operator."""

    eq: Scalar = None
    ne: Scalar = None
    in_: list[Scalar] | None = Field(default=None, alias="in")
    not_in: list[Scalar] | None = None
    exists: bool | None = None

    @model_validator(mode="after")
    def _one_operator(self) -> Operator:
        """Two operators in one filter would need an and/or the vocabulary does not have."""
        if len(self.model_fields_set) != 1:
            raise ValueError("a filter has exactly one of: eq, ne, in, not_in, exists")
        return self


def _scalar(value: Any) -> Scalar:
    """A bare filter value compares for equality; lists and mappings need an operator."""
    if value is not None and not isinstance(value, (str, int, float, bool)):
        raise ValueError("a filter is a plain value (text, number, true/false, null) or {op: value}")
    return value


def _filter_tag(value: Any) -> str:
    """Pick the filter form up front, so a bad filter gives one error instead of one per form."""
    return "operator" if isinstance(value, (dict, Operator)) else "value"


Filter = Annotated[
    Annotated[Any, AfterValidator(_scalar), Tag("value")] | Annotated[Operator, Tag("operator")],
    Discriminator(_filter_tag),
]


class Match(_Strict):
    """One event kind the rule reacts to, optionally narrowed by its data fields."""

    event: str
    where: dict[str, Filter] = Field(default_factory=dict)

    @field_validator("event")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        """A misspelt kind would make a rule that never fires."""
        return _check_kind(value)


class Period(_Strict):
    """A period in which the rule weighs differently: an exam window or the sealed venue."""

    period: PeriodName
    lead_minutes: int = Field(default=0, ge=0, le=24 * 60)
    lag_minutes: int = Field(default=0, ge=0, le=24 * 60)
    severity: Severity | None = None

    @model_validator(mode="after")
    def _lead_lag_for_exam(self) -> Period:
        """The sealed period runs from the seal to the exam's end; it has no lead or lag."""
        if self.period == "sealed" and {"lead_minutes", "lag_minutes"} & self.model_fields_set:
            raise ValueError("lead_minutes/lag_minutes apply to period: exam only")
        return self


class Held(_Strict):
    """Debounce: the matched state must persist this long (until ``cleared_by``) before a case opens."""

    seconds: int = Field(gt=0)


class Count(_Strict):
    """At least ``at_least`` matching events within ``within_seconds`` (Wazuh frequency/timeframe)."""

    at_least: int = Field(ge=2)
    within_seconds: int = Field(gt=0)
    same: list[str] = Field(default_factory=list)


class Absent(_Strict):
    """None of ``events`` within ``within_seconds``: a missed heartbeat, a probe that never succeeds."""

    events: list[str] = Field(min_length=1)
    within_seconds: int = Field(gt=0)

    @field_validator("events")
    @classmethod
    def _known_kinds(cls, value: list[str]) -> list[str]:
        """Same reason as :meth:`Match._known_kind`."""
        return [_check_kind(k) for k in value]


class SampleEvent(_Strict):
    """An event as the agent sends it (``kind`` and ``data``; ``at`` optional)."""

    kind: str
    data: dict[str, Any] = Field(default_factory=dict)
    at: float | None = None

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        """A sample of an unknown kind proves nothing."""
        return _check_kind(value)


class Sample(_Strict):
    """A rule test as data: one event, when it happens, and the severity expected (or ``none``)."""

    name: str = Field(min_length=1)
    event: SampleEvent
    during: PeriodName | None = None
    expect: Expect


class Rule(_Strict):
    """One rule file. Condition keys beyond ``match`` are read by the rulebook (a later issue)."""

    id: int
    title: str = Field(min_length=2)
    clause: Clause
    also: list[Clause] = Field(default_factory=list)
    severity: Severity
    description: str = Field(min_length=2)
    match: list[Match] = Field(default_factory=list)
    during: list[Period] = Field(default_factory=list)
    only_during: bool = False
    cleared_by: list[str] = Field(default_factory=list)
    held: Held | None = None
    settle_seconds: int | None = Field(default=None, ge=0, le=7 * 24 * 3600)
    count: Count | None = None
    absent: Absent | None = None
    tests: list[Sample] = Field(min_length=1)
    _file: Path = PrivateAttr(default=Path())

    @property
    def file(self) -> Path:
        """The file this rule was loaded from (for messages and case evidence)."""
        return self._file

    @field_validator("cleared_by")
    @classmethod
    def _known_clearers(cls, value: list[str]) -> list[str]:
        """Same reason as :meth:`Match._known_kind`."""
        return [_check_kind(k) for k in value]

    @property
    def is_state(self) -> bool:
        """A state rule's condition lasts from a matching event (or a missed deadline, for
        ``absent``) until a ``cleared_by`` (or the awaited) event."""
        return bool(self.cleared_by) or self.absent is not None

    @property
    def settle(self) -> int:
        """Seconds a condition must stay away before its case closes: flapping stays one case.
        Point rules (no ``cleared_by``) group events this close into one case."""
        if self.settle_seconds is not None:
            return self.settle_seconds
        return 0 if self.is_state else DEFAULT_QUIET_SECONDS

    @field_validator("title", "description")
    @classmethod
    def _chinese(cls, value: str) -> str:
        """Titles and descriptions are read by the authority and venues, in Chinese."""
        if not CJK.search(value):
            raise ValueError("must be written in Simplified Chinese")
        return value



def _check_kind(kind: str) -> str:
    """Raise the error pydantic reports at the kind's own line."""
    if not is_known(kind):
        raise ValueError(f"unknown event kind {kind!r} (known kinds: collector/eventkinds.py)")
    return kind


# -- locating YAML nodes ----------------------------------------------------------------------


def _locate(root: yaml.Node | None, path: Iterable[str | int]) -> tuple[int, str]:
    """1-based line and dotted name of the deepest node on ``path`` (a key's own line for entries).

    Path parts that do not resolve (pydantic's union tags, a missing key) stop the walk, so a
    missing key is reported at its parent's line and under its parent's name.
    """
    if root is None:
        return 1, ""
    anchor, node, name = root, root, ""
    for part in path:
        step = _step(node, part)
        if step is None:
            break
        anchor, node = step
        name = f"{name}[{part}]" if isinstance(part, int) else f"{name}.{part}".lstrip(".")
    return anchor.start_mark.line + 1, name


def _step(node: yaml.Node, part: str | int) -> tuple[yaml.Node, yaml.Node] | None:
    """(anchor, child) for one path part, or None when the part is not in the node."""
    if isinstance(node, yaml.MappingNode) and isinstance(part, str):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == part:
                return key, value
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        item = node.value[part]
        return item, item
    return None


def _duplicate_keys(node: yaml.Node | None) -> list[tuple[int, str]]:
    """Keys given twice in one mapping: YAML keeps the last silently, which hides an edit."""
    found: list[tuple[int, str]] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if key.value in seen:
                found.append((key.start_mark.line + 1, f"key {key.value!r} appears twice"))
            seen.add(key.value)
            found += _duplicate_keys(value)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            found += _duplicate_keys(item)
    return found


# -- regulations ------------------------------------------------------------------------------


def regulations_path() -> Path:
    """Where the regulation texts are: ``$VENUEGUARD_REGULATIONS``, else the copy kept in the
    repository (``rules/regulations/``, so a clone checks itself), else ``<repo>/../shared/regulations``."""
    configured = os.environ.get(REGULATIONS_ENV)
    if configured:
        return Path(configured)
    repo = Path(__file__).resolve().parents[1]
    kept = repo / "rules" / "regulations"
    return kept if any(kept.glob("*.txt")) else repo.parent / "shared" / "regulations"


def normalise(text: str) -> str:
    """Drop all whitespace: the regulation files break lines (and put spaces) inside sentences."""
    return re.sub(r"\s+", "", text)


def read_regulations(path: Path) -> str:
    """All regulation text under ``path`` (a ``.txt`` file or a folder of them), normalised."""
    files = [path] if path.is_file() else sorted(path.glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"no regulation texts (*.txt) at {path}; set {REGULATIONS_ENV}")
    return normalise("\n".join(f.read_text(encoding="utf-8") for f in files))


# -- checks after the schema ------------------------------------------------------------------


def _range_errors(rule: Rule, name: str) -> list[Finding]:
    """The file prefix picks a hundred; the id must lie in it (Wazuh-style id ranges)."""
    found = FILE_NAME.match(name)
    if found is None:
        return [Finding((), "file name must be NNN-name.yaml (three digits 100-999, lowercase words and dashes)")]
    prefix = int(found["prefix"])
    low = prefix // 100 * 100
    if not low <= rule.id <= low + 99:
        what = ID_RANGES[prefix // 100]
        return [Finding(("id",), f"{rule.id} is outside {low}-{low + 99} ({what}), the range of file prefix {prefix}")]
    return []


def _coherence_errors(rule: Rule) -> list[Finding]:
    """Combinations the vocabulary gives no meaning to, at the key that makes them."""
    errors: list[Finding] = []
    if not rule.match and rule.absent is None:
        errors.append(Finding((), "a rule needs 'match' or 'absent'"))
    if rule.held is not None and not rule.cleared_by:
        errors.append(Finding(("held",), "needs 'cleared_by': only a state that can end can be held for a while"))
    if rule.cleared_by and (rule.count is not None or rule.absent is not None):
        errors.append(Finding(("cleared_by",), "applies to 'match' conditions, not to 'count' or 'absent'"))
    for kind in set(rule.cleared_by) & {m.event for m in rule.match}:
        errors.append(Finding(("cleared_by",), f"{kind!r} both opens and clears the condition"))
    for kind in rule.cleared_by:
        problem = subject_mismatch([m.event for m in rule.match], kind)
        if problem:
            errors.append(Finding(("cleared_by",), problem))
    if rule.only_during and not rule.during:
        errors.append(Finding(("only_during",), "needs at least one period under 'during'"))
    seen: set[str] = set()
    for i, period in enumerate(rule.during):
        if period.period in seen:
            errors.append(Finding(("during", i), f"period {period.period!r} appears twice"))
        seen.add(period.period)
    return errors


def _field_errors(rule: Rule) -> list[Finding]:
    """Filters, counts and samples may only name data fields their event kind carries."""
    errors: list[Finding] = []
    for i, m in enumerate(rule.match):
        for name in unknown_fields(m.event, set(m.where)):
            errors.append(Finding(("match", i, "where", name), f"event {m.event!r} has no data field {name!r}"))
    if rule.count is not None:
        for m in rule.match:
            for name in unknown_fields(m.event, set(rule.count.same)):
                errors.append(Finding(("count", "same"), f"event {m.event!r} has no data field {name!r}"))
    for i, s in enumerate(rule.tests):
        for name in unknown_fields(s.event.kind, set(s.event.data)):
            errors.append(Finding(("tests", i, "event", "data", name), f"event {s.event.kind!r} has no data field {name!r}"))
    return errors


def _quote_problem(text: str, regulations: str) -> str | None:
    """Why ``text`` is not a faithful quote, or None: it must occur and must not stop mid-phrase.

    A quote cut short can drop words that change its meaning ("不得…"), so it has to run up to
    a punctuation mark of the regulation (or end with one).
    """
    quote = normalise(text)
    if quote not in regulations:
        return "not found verbatim in the regulation texts"
    if quote[-1] in CLAUSE_END:
        return None
    start = regulations.find(quote)
    while start != -1:
        after = start + len(quote)
        if after == len(regulations) or regulations[after] in CLAUSE_END:
            return None
        start = regulations.find(quote, start + 1)
    return "stops mid-phrase: quote up to the regulation's next punctuation mark"


def _clause_errors(rule: Rule, regulations: str) -> list[Finding]:
    """Source and text must be the regulation's own words (whitespace aside)."""
    errors: list[Finding] = []
    clauses = [(("clause",), rule.clause)] + [(("also", i), c) for i, c in enumerate(rule.also)]
    for path, clause in clauses:
        if normalise(clause.source) not in regulations:
            errors.append(Finding(path + ("source",), "does not occur in the regulation texts"))
        problem = _quote_problem(clause.text, regulations)
        if problem is not None:
            errors.append(Finding(path + ("text",), problem))
    return errors


def _pydantic_errors(exc: ValidationError) -> list[Finding]:
    """Pydantic errors as (path, message) with the wording a rule author understands."""
    out: list[Finding] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            out.append(Finding(loc, f"unknown key {loc[-1]!r}", under=True))
        elif err["type"] == "missing":
            out.append(Finding(loc, f"missing key {loc[-1]!r}"))
        elif err["type"] == "value_error":
            out.append(Finding(loc, err["msg"].removeprefix("Value error, ")))
        else:
            out.append(Finding(loc, f"{err['msg']} (got {err['input']!r})"))
    return out


def _errors_at(path: Path, node: yaml.Node | None, found: list[Finding]) -> list[RuleError]:
    """Findings as RuleErrors with the line and dotted key name their YAML path leads to."""
    errors = []
    for where, message, under in found:
        line, name = _locate(node, where)
        if under:
            name = _locate(node, where[:-1])[1]
        errors.append(RuleError(path, line, f"{name}: {message}" if name else message))
    return errors


# -- loading ----------------------------------------------------------------------------------


def _syntax_error(path: Path, exc: yaml.MarkedYAMLError) -> RuleError:
    """At the line where the parser gave up, naming the line where the construct began."""
    mark = exc.problem_mark or exc.context_mark
    message = f"YAML syntax: {exc.problem or exc}"
    if exc.context and exc.context_mark is not None and exc.context_mark.line != getattr(mark, "line", None):
        message += f" ({exc.context} at line {exc.context_mark.line + 1})"
    return RuleError(path, mark.line + 1 if mark is not None else None, message)


def _parse(path: Path) -> tuple[Any, yaml.Node | None, list[RuleError]]:
    """Data and node tree of one file; a YAML syntax error becomes a RuleError at its line."""
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        return None, None, [_syntax_error(path, exc)]
    return data, node, []


def load_rule(path: Path, regulations: str | None) -> tuple[Rule | None, list[RuleError]]:
    """One file: schema, id range, data fields and (when ``regulations`` is given) clause text."""
    data, node, errors = _parse(path)
    if errors:
        return None, errors
    errors = [RuleError(path, line, msg) for line, msg in _duplicate_keys(node)]
    if not isinstance(data, dict):
        return None, errors + [RuleError(path, 1, "a rule file is a YAML mapping (id, title, clause, ...)")]
    try:
        rule = Rule.model_validate(data)
    except ValidationError as exc:
        return None, errors + _errors_at(path, node, _pydantic_errors(exc))
    rule._file = path
    found = _range_errors(rule, path.name) + _coherence_errors(rule) + _field_errors(rule)
    if regulations is not None:
        found += _clause_errors(rule, regulations)
    errors += _errors_at(path, node, found)
    return (None if errors else rule), errors


def _duplicate_ids(rules: list[Rule]) -> list[RuleError]:
    """Ids are how cases and tests name rules, so two files must never share one."""
    first: dict[int, Rule] = {}
    errors: list[RuleError] = []
    for rule in rules:
        if rule.id in first:
            message = f"{rule.id} is already used by {first[rule.id].file.name}"
            errors += _errors_at(rule.file, _parse(rule.file)[1], [Finding(("id",), message)])
        else:
            first[rule.id] = rule
    return errors


def check_rules(folder: Path, regulations: Path | None = None) -> tuple[list[Rule], list[RuleError]]:
    """Every rule file in ``folder`` with every error found; what ``rules check`` prints."""
    errors: list[RuleError] = []
    try:
        text: str | None = read_regulations(regulations or regulations_path())
    except OSError as exc:
        text = None
        errors.append(RuleError(regulations or regulations_path(), None, f"cannot read regulations: {exc}"))
    if not folder.is_dir():
        return [], errors + [RuleError(folder, None, "no such folder of rule files")]
    rules: list[Rule] = []
    for path in sorted(folder.iterdir()):
        if path.suffix == ".yml":
            errors.append(RuleError(path, None, "rule files end in .yaml, not .yml"))
        if path.suffix != ".yaml" or not path.is_file():
            continue
        rule, found = load_rule(path, text)
        errors += found
        if rule is not None:
            rules.append(rule)
    errors += _duplicate_ids(rules)
    return sorted(rules, key=lambda r: r.id), errors


def load_rules(folder: Path | str, regulations: Path | None = None) -> list[Rule]:
    """The rules in ``folder``, sorted by id; raises :class:`RuleFileErrors` listing every error."""
    rules, errors = check_rules(Path(folder), regulations)
    if errors:
        raise RuleFileErrors(errors)
    return rules


__all__ = [
    "ID_RANGES", "Rule", "RuleError", "RuleFileErrors",
    "check_rules", "load_rule", "load_rules", "normalise", "read_regulations", "regulations_path",
]
