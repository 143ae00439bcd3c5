"""The size cap: eviction under load, whole images, shared layers, recency across restarts, pins,
blobs too big to keep, blobs being read, and a disk that fills up."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from aiohttp.test_utils import TestClient

from mirror.api.keys import UPKEEP
from mirror.app import create_app
from mirror.cache.lock import UpkeepLock
from mirror.config import Settings, SizeLimit, UpstreamSettings
from mirror.oci.digest import Digest
from mirror.storage.blobs import BlobStore
from tests.conftest import RegistryFactory, Seeded
from tests.support import storage
from tests.support.cache import HOUR, Clock, cache_usage, cached_tags, pull_image
from tests.support.images import Image, make_image, push_image
from tests.support.metrics import scrape
from tests.support.oci import (
    ACCEPT_ALL,
    assert_broken,
    cached_blob,
    cached_manifest,
    spool_files,
    wait_until,
)
from tests.support.processes import free_port
from tests.support.registry import Registry

KIB = 1024


class CappedMirror(Protocol):
    def __call__(
        self,
        upstream: Registry,
        *,
        clock: Callable[[], float],
        max_size: int | None = None,
        protect_window: float = HOUR,
        pin: tuple[str, ...] = (),
        cache_dir: Path | None = None,
    ) -> Awaitable[TestClient[Any, Any]]: ...


@pytest.fixture
def capped_mirror(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]], cache_dir: Path
) -> CappedMirror:
    """A mirror with a cap and a clock of the test's; restart it by calling again."""

    async def make(
        upstream: Registry,
        *,
        clock: Callable[[], float],
        max_size: int | None = None,
        protect_window: float = HOUR,
        pin: tuple[str, ...] = (),
        cache_dir: Path | None = cache_dir,
    ) -> TestClient[Any, Any]:
        settings = Settings(
            cache_dir=cache_dir or Path("cache"),
            upstreams=(
                UpstreamSettings(
                    default=True, url=upstream.url, connect_timeout=2.0, read_timeout=5.0
                ),
            ),
            max_size=SizeLimit(bytes=max_size) if max_size else None,
            protect_window=protect_window,
            pin=pin,
        )
        client = await aiohttp_client(create_app(storage.current().applied(settings), clock=clock))
        # The pass every mirror makes at start-up is over before the test goes on: files it
        # would see being created meanwhile bear the real time, hours before the test's clock.
        await client.app[UPKEEP].evictor.run_pass()
        return client

    return make


def _push(registry: Registry, images: dict[str, Image]) -> None:
    for repo, image in images.items():
        push_image(registry.url, repo, "v1", image)


async def _committed(cache_dir: Path, *images: Image) -> None:
    """Wait until the pulled images are committed: clients have every byte a moment before."""
    assert await wait_until(lambda: all(_on_disk(cache_dir, i) for i in images), within=10)


def _on_disk(cache_dir: Path, image: Image) -> bool:
    return cached_manifest(cache_dir, image.digest).exists() and all(
        cached_blob(cache_dir, b.digest).exists() for b in image.blobs
    )


def _size(image: Image) -> int:
    return len(image.manifest) + sum(b.size for b in image.blobs)


async def _settle(client: TestClient[Any, Any]) -> None:
    """Make a fresh eviction pass: one the background task may be making began before what
    the test just did, so wait for it and make another."""
    evictor = client.app[UPKEEP].evictor
    for _ in range(2):
        deadline = time.monotonic() + 30
        while await evictor.run_pass() is None:
            assert time.monotonic() < deadline, "another process holds the upkeep lock"
            await asyncio.sleep(0.05)


async def test_concurrent_pulls_complete_and_the_cap_holds(
    capped_mirror: CappedMirror,
    registry: Registry,
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """24 concurrent pulls of 8 images through a cap that fits 3: every pull is complete and
    exact, committed content passes the cap by more than one blob only while the last pass
    found too little it could remove (the rest being read), and the evictor alone brings the
    cache (downloads included) back under the cap."""
    images = {
        f"evict/churn{n}": make_image(layer_sizes=(64 * KIB, 64 * KIB), seed=f"churn{n}")
        for n in range(8)
    }
    _push(registry, images)
    largest = max(b.size for image in images.values() for b in image.blobs)
    cap = 3 * _size(next(iter(images.values()))) + largest
    client = await capped_mirror(registry, clock=time.time, max_size=cap, protect_window=0)
    evictor = client.app[UPKEEP].evictor
    # Measured right after each commit, on the event loop that makes every commit: a walk
    # taken meanwhile could miss what was there only for a moment.
    committed = 0
    commit = BlobStore.commit

    def measured(store: BlobStore, spool_file: Path, digest: Digest) -> Path:
        nonlocal committed
        final = commit(store, spool_file, digest)
        if not evictor.holding:
            committed = max(committed, cache_usage(cache_dir, ("blobs", "manifests")))
        return final

    monkeypatch.setattr(BlobStore, "commit", measured)
    await asyncio.gather(
        *(pull_image(client, repo, "v1", image) for _ in range(3) for repo, image in images.items())
    )
    assert await wait_until(lambda: cache_usage(cache_dir) <= cap, within=30)
    assert len(cached_tags(cache_dir)) < len(images)
    assert evictor.passes > 0
    # What is committed stays within one blob of the cap while eviction finds what to remove;
    # downloads in flight come on top.
    assert committed <= cap + largest, (committed, cap, largest)


async def test_a_shared_base_layer_stays_while_the_image_using_it_is_pulled(
    capped_mirror: CappedMirror, make_registry: RegistryFactory, cache_dir: Path
) -> None:
    """Evicting an old image keeps the base layer a recent one shares: with the upstream
    stopped mid-pull, the recent image's pull still completes from the cache."""
    upstream = make_registry()
    old = make_image(layer_sizes=(256 * KIB, 256 * KIB), seed="old", base_seed="base")
    new = make_image(layer_sizes=(256 * KIB, 256 * KIB), seed="new", base_seed="base")
    base = old.layers[0]
    assert new.layers[0] == base
    _push(upstream, {"shared/old": old, "shared/new": new})
    clock = Clock()
    client = await capped_mirror(upstream, clock=clock, max_size=_size(old) + 200 * KIB)
    await pull_image(client, "shared/old", "v1", old)
    clock.advance(2 * HOUR)

    # The new image's pull starts: its manifest, config and own layer come from upstream,
    # which takes the cache over its cap; the base layer it has not asked for yet.
    response = await client.get("/v2/shared/new/manifests/v1", headers={"Accept": ACCEPT_ALL})
    assert await response.read() == new.manifest
    for blob in (new.config, new.layers[1]):
        assert await (await client.get(f"/v2/shared/new/blobs/{blob.digest}")).read() == blob.data
        assert await wait_until(cached_blob(cache_dir, blob.digest).exists)
    await _settle(client)
    assert not cached_blob(cache_dir, old.layers[1].digest).exists()
    assert not cached_manifest(cache_dir, old.digest).exists()
    assert cached_tags(cache_dir) == {"shared/new:v1"}

    upstream.stop()
    response = await client.get(f"/v2/shared/new/blobs/{base.digest}")
    assert response.status == 200
    assert await response.read() == base.data
    assert _on_disk(cache_dir, new)


async def test_recency_survives_a_restart(
    capped_mirror: CappedMirror, registry: Registry, cache_dir: Path
) -> None:
    """A restarted mirror evicts by the uses the previous one recorded: the image pulled again
    most recently stays, although it was cached first; the other goes."""
    images = {
        f"recency/{name}": make_image(layer_sizes=(128 * KIB,), seed=f"recency-{name}")
        for name in ("first", "second", "third")
    }
    _push(registry, images)
    first, second, third = images.values()
    cap = _size(first) + _size(second) + 64 * KIB
    clock = Clock()
    client = await capped_mirror(registry, clock=clock, max_size=cap)
    await pull_image(client, "recency/first", "v1", first)
    clock.advance(HOUR)
    await pull_image(client, "recency/second", "v1", second)
    clock.advance(HOUR)
    await pull_image(client, "recency/first", "v1", first)
    await client.close()

    clock.advance(2 * HOUR)
    client = await capped_mirror(registry, clock=clock, max_size=cap)
    await pull_image(client, "recency/third", "v1", third)
    await _committed(cache_dir, first, third)
    await _settle(client)
    assert cached_tags(cache_dir) == {"recency/first:v1", "recency/third:v1"}
    assert _on_disk(cache_dir, first) and _on_disk(cache_dir, third)
    assert not any(cached_blob(cache_dir, b.digest).exists() for b in second.blobs)


async def test_pinned_images_are_never_evicted(
    capped_mirror: CappedMirror, registry: Registry, cache_dir: Path
) -> None:
    """The least recently used image stays when a pin matches it; the next one goes instead."""
    images = {
        f"pins/{name}": make_image(layer_sizes=(128 * KIB,), seed=f"pins-{name}")
        for name in ("kept", "older", "newest")
    }
    _push(registry, images)
    kept, older, newest = images.values()
    clock = Clock()
    client = await capped_mirror(
        registry,
        clock=clock,
        max_size=_size(kept) + _size(older) + 64 * KIB,
        pin=("docker.io/pins/kep*:*",),
    )
    for repo, image in images.items():
        await pull_image(client, repo, "v1", image)
        clock.advance(2 * HOUR)
    await _committed(cache_dir, newest)
    await _settle(client)
    assert cached_tags(cache_dir) == {"pins/kept:v1", "pins/newest:v1"}
    assert _on_disk(cache_dir, kept) and _on_disk(cache_dir, newest)
    # What /metrics says of it: the size against the cap, and the image evicted.
    cap = _size(kept) + _size(older) + 64 * KIB
    found = await scrape(client)
    assert found.get("mirror_cache_cap_bytes") == cap
    assert 0 < (found.get("mirror_cache_size_bytes") or 0) <= cap
    assert found.total("mirror_cache_evictions_total") >= 1


async def test_a_blob_larger_than_the_cap_is_streamed_and_not_kept(
    capped_mirror: CappedMirror, registry: Registry, seeded: Seeded, cache_dir: Path
) -> None:
    """The client gets every byte of a layer bigger than the whole cap; the cache keeps the
    image's manifest and config but not that layer."""
    repo, tag = seeded.big_ref
    client = await capped_mirror(registry, clock=Clock(), max_size=1024 * KIB)
    await pull_image(client, repo, tag, seeded.big)
    big = cached_blob(cache_dir, seeded.big.layers[0].digest)
    config = cached_blob(cache_dir, seeded.big.config.digest)
    evictor = client.app[UPKEEP].evictor
    # Committed (nothing left in the spool) and evicted; the rest of the image stays.
    assert await wait_until(
        lambda: (
            not spool_files(cache_dir) and evictor.passes and config.exists() and not big.exists()
        ),
        within=30,
    )
    assert cached_manifest(cache_dir, seeded.big.digest).exists()


async def test_a_blob_being_sent_is_not_evicted_until_it_is_sent(
    capped_mirror: CappedMirror, make_registry: RegistryFactory, cache_dir: Path
) -> None:
    """Eviction skips a blob a client is still receiving, though it is the least recently used
    content left; the client gets every byte, and the blob goes once it is sent."""
    upstream = make_registry()
    # Big enough that most of a response waits in the server, past the sockets' buffers.
    old = make_image(layer_sizes=(32 * 1024 * KIB,), seed="reading-old")
    new = make_image(layer_sizes=(32 * 1024 * KIB,), seed="reading-new")
    _push(upstream, {"reading/old": old, "reading/new": new})
    client = await capped_mirror(
        upstream, clock=time.time, max_size=48 * 1024 * KIB, protect_window=0
    )
    layer = old.layers[0]
    path = cached_blob(cache_dir, layer.digest)
    await pull_image(client, "reading/old", "v1", old)
    await _committed(cache_dir, old)

    response = await client.get(f"/v2/reading/old/blobs/{layer.digest}")
    assert response.status == 200  # headers are here; most of the body waits in the server
    await pull_image(client, "reading/new", "v1", new)  # over the cap: the old image goes
    assert await wait_until(lambda: not cached_manifest(cache_dir, old.digest).exists())
    await _settle(client)
    assert path.exists()
    assert await response.read() == layer.data

    await pull_image(client, "reading/new", "v1", new)
    await _settle(client)
    assert await wait_until(lambda: not path.exists())


async def test_the_upkeep_lock_makes_one_process_evict_at_a_time(
    capped_mirror: CappedMirror, registry: Registry, cache_dir: Path
) -> None:
    """While another process holds the upkeep lock, a mirror leaves eviction to it."""
    client = await capped_mirror(registry, clock=Clock(), max_size=1024 * KIB)
    evictor = client.app[UPKEEP].evictor
    with UpkeepLock(cache_dir) as other:
        assert other.try_acquire()
        assert await evictor.run_pass() is None
    assert await evictor.run_pass() is not None


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 12 MiB tmpfs."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount_point)], check=True
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


async def test_a_full_disk_evicts_and_the_next_pull_succeeds(
    small_disk: Path,
    capped_mirror: CappedMirror,
    registry: Registry,
    seeded: Seeded,
) -> None:
    """With no cap set, a download the disk has no room for is refused (or cut off, never a
    clean short body, nothing partial kept), old images are evicted, and the retry succeeds."""
    cache_dir = small_disk / "cache"
    old = make_image(layer_sizes=(6 * 1024 * KIB,), seed="crowding")
    push_image(registry.url, "full/old", "v1", old)
    clock = Clock()
    client = await capped_mirror(registry, clock=clock, cache_dir=cache_dir)
    await pull_image(client, "full/old", "v1", old)
    assert await storage.current().uploaded(cache_dir, (b.digest for b in old.blobs))
    clock.advance(2 * HOUR)

    repo, _ = seeded.big_ref
    big = seeded.big.layers[0]
    await assert_broken(await client.get(f"/v2/{repo}/blobs/{big.digest}"), big.data)
    assert await wait_until(lambda: not _on_disk(cache_dir, old), within=30)
    assert not cached_blob(cache_dir, big.digest).exists()
    response = await client.get(f"/v2/{repo}/blobs/{big.digest}")
    assert await response.read() == big.data
    assert await wait_until(cached_blob(cache_dir, big.digest).exists)


def test_eviction_helpers_end_with_their_server(tmp_path: Path, registry: Registry) -> None:
    """`mirror serve --workers 2 --max-size …` evicts through one helper process per worker,
    and a supervisor killed outright (SIGKILL) leaves none of them behind."""
    port = free_port()
    log_path = tmp_path / "mirror.log"
    command = [
        sys.executable, "-m", "mirror", "serve", "--workers", "2",
        "--listen", f"127.0.0.1:{port}", "--upstream", registry.url,
        "--cache-dir", str(tmp_path / "cache"), "--max-size", "1MiB",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        env = storage.current().environ(tmp_path / "cache")
        process = subprocess.Popen(command, stdout=log, stderr=log, env=env)
    helpers: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while len(helpers) < 2 and time.monotonic() < deadline:
            # Every worker counts the cache at start-up, in its helper.
            helpers = [
                pid
                for worker in _children(process.pid)
                for pid in _children(worker)
                if "mirror.cache.helper" in Path(f"/proc/{pid}/cmdline").read_text()
            ]
            time.sleep(0.1)
        assert len(helpers) == 2, log_path.read_text()
    finally:
        process.kill()
        process.wait()
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in helpers) and time.monotonic() < deadline:
        time.sleep(0.1)
    orphans = [pid for pid in helpers if _alive(pid)]
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    assert not orphans


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        return " Z " not in Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
