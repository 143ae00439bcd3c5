"""Assertions shared by the end-to-end tests: what the upstream saw and what the mirror logged."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from tests.e2e.clients import Outcome
from tests.e2e.daemons import MirrorServer
from tests.support.images import Image
from tests.support.registry import Registry

# What registries and clients say when a tag or repository does not exist.
NOT_FOUND = re.compile(r"manifest unknown|name unknown|not found|does not exist", re.IGNORECASE)


def assert_ok(outcome: Outcome) -> None:
    assert outcome.ok, outcome.explain()


def upstream_blob_gets(upstream: Registry, repo: str) -> list[str]:
    """Digests of the blobs the upstream served with GET for `repo`, in order, repeats kept."""
    prefix = f"/v2/{repo}/blobs/"
    return [
        urlsplit(path).path.removeprefix(prefix)
        for method, path in upstream.requests()
        if method == "GET" and urlsplit(path).path.startswith(prefix)
    ]


def any_upstream_blob_gets(upstream: Registry) -> list[tuple[str, str]]:
    """Every blob GET the upstream served, for any repository."""
    return [
        (method, path)
        for method, path in upstream.requests()
        if method == "GET" and "/blobs/" in urlsplit(path).path
    ]


def assert_fetched_via_mirror(
    upstream: Registry, mirror: MirrorServer, mark: int, repo: str, image: Image
) -> None:
    """The mirror was asked for `repo` and fetched every blob of `image` from the upstream."""
    assert f"/v2/{repo}/" in mirror.log_since(mark), f"the mirror logged no request for {repo}"
    fetched = set(upstream_blob_gets(upstream, repo))
    missing = [blob.digest for blob in image.blobs if blob.digest not in fetched]
    assert not missing, f"upstream never served these blobs of {repo}: {missing}"


def mirror_statuses(mirror: MirrorServer, mark: int, repo: str) -> list[int]:
    """HTTP statuses of the mirror's request log lines for `repo` written after `mark`."""
    statuses = []
    for entry in mirror.entries(since=mark):
        path = str(entry.get("path", ""))
        if f"/v2/{repo}/" in path and "status" in entry:
            statuses.append(int(entry["status"]))
    return statuses


def assert_not_found_without_errors(mirror: MirrorServer, mark: int, repo: str) -> None:
    """The mirror answered `repo` requests with 404, none with 5xx, and logged no traceback."""
    statuses = mirror_statuses(mirror, mark, repo)
    log = mirror.log_since(mark)
    assert statuses, f"the mirror logged no request line for {repo}:\n{log[-3000:]}"
    assert 404 in statuses, f"no 404 for {repo}; statuses {statuses}"
    assert all(status < 500 for status in statuses), f"5xx for {repo}: statuses {statuses}"
    assert "Traceback" not in log, f"the mirror logged a traceback:\n{log[-3000:]}"
