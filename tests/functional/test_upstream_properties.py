"""Property: whatever headers an upstream sends (`WWW-Authenticate`, `RateLimit-*`,
`Retry-After`, `Content-Range`, `Location`) with whatever status, the mirror answers: a normal
answer, a 4xx, or a clean 502/503/504 OCI error; never another 5xx, never a hang.

Every place an upstream can point the mirror at stays on this machine: generated hosts are
loopback addresses (refused: the upstream counts as public) or names no resolver knows.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mirror.config import Settings, UpstreamSettings
from tests.conftest import MirrorFromSettings
from tests.faults import FakeFactory, FakeUpstream
from tests.support.images import make_image
from tests.support.network import loopback_network
from tests.support.oci import ACCEPT_ALL

Client = TestClient[Any, Any]
IMAGE = make_image(seed="properties")
HANG = 30.0

# Header text: printable ASCII, plus digits str.isdigit() accepts and int() does not.
text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from("²٣"))
numbers = st.one_of(
    st.integers(-10, 10**6).map(str),
    st.integers(10**18, 10**500).map(str),
    # Past Python's int() digit limit; digits int() refuses or reads in another script; dates.
    st.sampled_from(
        ["9" * 5000, "²", "٣", "", " 5 ", "1.5", "-0", "Wed, 21 Oct 2015 07:28:00 GMT"]
    ),
    text,
)
# Hosts that cannot leave this machine: loopback (refused for a public upstream) or unknown names.
hosts = st.sampled_from(
    ["127.0.0.1", "127.0.0.2", "127.0.0.3:1", "[::1]", "nowhere.test", "localhost", "0.0.0.0"]
)
targets = st.one_of(
    st.builds(
        "{}://{}{}".format,
        st.sampled_from(["http", "https", "ftp", "file", "javascript"]),
        hosts,
        st.sampled_from(["/", "/v2/x", "/a?b=%2F", ""]),
    ),
    st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=":[0123456789")
    ),
    st.sampled_from(["http://[::1", "//", "///x", "http://", "?x", "#y", "%zz", "http://xn--zz/"]),
)
challenges = st.one_of(
    st.builds(
        'Bearer realm="{}",service="{}",scope="{}"{}'.format,
        targets,
        text,
        text,
        st.sampled_from(["", ',error="insufficient_scope"', ",error=invalid_token"]),
    ),
    st.builds("Basic realm={}".format, text),
    text,
)
header_values = {
    "WWW-Authenticate": challenges,
    "RateLimit-Remaining": st.builds("{};w={}".format, numbers, numbers) | numbers,
    "RateLimit-Limit": st.builds("{};w={}".format, numbers, numbers) | numbers,
    "Retry-After": numbers,
    "Content-Range": st.builds("bytes {}-{}/{}".format, numbers, numbers, numbers) | text,
    "Location": targets,
}
scripts = st.fixed_dictionaries(
    {
        "status": st.sampled_from([200, 206, 301, 302, 303, 307, 308, 401, 403, 404, 429, 500]),
        "headers": st.fixed_dictionaries({}, optional=header_values),
        "body": st.sampled_from([IMAGE.manifest, b"", b"{", b'{"tags":["v1"]}', b"x" * 5000]),
    }
)


@dataclass
class Script:
    """What the fake upstream answers every request with, for the current example."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    async def answer(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=self.status, headers=self.headers, body=self.body)


@pytest.fixture
async def scripted(
    make_fake_upstream: FakeFactory, mirror_from: MirrorFromSettings, cache_dir: Path
) -> tuple[Client, FakeUpstream, Script]:
    """A mirror over a "public" fake upstream that answers everything with the script."""
    fake = await make_fake_upstream()
    script = Script()
    upstream = UpstreamSettings(
        url=fake.url, default=True, breaker_failures=1000, connect_timeout=2, read_timeout=2
    )
    settings_ = Settings(cache_dir=cache_dir, upstreams=(upstream,), tag_ttl=0)
    client = await mirror_from(settings_, loopback_network())
    return client, fake, script


_counter = itertools.count()


def _clean(status: int, body: bytes, content_type: str) -> bool:
    if status < 500:
        return True
    return status in (502, 503, 504) and content_type == "application/json" and b'"errors"' in body


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(script=scripts)
async def test_no_upstream_header_makes_the_mirror_fail_uncleanly(
    scripted: tuple[Client, FakeUpstream, Script], script: dict[str, Any]
) -> None:
    """Manifests, blobs, tag lists and referrers all answer cleanly, whatever the upstream."""
    client, fake, current = scripted
    current.status, current.headers, current.body = (
        script["status"],
        script["headers"],
        script["body"],
    )
    n = next(_counter)
    paths = [
        f"/v2/lib/app{n}/manifests/v1",
        f"/v2/lib/app{n}/blobs/{IMAGE.layers[0].digest}",
        f"/v2/lib/app{n}/tags/list",
        f"/v2/lib/app{n}/referrers/{IMAGE.digest}",
    ]
    for path in paths:
        fake.route(path, current.answer)
    for path in paths:
        response = await asyncio.wait_for(client.get(path, headers={"Accept": ACCEPT_ALL}), HANG)
        try:
            body = await asyncio.wait_for(response.read(), HANG)
        except aiohttp.ClientPayloadError:
            body = b""  # a blob whose fill failed is cut off: never a clean short body
        assert _clean(response.status, body, response.content_type), (
            path,
            response.status,
            body[:300],
        )
