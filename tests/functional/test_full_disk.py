"""A full disk costs the cache nothing it had: the download fails cleanly and the rest serves."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MirrorFactory, Seeded
from tests.support.oci import ACCEPT_ALL, assert_broken, cached_blob, spool_files, wait_until
from tests.support.registry import Registry


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: room for small images, not for the 8 MiB layer."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


async def test_a_full_disk_fails_the_download_and_keeps_the_cache_whole(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded, small_disk: Path
) -> None:
    """The client sees a broken transfer, no partial file stays, cached content still serves."""
    cache_dir = small_disk / "cache"
    client = await make_mirror(registry, cache_dir=cache_dir)
    repo, tag = seeded.schema2_ref
    small = seeded.schema2.layers[0]
    assert await (await client.get(f"/v2/{repo}/blobs/{small.digest}")).read() == small.data
    assert await wait_until(cached_blob(cache_dir, small.digest).exists)

    big_repo, _ = seeded.big_ref
    big = seeded.big.layers[0]
    await assert_broken(await client.get(f"/v2/{big_repo}/blobs/{big.digest}"), big.data)
    assert await wait_until(lambda: spool_files(cache_dir) == []), spool_files(cache_dir)
    assert not cached_blob(cache_dir, big.digest).exists()

    assert await (await client.get(f"/v2/{repo}/blobs/{small.digest}")).read() == small.data
    manifest = await client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT_ALL})
    assert manifest.status == 200
    assert await manifest.read() == seeded.schema2.manifest
