"""Numeric headers from an upstream: read when usable, never raising, never pinning a state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from mirror.config import UpstreamSettings
from mirror.meta.store import EmbeddedStore
from mirror.upstream import headers
from mirror.upstream.health import UpstreamHealth

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
# Header values an upstream could send: any text, and text made of digits and separators.
header_text = st.one_of(
    st.text(max_size=60),
    st.from_regex(r"\A[0-9²٣;w= ,\-.*/]{0,40}\Z"),
    st.builds(lambda n, w: f"{n};w={w}", st.integers(-5, 10**500), st.integers(-5, 10**500)),
)


def test_rate_limit_values() -> None:
    """Docker Hub's form, with and without a window; anything else is nothing."""
    assert headers.rate_limit("20;w=21600") == headers.RateLimit(20, 21600.0)
    assert headers.rate_limit(" 7 ") == headers.RateLimit(7, None)
    assert headers.rate_limit("0;w=" + "9" * 400) == headers.RateLimit(0, headers.MAX_WINDOW)
    assert headers.rate_limit("9" * 5000) is not None
    for broken in (None, "", "²", "abc", "-1", "٣;w=5"):
        assert headers.rate_limit(broken) is None


def test_retry_after_values() -> None:
    """Delay-seconds or an HTTP-date (RFC 9110 §10.2.3), clamped; 60 s when unreadable."""
    assert headers.retry_after("120") == 120.0
    assert headers.retry_after("0") == 1.0
    assert headers.retry_after("9" * 400) == headers.MAX_WINDOW
    in_ten_minutes = format_datetime(NOW + timedelta(minutes=10), usegmt=True)
    assert headers.retry_after(in_ten_minutes, NOW) == 600.0
    assert headers.retry_after(format_datetime(NOW - timedelta(days=1), usegmt=True), NOW) == 1.0
    for broken in (None, "", "²", "-5", "1.5", "soon", "Mon, 99 Foo 2026 99:99:99 GMT"):
        assert headers.retry_after(broken, NOW) == headers.DEFAULT_RETRY_AFTER


def test_content_range_values() -> None:
    """RFC 9110 §14.4 ranges; an inverted or out-of-size range is no range."""
    assert headers.content_range("bytes 10-19/20") == headers.ContentRange(10, 19, 20)
    assert headers.content_range("bytes 0-4/*") == headers.ContentRange(0, 4, None)
    for broken in (None, "", "bytes 5-4/10", "bytes 0-10/10", "bytes ²-3/4", "items 0-1/2"):
        assert headers.content_range(broken) is None


@settings(max_examples=300, deadline=None)
@given(header_text)
def test_no_header_value_makes_a_parser_raise(value: str) -> None:
    """Whatever the text, every parser returns, and every duration is within [1 s, 6 h]."""
    found = headers.rate_limit(value)
    if found is not None:
        assert found.count >= 0
        assert found.window is None or 0 <= found.window <= headers.MAX_WINDOW
    assert 1.0 <= headers.retry_after(value, NOW) <= headers.MAX_WINDOW
    span = headers.content_range(value)
    if span is not None:
        assert 0 <= span.first <= span.last and (span.size is None or span.last < span.size)


@settings(max_examples=100, deadline=None)
@given(st.datetimes(timezones=st.just(UTC)))
def test_any_http_date_is_a_bounded_wait(when: datetime) -> None:
    """Dates far in the past or future still give a wait within [1 s, 6 h]."""
    assert 1.0 <= headers.retry_after(format_datetime(when, usegmt=True), NOW) <= 21600.0


class RecordingStore(EmbeddedStore):
    """The embedded store, remembering how long each flag was raised for."""

    def __init__(self) -> None:
        super().__init__()
        self.raised: list[float] = []

    async def set_flag(self, key: str, ttl: float) -> None:
        self.raised.append(ttl)
        await super().set_flag(key, ttl)


async def test_no_rate_limit_header_raises_a_flag_for_longer_than_the_window() -> None:
    """`RateLimit-Remaining: 0;w=<400 digits>` spares the upstream for 6 hours, not forever."""
    store = RecordingStore()

    async def probe() -> bool:
        return True

    health = UpstreamHealth(UpstreamSettings(rate_limit_reserve=10), store, probe)
    for remaining, limit in (("0;w=" + "9" * 400, ""), ("1", "100;w=" + "9" * 30), ("0;w=0", "")):
        values = {"RateLimit-Remaining": remaining, "RateLimit-Limit": limit}
        await health.saw_headers(CIMultiDictProxy(CIMultiDict(values)))
    await health.spare(float("inf"), "an upstream that says forever")
    await health.spare(-3, "an upstream that says never")
    # A window of 0 says nothing: the hour Docker Hub's limits were first counted in.
    assert store.raised == [headers.MAX_WINDOW, headers.MAX_WINDOW, 3600, headers.MAX_WINDOW, 1]
