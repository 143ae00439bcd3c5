"""Whatever a client sends, the mirror answers within the protocol: never a 5xx, never a
traceback, never a file outside its cache directory (property-based, with Hypothesis)."""

from __future__ import annotations

import hashlib
import logging
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Seeded
from tests.support.clients import RawAnswer, raw_exchange
from tests.support.images import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
)
from tests.support.served import Served, ServeFactory

# One mirror serves every example of a test: the function-scoped fixtures are meant to be
# shared. Examples are bounded so the whole file runs in seconds.
EXAMPLES = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CACHE_AREAS = {"blobs", "manifests", "tags", "spool", "fresh", "catalog"}

# Header values: printable Latin-1 (what HTTP/1.1 can carry), no line breaks.
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=40,
)
# Path text is percent-encoded as a client would, so any character can be sent.
any_text = st.text(max_size=40)
component = st.from_regex(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*", fullmatch=True)
hex64 = st.binary(min_size=32, max_size=32).map(bytes.hex)


@dataclass(frozen=True)
class Known:
    """What the upstream holds: names that exist, and blob bytes by digest."""

    names: tuple[str, ...]
    blobs: dict[str, bytes]
    manifests: tuple[str, ...]


@pytest.fixture
def known(seeded: Seeded) -> Known:
    images = (seeded.schema2, seeded.oci, *seeded.index.images)
    refs = (seeded.schema2_ref, seeded.oci_ref, seeded.index_ref, seeded.solo_ref, seeded.deep_ref)
    return Known(
        names=tuple(repo for repo, _ in refs),
        blobs={blob.digest: blob.data for image in images for blob in image.blobs},
        manifests=(*(image.digest for image in images), seeded.index.digest),
    )


@pytest.fixture
async def mirror(serve: ServeFactory, seeded: Seeded) -> Served:
    """The mirror as `mirror serve` runs it, with every seeded blob cached: a blob's answer
    then depends on the request alone, never on what earlier examples fetched (a cached blob
    is served under any repository name, an uncached one only where the upstream has it)."""
    served = await serve()
    images = ((seeded.schema2_ref[0], seeded.schema2), (seeded.oci_ref[0], seeded.oci))
    children = ((seeded.index_ref[0], image) for image in seeded.index.images)
    for repo, image in (*images, *children):
        for blob in image.blobs:
            status, _, _ = await served.get(f"/v2/{repo}/blobs/{blob.digest}")
            assert status == 200
    return served


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[list[Any]]:
    """What the mirror logs (structlog) and what aiohttp logs (logging) at warning and above."""
    caplog.set_level(logging.WARNING)
    with structlog.testing.capture_logs() as captured:
        yield captured


def names(known: Known) -> st.SearchStrategy[str]:
    """Repository names: existing, well-formed, prefixed with a registry, or anything."""
    return st.one_of(
        st.sampled_from(known.names),
        st.lists(component, min_size=1, max_size=4).map("/".join),
        st.builds(
            "{}/{}".format,
            st.sampled_from(["docker.io", "index.docker.io", "ghcr.io", "example.com:5000"]),
            st.sampled_from(known.names),
        ),
        any_text.filter(bool),
    )


def references(known: Known) -> st.SearchStrategy[str]:
    return st.one_of(
        st.just("v1"),
        st.from_regex(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,30}", fullmatch=True),
        st.sampled_from(known.manifests),
        hex64.map("sha256:{}".format),
        st.builds(
            "{}:{}".format, st.sampled_from(["sha512", "md5", "SHA256", "sha256+b64"]), hex64
        ),
        any_text,
    )


def digests(known: Known) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(sorted(known.blobs)),
        hex64.map("sha256:{}".format),
        st.builds(lambda a, b: f"sha512:{a}{b}", hex64, hex64),
        any_text,
    )


accepts = st.one_of(
    st.none(),
    st.lists(
        st.one_of(
            st.sampled_from([DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX]),
            st.sampled_from(["*/*", "application/*", "application/json;q=0.5", ""]),
            header_text,
        ),
        max_size=4,
    ).map(", ".join),
)
namespaces = st.one_of(
    st.none(), st.sampled_from(["docker.io", "registry-1.docker.io", "ghcr.io"]), any_text
)
number = st.one_of(
    st.integers(0, 20_000).map(str), st.text(string.digits, max_size=30), st.just("9" * 5000)
)
ranges = st.one_of(
    st.none(),
    st.builds(
        lambda unit, specs: f"{unit}={','.join(specs)}",
        st.sampled_from(["bytes", "BYTES", "bytes ", "items", ""]),
        st.lists(st.builds("{}-{}".format, number, number), min_size=1, max_size=3),
    ),
    header_text,
)
validators = st.one_of(st.none(), st.just("*"), header_text)


def _path(*parts: str) -> str:
    return "/".join(quote(part, safe="/:@") for part in parts)


def _target(path: str, ns: str | None) -> str:
    return path if ns is None else f"{path}?{urlencode({'ns': ns})}"


async def _send(
    mirror: Served, method: str, target: str, headers: dict[str, str | None]
) -> RawAnswer:
    sent = {name: value for name, value in headers.items() if value is not None}
    return await raw_exchange(mirror.host, mirror.port, method, target, sent)


def _assert_sound(answer: RawAnswer, logs: list[Any], caplog: pytest.LogCaptureFixture) -> None:
    """No 5xx, nothing logged as an error (a traceback is logged at error level)."""
    assert answer.status < 500, (answer.status, answer.body[:300])
    assert not [e for e in logs if e.get("log_level") in ("error", "critical")], logs
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    logs.clear()
    caplog.clear()


def _assert_nothing_outside_the_cache(cache_dir: Path) -> None:
    """Every file the mirror made is in one of its areas of the cache directory."""
    root = cache_dir.parent
    for path in root.rglob("*"):
        assert path.is_relative_to(cache_dir), path
        assert path.resolve().is_relative_to(cache_dir.resolve()), path
        if path.parent == cache_dir:
            assert path.name in CACHE_AREAS, path


@given(data=st.data())
@EXAMPLES
async def test_manifest_requests_are_answered_within_the_protocol(
    mirror: Served,
    known: Known,
    logs: list[Any],
    caplog: pytest.LogCaptureFixture,
    cache_dir: Path,
    data: st.DataObject,
) -> None:
    """Any name, reference, Accept and `ns=`: a manifest whose digest is right, or an error
    that is the client's or the upstream's (4xx), never the mirror's."""
    method = data.draw(st.sampled_from(["GET", "HEAD"]))
    name, reference = data.draw(names(known)), data.draw(references(known))
    target = _target(f"/v2/{_path(name)}/manifests/{_path(reference)}", data.draw(namespaces))
    answer = await _send(mirror, method, target, {"Accept": data.draw(accepts)})
    _assert_sound(answer, logs, caplog)
    if answer.status == 200 and method == "GET":
        digest = answer.headers["docker-content-digest"]
        assert digest == "sha256:" + hashlib.sha256(answer.body).hexdigest()
    _assert_nothing_outside_the_cache(cache_dir)


@given(data=st.data())
@EXAMPLES
async def test_blob_requests_are_answered_consistently(
    mirror: Served,
    known: Known,
    logs: list[Any],
    caplog: pytest.LogCaptureFixture,
    cache_dir: Path,
    data: st.DataObject,
) -> None:
    """Any name, digest, `Range`, `If-Range`, `If-None-Match` and `ns=`: the bytes asked
    for, exactly as the status and `Content-Range` say, or a clean refusal."""
    method = data.draw(st.sampled_from(["GET", "HEAD"]))
    name, digest = data.draw(names(known)), data.draw(digests(known))
    target = _target(f"/v2/{_path(name)}/blobs/{_path(digest)}", data.draw(namespaces))
    answer = await _send(mirror, method, target, _conditions(data, digest))
    _assert_sound(answer, logs, caplog)
    if digest in known.blobs:
        _assert_blob_answer(answer, method, known.blobs[digest], digest)
    _assert_nothing_outside_the_cache(cache_dir)


@given(data=st.data())
@EXAMPLES
async def test_ranges_of_a_cached_blob_select_exactly_their_bytes(
    mirror: Served,
    known: Known,
    logs: list[Any],
    caplog: pytest.LogCaptureFixture,
    data: st.DataObject,
) -> None:
    """The same, concentrated on GETs of blobs the mirror holds, where every `Range` counts."""
    digest = data.draw(st.sampled_from(sorted(known.blobs)))
    target = f"/v2/{data.draw(st.sampled_from(known.names))}/blobs/{digest}"
    answer = await _send(mirror, "GET", target, _conditions(data, digest))
    _assert_sound(answer, logs, caplog)
    _assert_blob_answer(answer, "GET", known.blobs[digest], digest)


def _conditions(data: st.DataObject, digest: str) -> dict[str, str | None]:
    """Range, If-Range and If-None-Match headers, sometimes naming the blob's own ETag."""
    etag = f'"{digest}"'
    etags = st.one_of(validators, st.just(etag)) if etag.isascii() else validators
    return {
        "Range": data.draw(ranges),
        "If-Range": data.draw(etags),
        "If-None-Match": data.draw(etags),
    }


def _assert_blob_answer(answer: RawAnswer, method: str, blob: bytes, digest: str) -> None:
    """An answer about a blob the upstream holds agrees with its bytes."""
    if answer.status == 416:
        assert answer.headers["content-range"] == f"bytes */{len(blob)}"
        return
    if answer.status >= 400:  # not in this repository upstream, or the name was refused
        return
    assert answer.headers.get("etag") == f'"{digest}"', answer
    if answer.status == 206:
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", answer.headers["content-range"])
        assert match is not None, answer.headers
        first, last, size = map(int, match.groups())
        assert size == len(blob) and first <= last < size
        assert answer.body == blob[first : last + 1]
    elif answer.status == 200:
        assert answer.headers["content-length"] == str(len(blob))
        assert answer.body == (b"" if method == "HEAD" else blob)
    else:
        assert answer.status == 304 and answer.body == b"", answer


METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND"]
odd_segments = st.one_of(
    st.sampled_from(["..", ".", "%2e%2e", "%2E%2E", "", "%00", "%2F", "_tags", "%0A", "~"]),
    any_text.map(lambda text: quote(text, safe="")),
    st.text(string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@%", max_size=20),
)


@given(
    method=st.one_of(st.sampled_from(METHODS), st.from_regex(r"[A-Z]{1,10}", fullmatch=True)),
    prefix=st.sampled_from(["/v2/", "/v2", "/", "//v2/", "/v2//", "/V2/"]),
    segments=st.lists(odd_segments, max_size=6),
    query=st.one_of(st.none(), st.dictionaries(any_text, any_text, max_size=3)),
)
@EXAMPLES
async def test_odd_paths_and_methods_are_refused_cleanly(
    mirror: Served,
    logs: list[Any],
    caplog: pytest.LogCaptureFixture,
    cache_dir: Path,
    method: str,
    prefix: str,
    segments: list[str],
    query: dict[str, str] | None,
) -> None:
    """Traversal, encoded separators, writes and unknown methods anywhere: a 4xx (or an
    answer from what exists), nothing written outside the cache."""
    target = prefix + "/".join(segments)
    if query is not None:
        target += "?" + urlencode(query)
    answer = await _send(mirror, method, target, {})
    _assert_sound(answer, logs, caplog)
    _assert_nothing_outside_the_cache(cache_dir)


@given(data=st.data())
@EXAMPLES
async def test_listings_are_answered_within_the_protocol(
    mirror: Served,
    known: Known,
    logs: list[Any],
    caplog: pytest.LogCaptureFixture,
    cache_dir: Path,
    data: st.DataObject,
) -> None:
    """Tag lists and referrers with any name, `n`, `last`, digest and `artifactType`."""
    name = data.draw(names(known))
    if data.draw(st.booleans()):
        query = {"n": data.draw(st.one_of(number, any_text)), "last": data.draw(any_text)}
        path = f"/v2/{_path(name)}/tags/list"
    else:
        query = {"artifactType": data.draw(any_text)}
        path = f"/v2/{_path(name)}/referrers/{_path(data.draw(references(known)))}"
    kept = {k: v for k, v in query.items() if data.draw(st.booleans())}
    target = f"{path}?{urlencode(kept)}" if kept else path
    answer = await _send(mirror, "GET", target, {})
    _assert_sound(answer, logs, caplog)
    _assert_nothing_outside_the_cache(cache_dir)
