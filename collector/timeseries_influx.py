"""The InfluxDB side of telemetry: one write call and the bucket check, on ``influxdb-client``.

``influxdb-client`` is imported only when telemetry is on (it is not small). Kept apart from the
sink so the sink's policy (buffer, backoff, gaps, cursor) reads without HTTP
details, and so ``timeseries check`` and ``backfill`` use exactly the writer the collector uses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from collector.config import InfluxSection

__all__ = ["MIN_RETENTION_SECONDS", "InfluxWriter", "Retention", "TelemetryError", "WriteFailed", "read_token"]

log = logging.getLogger("venueguard.collector.timeseries")

#: 粤应急规〔2023〕3号 二(四) asks for 3 years of logs; telemetry is kept as long (1095 days).
MIN_RETENTION_SECONDS = 1095 * 86400
#: Statuses worth retrying: the server is busy, restarting or behind a proxy that is.
RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})
#: Statuses that a retry cannot fix but the operator can, without losing the points (keep them).
OPERATOR_FIXABLE = frozenset({401, 403, 404})


class TelemetryError(Exception):
    """A telemetry setting or server problem, with what is wrong and how to fix it."""


class WriteFailed(Exception):
    """One write did not land.

    Args:
        detail: what the server or the network said.
        keep: retry the same points later (unreachable, busy, not authorised, no bucket); False when
            the server refused the points themselves (a retry would be refused again).
    """

    def __init__(self, detail: str, keep: bool) -> None:
        super().__init__(detail)
        self.detail = detail
        self.keep = keep


@dataclass(frozen=True)
class Retention:
    """What the server says of the bucket: ``supported`` False when it has no buckets API
    (VictoriaMetrics), ``seconds`` 0 = kept for ever, None = no such bucket."""

    supported: bool
    seconds: int | None = None


def read_token(section: InfluxSection) -> str:
    """The API token from ``token_file`` (empty without one); a missing or empty file is an error
    at start, not a stream of 401s later."""
    path = section.token_file
    if path is None:
        return ""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise TelemetryError(f"[influx] token_file {path}: cannot read it ({exc.strerror}); write the InfluxDB API "
                             "token with write access to the bucket into that file (mode 0600), or remove "
                             "token_file for a server without authentication") from exc
    if not token:
        raise TelemetryError(f"[influx] token_file {path} is empty: write the InfluxDB API token into it")
    return token


class InfluxWriter:
    """Writes line-protocol points to ``[influx] bucket`` at ``url`` (``/api/v2/write``)."""

    def __init__(self, section: InfluxSection) -> None:
        if not section.url:
            raise TelemetryError("[influx] url is empty: telemetry is off; set it, e.g. url = \"http://127.0.0.1:8086\"")
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.section = section
        self.client = InfluxDBClient(url=section.url, token=read_token(section), org=section.org,
                                     timeout=int(section.timeout * 1000), enable_gzip=True, retries=False)
        self._api = self.client.write_api(write_options=SYNCHRONOUS)

    def write(self, lines: list[str]) -> None:
        """Write ``lines`` (millisecond timestamps) in one request; raise :class:`WriteFailed`."""
        import urllib3.exceptions
        from influxdb_client.domain.write_precision import WritePrecision
        from influxdb_client.rest import ApiException

        try:
            self._api.write(self.section.bucket, self.section.org, lines, write_precision=WritePrecision.MS)
        except ApiException as exc:
            body = (exc.body or "").strip() if isinstance(exc.body, str) else str(exc.body or "")
            detail = f"HTTP {exc.status} {exc.reason or ''}: {body[:300]}".strip()
            raise WriteFailed(detail + _hint(exc.status, self.section), keep=exc.status in RETRYABLE | OPERATOR_FIXABLE
                              or exc.status is None) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise WriteFailed(f"{self.section.url} unreachable: {type(exc).__name__}: {exc}", keep=True) from exc

    def retention(self) -> Retention:
        """The bucket's retention where the server offers the buckets API (InfluxDB 2.x)."""
        import urllib3.exceptions
        from influxdb_client.rest import ApiException

        try:
            bucket = self.client.buckets_api().find_bucket_by_name(self.section.bucket)
        except ApiException as exc:
            if exc.status in (404, 405, 400, 501):  # no buckets API (VictoriaMetrics answers 400/404 here)
                return Retention(supported=False)
            raise TelemetryError(f"{self.section.url} buckets API: HTTP {exc.status}{_hint(exc.status, self.section)}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TelemetryError(f"{self.section.url} unreachable: {type(exc).__name__}: {exc}") from exc
        if bucket is None:
            return Retention(supported=True, seconds=None)
        rules = bucket.retention_rules or []
        return Retention(supported=True, seconds=min((r.every_seconds or 0 for r in rules), default=0))

    def close(self) -> None:
        """Release the HTTP pool."""
        self.client.close()


def _hint(status: int | None, section: InfluxSection) -> str:
    """How to fix a refusal, named after the setting that causes it."""
    if status == 401 or status == 403:
        return " (check the token in [influx] token_file: it needs write access to the bucket)"
    if status == 404:
        return (f" (no bucket {section.bucket!r} in org {section.org!r}: create it, see "
                "`venueguard-collector timeseries check`)")
    return ""
