"""structlog set-up and the per-request facts that end up on the request's one log line.

Code deep in the call chain (the upstream client, a fill) records what it learned about the
current request with `note_*`; a context variable carries the record, so no layer has to pass it
along. The record is mutable and shared, so a task started during the request (a blob fill)
reports into the same line.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TextIO

import orjson
import structlog


@dataclass(slots=True)
class RequestFacts:
    request_id: str
    cache: str | None = None  # hit | miss | stale | coalesced
    upstream: str | None = None
    repo: str | None = None  # the repository at that upstream
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


def note_route(upstream: str, repo: str | None = None) -> None:
    facts = _current.get()
    if facts is not None:
        facts.upstream = upstream
        facts.repo = repo


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


# When each warning given with `warn_once` was last written; bounded by the events' variety.
_warned: dict[tuple[str, str], float] = {}
WARN_INTERVAL = 60.0


def warn_once(event: str, **facts: Any) -> None:
    """A warning about a condition that may recur on every request (a full disk, no free
    descriptors): written once a minute at most."""
    key = (event, str(facts.get("error", "")))
    now = time.monotonic()
    last = _warned.get(key)
    if last is not None and now - last < WARN_INTERVAL:
        return
    if len(_warned) >= 1000:
        _warned.clear()
    _warned[key] = now
    get_logger().warning(event, **facts)


class BufferedLineLogger:
    """Writes log lines in batches: one write per event-loop tick burst, not one per request.

    Request lines are gathered and written within `delay` seconds; warnings and errors (and
    anything logged outside a running loop) go out at once, after what is pending.
    """

    def __init__(self, stream: TextIO = sys.stderr, delay: float = 0.05) -> None:
        self._stream = stream
        self._delay = delay
        self._pending: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    def info(self, message: str) -> None:
        self._pending.append(message)
        if self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(self._delay, self.flush)
            except RuntimeError:
                self.flush()

    def msg(self, message: str) -> None:
        self._pending.append(message)
        self.flush()

    debug = info
    warning = warn = error = critical = exception = fatal = failure = err = msg

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            lines, self._pending = self._pending, []
            self._stream.write("\n".join(lines) + "\n")
            self._stream.flush()


_sink = BufferedLineLogger()


def flush() -> None:
    """Write out pending lines (at shutdown)."""
    _sink.flush()


# Whether request lines are rendered here rather than by structlog: set by `configure` when it
# chose JSON lines at INFO, the set-up of a server. A request line is the one event logged per
# request; structlog's chain of processors cost a hot manifest hit a fifth of its time.
_direct_lines = False


def request_line(**facts: Any) -> None:
    """The one line of an answered request. Rendered as structlog's JSON renderer would (the
    same keys and values: `event`, `level`, an ISO `timestamp` in UTC), straight into the
    batched sink; without a server's set-up (console output, another level, a test capturing
    structlog's events) it goes through structlog."""
    if not _direct_lines:
        get_logger().info("request", **facts)
        return
    facts["event"] = "request"
    facts["level"] = "info"
    facts["timestamp"] = _timestamp()
    _sink.info(orjson.dumps(facts).decode())


_second: tuple[int, str] = (0, "")  # the last second a timestamp was made in, as ISO text


def _timestamp() -> str:
    """Now as structlog's ISO timestamps in UTC write it, the date and time of day made once a
    second."""
    global _second
    now = time.time()
    second = int(now)
    if second != _second[0]:
        _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{_second[1]}.{int((now - second) * 1e6):06d}Z"


def _dumps(value: Any, default: Any = None) -> str:
    # orjson: a request line costs a fifth of what the standard json module takes.
    return orjson.dumps(value, default=default).decode()


def configure(*, json: bool | None = None, level: int = logging.INFO) -> None:
    """JSON lines off a terminal (for collectors), readable console output on one."""
    global _direct_lines
    if json is None:
        json = not sys.stderr.isatty()
    _direct_lines = json and level <= logging.INFO
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
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
        logger_factory=lambda *_args: _sink,
        cache_logger_on_first_use=True,
    )
    # aiohttp's own messages (bad requests, server errors) at WARNING, through the same stream.
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )
