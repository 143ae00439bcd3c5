"""The request line a server writes itself is the line structlog would have written."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import structlog

from mirror import log


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """What the sink writes, with the server's JSON set-up; structlog's defaults after."""
    stream = io.StringIO()
    saved = log._sink._stream
    log._sink._stream = stream
    log.configure(json=True)
    try:
        yield stream
    finally:
        log.flush()
        log._sink._stream = saved
        structlog.reset_defaults()
        log._direct_lines = False


def _written(stream: io.StringIO) -> list[dict[str, object]]:
    log.flush()
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_request_line_matches_structlog_rendering(lines: io.StringIO) -> None:
    """Same keys and values as structlog's JSON renderer, timestamp aside (ISO, UTC, `Z`)."""
    facts = {"method": "GET", "path": "/v2/a/manifests/b", "status": 200, "upstream": None}
    log.get_logger().info("request", **facts)
    log.request_line(**facts)
    by_structlog, direct = _written(lines)
    theirs = datetime.fromisoformat(str(by_structlog.pop("timestamp")))
    ours = datetime.fromisoformat(str(direct.pop("timestamp")))
    assert ours.tzinfo == UTC and 0 <= (ours - theirs).total_seconds() < 60
    assert direct == by_structlog


def test_request_lines_follow_structlog_below_info(lines: io.StringIO) -> None:
    """At WARNING, request lines are filtered like every other INFO event."""
    log.configure(json=True, level=logging.WARNING)
    log.request_line(method="GET", status=200)
    assert _written(lines) == []
