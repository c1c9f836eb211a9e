"""``venueguard-collector timeseries check|backfill``: the telemetry bucket's operator commands.

``check`` is the doctor for ``[influx]``: token file, a test write, and the bucket's retention
(at least 3 years) where the server has the InfluxDB 2.x buckets API; VictoriaMetrics has none,
so there the retention is reported as not checkable rather than as a failure. ``backfill``
re-derives points from the stored records of a period (after an outage longer than the buffer,
or a recorded telemetry gap). Messages come from ``collector/strings`` (keys ``ts_*``).
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from collector import config
from collector.strings import t

__all__ = ["Finding", "add_parsers", "findings", "handler"]


@dataclass(frozen=True)
class Finding:
    """One line of the check: ``level`` ok, warn or fail, a strings key and its placeholders."""

    level: str
    key: str
    params: dict[str, Any]

    def text(self) -> str:
        """The operator's line, in the configured language."""
        return t(self.key, **self.params)


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``timeseries check`` and ``timeseries backfill``."""
    ts = sub.add_parser("timeseries", help="telemetry in InfluxDB ([influx]): check, backfill")
    tsub = ts.add_subparsers(dest="timeseries_command", required=True)
    tsub.add_parser("check", help="token, a test write, and the bucket's retention (>= 3 years)")
    back = tsub.add_parser("backfill", help="re-write the telemetry points of stored records from a time on")
    back.add_argument("--since", required=True, help="start, e.g. 2026-12-01 or '2026-12-01 08:00' "
                      "([schedule] timezone) or an ISO time with offset")
    back.add_argument("--until", default=None, help="end (exclusive); default: now")


def handler(cfg: config.CollectorConfig, args: argparse.Namespace) -> int:
    """Run the chosen ``timeseries`` command."""
    if not cfg.influx.url:
        print(t("ts_off"), file=sys.stderr)
        return 2
    return {"check": check_command, "backfill": backfill_command}[args.timeseries_command](cfg, args)


def findings(section: config.InfluxSection) -> list[Finding]:
    """Everything ``check`` (and a doctor) says of ``[influx]``, in order; stops at the first failure."""
    from collector.timeseries_influx import MIN_RETENTION_SECONDS, InfluxWriter, TelemetryError, WriteFailed

    where = {"url": section.url, "bucket": section.bucket, "org": section.org}
    try:
        writer = InfluxWriter(section)
    except TelemetryError as exc:
        return [Finding("fail", "ts_fail", {"detail": str(exc)})]
    try:
        probe = f"vg_collector,host={socket.gethostname().replace(' ', '_') or 'collector'} check=1.0 {round(time.time() * 1000)}"
        writer.write([probe])
        out = [Finding("ok", "ts_write_ok", where)]
        retention = writer.retention()
    except WriteFailed as exc:
        return [Finding("fail", "ts_fail", {"detail": exc.detail})]
    except TelemetryError as exc:
        return out + [Finding("fail", "ts_fail", {"detail": str(exc)})]
    finally:
        writer.close()
    days = {"min_days": MIN_RETENTION_SECONDS // 86400, **where}
    if not retention.supported:
        return out + [Finding("warn", "ts_retention_unknown", days)]
    if retention.seconds is None:
        return out + [Finding("fail", "ts_bucket_missing", days)]
    if retention.seconds and retention.seconds < MIN_RETENTION_SECONDS:
        return out + [Finding("fail", "ts_retention_short", {**days, "days": round(retention.seconds / 86400, 1)})]
    return out + [Finding("ok", "ts_retention_ok", {**days, "days": round(retention.seconds / 86400, 1)
                                                    if retention.seconds else "∞"})]


def check_command(cfg: config.CollectorConfig, _args: argparse.Namespace) -> int:
    """Print each finding; exit 1 when any failed (a warning alone is not a failure)."""
    found = findings(cfg.influx)
    for f in found:
        print(f.text(), file=sys.stdout if f.level == "ok" else sys.stderr)
    return 1 if any(f.level == "fail" for f in found) else 0


def backfill_command(cfg: config.CollectorConfig, args: argparse.Namespace) -> int:
    """Re-write the points of stored records in [since, until); exit 1 naming the failure."""
    from collector.runtime import open_store
    from collector.timeseries import backfill
    from collector.timeseries_influx import InfluxWriter, TelemetryError

    try:
        tz = ZoneInfo(cfg.schedule.timezone)
        since = parse_when(args.since, tz)
        until = parse_when(args.until, tz) if args.until else time.time()
    except ValueError as exc:
        print(t("ts_bad_time", detail=exc), file=sys.stderr)
        return 2
    store = open_store(cfg)
    try:
        writer = InfluxWriter(cfg.influx)
        try:
            records, points = backfill(store, writer, since, until, cfg.influx.batch_size)
        finally:
            writer.close()
    except TelemetryError as exc:
        print(t("ts_fail", detail=exc), file=sys.stderr)
        return 1
    finally:
        store.close()
    print(t("ts_backfilled", records=records, points=points, since=_local(since, tz), until=_local(until, tz),
            bucket=cfg.influx.bucket))
    return 0


def parse_when(text: str, tz: ZoneInfo) -> float:
    """``2026-12-01``, ``2026-12-01 08:00`` (in ``tz``) or an ISO time with an offset, as epoch seconds."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not a date or time: {text!r} (e.g. 2026-12-01 or '2026-12-01 08:00')") from None
    return (when if when.tzinfo else when.replace(tzinfo=tz)).timestamp()


def _local(epoch: float, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(epoch, tz).strftime("%Y-%m-%d %H:%M")
