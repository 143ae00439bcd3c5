"""Hot manifests answered before routing, through the server `mirror serve` runs: the same
answer, log line and count as the full path gives, and nothing more than a pull may get."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import structlog
from multidict import CIMultiDict

from tests.conftest import Seeded
from tests.support.htpasswd import write_htpasswd
from tests.support.metrics import Scrape
from tests.support.oci import ACCEPT_ALL
from tests.support.served import ServeFactory

HEADERS = ("Content-Type", "Content-Length", "Docker-Content-Digest", "ETag")


async def _request(
    session: aiohttp.ClientSession, method: str, url: str, **headers: str
) -> tuple[int, bytes, CIMultiDict[str]]:
    async with session.request(method, url, headers=headers) as response:
        return response.status, await response.read(), response.headers.copy()


async def test_a_ready_answer_is_the_full_answer(serve: ServeFactory, seeded: Seeded) -> None:
    """Repeated GETs and HEADs of a tag and a digest: the same status, headers and body as
    the first answer, each logged once as a hit with its upstream and request id."""
    served = await serve()
    repo, tag = seeded.oci_ref
    paths = [f"/v2/{repo}/manifests/{tag}", f"/v2/{repo}/manifests/{seeded.oci.digest}"]
    async with aiohttp.ClientSession() as session:
        with structlog.testing.capture_logs() as logs:
            for path in paths:
                first = await _request(session, "GET", served.url + path, Accept=ACCEPT_ALL)
                for method in ("GET", "HEAD", "GET"):
                    status, body, headers = await _request(
                        session, method, served.url + path, Accept=ACCEPT_ALL
                    )
                    assert status == first[0] == 200
                    assert body == (b"" if method == "HEAD" else seeded.oci.manifest)
                    for name in (*HEADERS, "Docker-Distribution-API-Version"):
                        assert headers[name] == first[2][name], name
    lines = [e for e in logs if e.get("event") == "request"]
    # Pulling the tag stored the manifest, so its digest is a hit from the first request on.
    assert [line["cache"] for line in lines] == ["miss"] + ["hit"] * 7
    assert {line["upstream"] for line in lines} == {"docker.io"}
    assert len({line["request_id"] for line in lines}) == len(lines)
    size = len(seeded.oci.manifest)
    assert [line["bytes"] for line in lines] == [size, size, 0, size] * 2


async def test_writes_to_a_hot_manifest_are_not_answered_from_memory(
    serve: ServeFactory, seeded: Seeded
) -> None:
    """PUT, DELETE and POST on a hot manifest's path get the full path's refusal, in OCI
    form, never the manifest."""
    served = await serve()
    repo, tag = seeded.oci_ref
    url = f"{served.url}/v2/{repo}/manifests/{tag}"
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            assert (await _request(session, "GET", url, Accept=ACCEPT_ALL))[0] == 200
        for method in ("PUT", "DELETE", "POST"):
            status, body, _ = await _request(session, method, url, Accept=ACCEPT_ALL)
            assert status in (404, 405), (method, status)
            assert b'"errors"' in body and body != seeded.oci.manifest


async def test_a_hot_manifest_still_asks_for_a_login(
    serve: ServeFactory, seeded: Seeded, tmp_path: Path
) -> None:
    """With --htpasswd, a manifest a user just pulled is refused to a client that did not
    log in: who may read is decided on the full path."""
    users = write_htpasswd(tmp_path / "htpasswd", {"alice": "secret"})
    served = await serve(htpasswd=users)
    repo, tag = seeded.oci_ref
    url = f"{served.url}/v2/{repo}/manifests/{tag}"
    login = aiohttp.encode_basic_auth("alice", "secret")
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            status, body, _ = await _request(
                session, "GET", url, Accept=ACCEPT_ALL, Authorization=login
            )
            assert (status, body) == (200, seeded.oci.manifest)
        status, body, _ = await _request(session, "GET", url, Accept=ACCEPT_ALL)
    assert status == 401 and b"UNAUTHORIZED" in body


async def test_ready_answers_are_counted_as_manifest_hits(
    serve: ServeFactory, seeded: Seeded
) -> None:
    """/metrics counts every ready answer as a manifest request, 200, from the cache, with
    the bytes it sent."""
    served = await serve()
    repo, tag = seeded.oci_ref
    url = f"{served.url}/v2/{repo}/manifests/{tag}"
    async with aiohttp.ClientSession() as session:
        for _ in range(6):
            assert (await _request(session, "GET", url, Accept=ACCEPT_ALL))[0] == 200
        _, text, _ = await _request(session, "GET", f"{served.url}/metrics")
    found = Scrape.parse(text.decode())
    labels: dict[str, Any] = {"kind": "manifest", "status": "200"}
    assert found.get("mirror_requests_total", **labels, cache="miss") == 1
    assert found.get("mirror_requests_total", **labels, cache="hit") == 5
    assert found.get("mirror_served_bytes_total", cache="hit") == 5 * len(seeded.oci.manifest)


async def test_an_expectation_on_a_hot_manifest_gets_the_full_paths_answer(
    serve: ServeFactory, seeded: Seeded
) -> None:
    """An `Expect` the mirror does not meet is refused with 417 whether or not the manifest
    is hot; a ready answer would have ignored it."""
    served = await serve()
    repo, tag = seeded.oci_ref
    url = f"{served.url}/v2/{repo}/manifests/{tag}"
    async with aiohttp.ClientSession() as session:
        statuses = []
        for _ in ("cold", "hot"):
            status, _, _ = await _request(session, "GET", url, Accept=ACCEPT_ALL, Expect="x")
            statuses.append(status)
            assert (await _request(session, "GET", url, Accept=ACCEPT_ALL))[0] == 200
    assert statuses == [417, 417]


async def test_if_none_match_naming_the_manifest_is_304_hot_or_not(
    serve: ServeFactory, seeded: Seeded
) -> None:
    """A client that holds the manifest a tag or digest leads to gets 304 and no body, cold,
    hot and for HEAD alike; one holding another gets the manifest, and a 304 leaves no ready
    answer behind that would send a later plain GET nothing."""
    served = await serve()
    repo, tag = seeded.oci_ref
    etag = f'"{seeded.oci.digest}"'
    async with aiohttp.ClientSession() as session:
        for reference in (tag, seeded.oci.digest):
            url = f"{served.url}/v2/{repo}/manifests/{reference}"
            for method in ("GET", "GET", "HEAD"):  # cold (the tag), then hot
                status, body, headers = await _request(
                    session, method, url, Accept=ACCEPT_ALL, **{"If-None-Match": etag}
                )
                assert (status, body) == (304, b""), (reference, method)
                assert headers["ETag"] == etag
                assert headers["Docker-Content-Digest"] == seeded.oci.digest
            other = f'W/"sha256:{"0" * 64}", {etag.upper()}'
            status, body, _ = await _request(
                session, "GET", url, Accept=ACCEPT_ALL, **{"If-None-Match": other}
            )
            assert (status, body) == (200, seeded.oci.manifest)
            status, body, _ = await _request(session, "GET", url, Accept=ACCEPT_ALL)
            assert (status, body) == (200, seeded.oci.manifest)
            status, _, _ = await _request(
                session, "GET", url, Accept=ACCEPT_ALL, **{"If-None-Match": etag}
            )
            assert status == 304
