"""A full disk costs the cache nothing it had: a download it cannot hold is refused or fails
cleanly, and the rest serves."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from tests.conftest import MirrorFactory, Seeded
from tests.faults import Endless, FakeFactory, Stall, slow_content
from tests.support.cli import mirror_cli
from tests.support.images import sha256_digest
from tests.support.oci import (
    ACCEPT_ALL,
    assert_broken,
    assert_oci_error,
    cached_blob,
    spool_files,
    wait_until,
)
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


async def test_a_blob_the_disk_cannot_hold_is_refused_and_the_cache_stays_whole(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded, small_disk: Path
) -> None:
    """An announced size past the disk's room is 507 before any header, as for a push; no
    partial file stays, cached content still serves."""
    cache_dir = small_disk / "cache"
    client = await make_mirror(registry, cache_dir=cache_dir)
    repo, tag = seeded.schema2_ref
    small = seeded.schema2.layers[0]
    assert await (await client.get(f"/v2/{repo}/blobs/{small.digest}")).read() == small.data
    assert await wait_until(cached_blob(cache_dir, small.digest).exists)

    big_repo, _ = seeded.big_ref
    big = seeded.big.layers[0]
    refused = await client.get(f"/v2/{big_repo}/blobs/{big.digest}")
    document = await assert_oci_error(refused, 507, "UNAVAILABLE")
    assert "disk" in document["errors"][0]["message"], document
    assert spool_files(cache_dir) == []
    assert not cached_blob(cache_dir, big.digest).exists()

    assert await (await client.get(f"/v2/{repo}/blobs/{small.digest}")).read() == small.data
    manifest = await client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT_ALL})
    assert manifest.status == 200
    assert await manifest.read() == seeded.schema2.manifest


async def test_a_disk_that_fills_up_during_a_download_fails_it_and_keeps_the_cache_whole(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory, small_disk: Path
) -> None:
    """A blob that fit when it started, on a disk something else fills meanwhile: its client
    sees a broken transfer, and no partial file stays."""
    data = bytes(range(256)) * 4096  # 1 MiB
    digest = sha256_digest(data)
    fake = await make_fake_upstream()
    stall = Stall()
    fake.route(f"/v2/lib/app/blobs/{digest}", slow_content(data, stall, first=64 << 10))
    cache_dir = small_disk / "cache"
    client = await make_mirror(fake, cache_dir=cache_dir)
    response = await client.get(f"/v2/lib/app/blobs/{digest}")
    assert response.status == 200
    await stall.first_sent.wait()
    _fill_up(small_disk)
    stall.resume.set()
    await assert_broken(response, data)
    assert await wait_until(lambda: spool_files(cache_dir) == []), spool_files(cache_dir)
    assert not cached_blob(cache_dir, digest).exists()


async def test_an_endless_body_stops_before_the_disk_fills(
    make_mirror: MirrorFactory, make_fake_upstream: FakeFactory, small_disk: Path
) -> None:
    """With no size announced, a download is cut off while the disk still has its reserve:
    never by a failed write, which would take the room every other write needs."""
    fake = await make_fake_upstream()
    upstream = Endless()
    path = "/v2/lib/app/blobs/sha256:" + "5e" * 32
    fake.route(path, upstream)
    cache_dir = small_disk / "cache"
    client = await make_mirror(fake, cache_dir=cache_dir)
    with structlog.testing.capture_logs() as logs:
        response = await client.get(path)
        await assert_broken(response, b"")
        assert await wait_until(lambda: spool_files(cache_dir) == []), spool_files(cache_dir)
    refusals = [e for e in logs if e["event"] == "blob too large to keep"]
    assert [e["bound"] for e in refusals] == ["disk"], logs
    assert not [e for e in logs if e["event"] == "blob fill failed"], logs
    assert upstream.stopped.is_set()


def _fill_up(directory: Path) -> None:
    """Write until the file system has no space left."""
    # Unbuffered: nothing is left to write (and fail again) when the file is closed.
    with open(directory / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * (64 << 10))
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


async def test_an_import_the_disk_cannot_hold_is_refused_before_anything_is_copied(
    registry: Registry, seeded: Seeded, tmp_path: Path, small_disk: Path
) -> None:
    """A bundle whose blobs the cache's disk has no room for is one line and exit 1 before a
    byte is copied: an import never fills the disk that every download and write needs."""
    source = ("--upstream", registry.url, "--cache-dir", tmp_path / "source")
    name = "docker.io/{}:{}".format(*seeded.big_ref)
    prefetched = await mirror_cli("prefetch", *source, name)
    assert prefetched.returncode == 0, prefetched.explain()
    bundle = tmp_path / "big.tar"
    exported = await mirror_cli("export", *source, "-o", bundle, name)
    assert exported.returncode == 0, exported.explain()

    cache_dir = small_disk / "cache"
    result = await mirror_cli(
        "import", "--upstream", registry.url, "--cache-dir", cache_dir, bundle
    )
    assert result.returncode == 1, result.explain()
    assert len(result.error_lines) == 1, result.explain()
    assert "more than the cache's disk has room for" in result.error_lines[0], result.explain()
    assert result.error_lines[0].endswith("no image was imported"), result.explain()
    assert [p for p in (cache_dir / "blobs").rglob("*") if p.is_file()] == []
    assert spool_files(cache_dir) == []
