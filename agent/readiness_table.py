"""The readiness report as venue staff read it: a rich table in Chinese and a summary line.

检查项 / 结果 (通过 / 不通过 / 无法检查) / 所见 / 如何整改, one row per item of the report, in the
order of :data:`protocol.readiness.ITEMS`. Text comes from ``agent/strings``.
"""

from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.table import Table
from rich.text import Text

from agent.strings import t
from protocol.readiness import Report

STYLES = {"pass": "green", "fail": "bold red", "unknown": "yellow"}
#: ``venueguard-agent check`` exit codes: everything passed / something failed / nothing failed
#: but something could not be checked (2 is a bad config, as for ``run``).
EXIT_CODES = {"pass": 0, "fail": 1, "unknown": 3}


def render(report: Report, console: Console, header: list[str]) -> None:
    """Print ``header`` lines, the table and the summary."""
    for line in header:
        console.print(Text(line))
    table = Table(show_lines=True)
    for column in ("rd.col.item", "rd.col.result", "rd.col.seen", "rd.col.fix"):
        table.add_column(t(column), overflow="fold")
    for item in report.items:  # Text, not markup: "[watchers.lan]" in a hint is not a style tag
        table.add_row(Text(t(f"rd.item.{item.item}")), Text(t("rd.result." + item.result), style=STYLES[item.result]),
                      Text(item.seen), Text(item.fix or "—"))
    console.print(table)
    console.print(Text(summary(report), style=STYLES[report.result]))


def summary(report: Report) -> str:
    """``共 14 项：通过 12，不通过 1，无法检查 1。结论：不通过``."""
    counts = Counter(i.result for i in report.items)
    return t("rd.summary", total=len(report.items), passed=counts["pass"], failed=counts["fail"],
             unknown=counts["unknown"], verdict=t("rd.result." + report.result))
