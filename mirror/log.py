"""structlog set-up and the per-request facts that end up on the request's one log line.

Code deep in the call chain (the upstream client, a fill) records what it learned about the
current request with `note_*`; a context variable carries the record, so no layer has to pass it
along. The record is mutable and shared, so a task started during the request (a blob fill)
reports into the same line.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import structlog


@dataclass(slots=True)
class RequestFacts:
    request_id: str
    cache: str | None = None  # hit | miss | stale | coalesced
    upstream: str | None = None
    upstream_status: int | None = None
    streamed: int | None = None  # body bytes written by a streaming handler


_current: ContextVar[RequestFacts | None] = ContextVar("mirror_request_facts", default=None)


def begin_request(request_id: str) -> RequestFacts:
    facts = RequestFacts(request_id)
    _current.set(facts)
    return facts


def note_cache(state: str) -> None:
    facts = _current.get()
    if facts is not None:
        facts.cache = state


def note_route(upstream: str) -> None:
    facts = _current.get()
    if facts is not None:
        facts.upstream = upstream


def note_streamed(count: int) -> None:
    facts = _current.get()
    if facts is not None:
        facts.streamed = count


def note_upstream(status: int) -> None:
    facts = _current.get()
    if facts is not None:
        facts.upstream_status = status


def get_logger(**bound: Any) -> Any:
    return structlog.get_logger("mirror", **bound)


def configure(*, json: bool | None = None, level: int = logging.INFO) -> None:
    """JSON lines off a terminal (for collectors), readable console output on one."""
    if json is None:
        json = not sys.stderr.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # aiohttp's own messages (bad requests, server errors) at WARNING, through the same stream.
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )
