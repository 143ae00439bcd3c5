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


def _fill_up(directory: Path) -> None:
    """Write until the file system has no space left."""
    with open(directory / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * (64 << 10))
                f.flush()
        except OSError:
            pass


async def test_a_full_disk_still_serves_manifests_it_fetches(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded, small_disk: Path
) -> None:
    """With no space left, a manifest fetched by tag or by digest is served from memory (and
    not kept), never a 500."""
    cache_dir = small_disk / "cache"
    client = await make_mirror(registry, cache_dir=cache_dir)
    _fill_up(small_disk)
    repo, tag = seeded.oci_ref
    by_tag = await client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT_ALL})
    assert by_tag.status == 200, await by_tag.text()
    assert await by_tag.read() == seeded.oci.manifest
    index_repo, _ = seeded.index_ref
    child = seeded.index.images[0]
    by_digest = await client.get(
        f"/v2/{index_repo}/manifests/{child.digest}", headers={"Accept": ACCEPT_ALL}
    )
    assert by_digest.status == 200, await by_digest.text()
    assert await by_digest.read() == child.manifest
    assert await wait_until(lambda: spool_files(cache_dir) == []), spool_files(cache_dir)
