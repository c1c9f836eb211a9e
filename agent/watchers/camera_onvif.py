"""ONVIF ``GetSystemDateAndTime``: the camera's clock offset against the agent's.

A camera whose clock is off stamps wrong times into its recordings, which weakens them as exam
evidence; the offset is also how a later reader can line up the recording with our events. The
operation needs no authentication (ONVIF Core: PRE_AUTH), so it is asked without credentials.
The response shape is in ``tests/fixtures/onvif/``.
"""

from __future__ import annotations

import calendar
import http.client
import re
import time

_BODY = ('<?xml version="1.0" encoding="UTF-8"?>'
         '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
         '<GetSystemDateAndTime xmlns="http://www.onvif.org/ver10/device/wsdl"/></s:Body></s:Envelope>')
_FIELDS = ("Year", "Month", "Day", "Hour", "Minute", "Second")


def parse_utc(xml: str) -> float | None:
    """Epoch seconds of the ``UTCDateTime`` in a GetSystemDateAndTime response, or None."""
    block = re.search(r"UTCDateTime>(.*?)</[\w-]*:?UTCDateTime", xml, re.S)
    if block is None:
        return None
    values = []
    for name in _FIELDS:
        m = re.search(rf"<(?:[\w-]+:)?{name}>\s*(\d+)\s*<", block[1])
        if m is None:
            return None
        values.append(int(m[1]))
    try:
        return float(calendar.timegm((values[0], values[1], values[2], values[3], values[4], values[5], 0, 0, 0)))
    except (ValueError, OverflowError):
        return None


def clock_offset(host: str, port: int, timeout: float, path: str = "/onvif/device_service") -> float | None:
    """Device clock − agent clock in seconds (the agent's time taken mid-request), None when unknown."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        before = time.time()
        conn.request("POST", path, _BODY.encode(), {"Content-Type": "application/soap+xml; charset=utf-8"})
        resp = conn.getresponse()
        body = resp.read(65536).decode("utf-8", "replace")
        after = time.time()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    device = parse_utc(body) if resp.status == 200 else None
    return None if device is None else round(device - (before + after) / 2, 1)
