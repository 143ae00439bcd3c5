"""Helpers for tests of the cache's life: a clock the test moves, pulls of whole images, and the
cache's size measured independently of the mirror's own accounting."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from tests.support.images import Image
from tests.support.oci import ACCEPT_ALL


class Clock:
    """Unix time that moves only when the test says so (it starts at the real time, so files
    the mirror creates are never dated after it)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


HOUR = 3600.0


async def pull_image(client: TestClient[Any, Any], repo: str, tag: str, image: Image) -> None:
    """Pull as a client does: the manifest by tag, then every blob; all must be exact."""
    response = await client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT_ALL})
    assert response.status == 200, await response.text()
    assert await response.read() == image.manifest
    for blob in image.blobs:
        response = await client.get(f"/v2/{repo}/blobs/{blob.digest}")
        assert response.status == 200, await response.text()
        assert await response.read() == blob.data


def cache_usage(cache_dir: Path, parts: tuple[str, ...] = ("blobs", "manifests", "spool")) -> int:
    """Bytes under blobs/, manifests/ and spool/, as `du --apparent-size` would count them."""
    total = 0
    for part in parts:
        for directory, _, names in os.walk(cache_dir / part):
            for name in names:
                try:
                    total += (Path(directory) / name).stat().st_size
                except FileNotFoundError:
                    continue
    return total


def cached_tags(cache_dir: Path) -> set[str]:
    """`repo:tag` of every tag record on disk (any registry)."""
    found = set()
    for record in (cache_dir / "tags").rglob("_tags/*"):
        repo = record.parent.parent.relative_to(cache_dir / "tags").as_posix().split("/", 1)[1]
        found.add(f"{repo}:{record.name}")
    return found
