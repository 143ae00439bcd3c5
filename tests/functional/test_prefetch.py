"""`mirror prefetch`: whole images into the cache through the fill path, then served with no
upstream at all."""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from mirror.commands.progress import size
from mirror.config import Settings, UpstreamSettings
from tests.conftest import MirrorFromSettings, RegistryFactory, Seeded
from tests.support import storage
from tests.support.cli import mirror_cli, upstream_config
from tests.support.images import Image, Index, make_image, make_index, push_image, push_index
from tests.support.oci import ACCEPT_ALL, cached_blob, cached_manifest
from tests.support.registry import Registry

Client = TestClient[Any, Any]


def mirror_settings(url: str, cache_dir: Path, *, offline: bool = False) -> Settings:
    upstream = UpstreamSettings(default=True, url=url, offline=offline, connect_timeout=2.0)
    return Settings(cache_dir=cache_dir, upstreams=(upstream,), tag_ttl=0.0)


async def assert_serves(client: Client, repo: str, reference: str, manifest: bytes) -> None:
    response = await client.get(f"/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT_ALL})
    assert response.status == 200, await response.text()
    assert await response.read() == manifest


async def assert_serves_image(client: Client, repo: str, image: Image) -> None:
    """The manifest by digest and every blob, byte for byte."""
    await assert_serves(client, repo, image.digest, image.manifest)
    for blob in image.blobs:
        response = await client.get(f"/v2/{repo}/blobs/{blob.digest}")
        assert response.status == 200
        assert await response.read() == blob.data


def blob_gets(registry: Registry) -> list[str]:
    return [path for method, path in registry.requests() if method == "GET" and "/blobs/" in path]


async def test_prefetched_images_are_served_by_tag_and_digest_with_the_upstream_stopped(
    mirror_from: MirrorFromSettings, make_registry: RegistryFactory, cache_dir: Path
) -> None:
    """prefetch, stop the upstream: tags, digests, every platform and blob are served (online
    mode serves the tags stale, --offline serves them without trying)."""
    upstream = make_registry()
    image = make_image(layer_sizes=(5000, 700), seed="prefetch-image")
    index = make_index(
        [make_image(oci=True, arch=a, seed="prefetch-index") for a in ("amd64", "arm64")]
    )
    push_image(upstream.url, "team/app", "v1", image)
    push_index(upstream.url, "team/multi", "v1", index)

    result = await mirror_cli(
        "prefetch", "--upstream", upstream.url, "--cache-dir", cache_dir,
        "team/app:v1", f"docker.io/team/multi@{index.digest}", "team/multi:v1",
    )  # fmt: skip
    assert result.returncode == 0, result.explain()
    assert result.stdout.startswith("prefetched 3 of 3 images:"), result.stdout
    assert result.stdout.strip().endswith("0 failed")
    upstream.stop()

    for offline in (False, True):
        client = await mirror_from(mirror_settings(upstream.url, cache_dir, offline=offline))
        await assert_serves(client, "team/app", "v1", image.manifest)
        await assert_serves_image(client, "team/app", image)
        await assert_serves(client, "team/multi", "v1", index.manifest)
        for child in index.images:
            await assert_serves_image(client, "team/multi", child)
        await client.close()


async def test_prefetch_reports_each_failure_in_one_line_and_exits_1(
    make_registry: RegistryFactory, tmp_path: Path, cache_dir: Path
) -> None:
    """A missing tag and an unmirrored registry fail alone; the good image is still fetched."""
    upstream = make_registry()
    image = make_image(seed="prefetch-partial")
    push_image(upstream.url, "team/app", "v1", image)
    config = upstream_config(tmp_path / "mirror.toml", upstream.url)
    result = await mirror_cli(
        "prefetch", "--config", config, "--cache-dir", cache_dir,
        "team/app:v1", "team/app:nope", "ghcr.io/org/app:1",
    )  # fmt: skip
    assert result.returncode == 1, result.explain()
    failures = [line for line in result.error_lines if line.startswith("mirror prefetch: ")]
    assert len(failures) == 2, result.explain()
    assert failures[0].startswith("mirror prefetch: docker.io/team/app:nope: ")
    assert failures[1].startswith("mirror prefetch: ghcr.io/org/app:1: ")
    assert "ghcr.io" in failures[1] and "not mirrored" in failures[1]
    assert result.stdout.startswith("prefetched 1 of 3 images:")
    assert result.stdout.strip().endswith("2 failed")
    assert all(cached_blob(cache_dir, blob.digest).exists() for blob in image.blobs)


@pytest.mark.directory_only(
    reason="a bucket behind the cache keeps a blob past the cache directory's own cap"
)
async def test_a_blob_larger_than_the_cap_is_refused_before_it_is_fetched(
    registry: Registry, seeded: Seeded, cache_dir: Path
) -> None:
    """The cache could not keep it: the failure says so, and the upstream is not asked for
    it (a schedule would fetch it again, only to throw it away, at every round)."""
    repo, tag = seeded.big_ref
    big = seeded.big.layers[0]
    registry.clear_requests()
    result = await mirror_cli(
        "prefetch", "--upstream", registry.url, "--cache-dir", cache_dir, "--max-size", "1MiB",
        f"{repo}:{tag}",
    )  # fmt: skip
    assert result.returncode == 1, result.explain()
    assert [line for line in result.error_lines if line.startswith("mirror prefetch: ")] == [
        f"mirror prefetch: docker.io/{repo}:{tag}: blob {big.digest} is {big.size} bytes: more "
        f"than the cache may hold (--max-size, {1 << 20} bytes)"
    ], result.explain()
    assert f"/v2/{repo}/blobs/{big.digest}" not in [path for _, path in registry.requests()]


async def test_references_come_from_a_list_file_too(
    registry: Registry, seeded: Seeded, tmp_path: Path
) -> None:
    """--file adds one reference a line, skipping blanks and comments; repeats count once."""
    listing = tmp_path / "images.txt"
    repo, tag = seeded.oci_ref
    listing.write_text(
        f"# images for the build farm\n\n{repo}:{tag}  # the OCI one\n{repo}:{tag}\n"
    )
    cache = tmp_path / "cache"
    result = await mirror_cli(
        "prefetch", "--upstream", registry.url, "--cache-dir", cache, "--file", listing,
        f"docker.io/{repo}:{tag}",
    )  # fmt: skip
    assert result.returncode == 0, result.explain()
    assert result.stdout.startswith("prefetched 1 of 1 images:")
    assert all(cached_blob(cache, blob.digest).exists() for blob in seeded.oci.blobs)


async def test_a_reference_that_does_not_parse_is_one_line_and_nothing_is_fetched(
    make_registry: RegistryFactory, cache_dir: Path
) -> None:
    """A malformed reference stops the command before any request, with one line."""
    upstream = make_registry()
    upstream.clear_requests()
    for bad in ("Team/App:v1", "team/app:", "team/app@sha256:1234", "team//app"):
        result = await mirror_cli(
            "prefetch", "--upstream", upstream.url, "--cache-dir", cache_dir, "team/ok:v1", bad
        )
        assert result.returncode == 1, result.explain()
        assert len(result.error_lines) == 1, result.explain()
        assert result.error_lines[0].startswith("mirror prefetch: "), result.error_lines
        assert bad.split("@")[0].split(":")[0].split("/")[0] in result.error_lines[0]
    assert upstream.requests() == []


async def test_platform_picks_one_image_of_an_index(
    make_registry: RegistryFactory, cache_dir: Path
) -> None:
    """--platform linux/arm64 fetches the index and its arm64 image only; an absent platform
    is a failure naming the platforms the index has."""
    upstream = make_registry()
    amd64, arm64 = (
        make_image(oci=True, arch=a, seed="prefetch-platform") for a in ("amd64", "arm64")
    )
    index: Index = make_index([amd64, arm64])
    push_index(upstream.url, "team/multi", "v1", index)
    base = ("prefetch", "--upstream", upstream.url, "--cache-dir", cache_dir)
    result = await mirror_cli(*base, "--platform", "linux/arm64", "team/multi:v1")
    assert result.returncode == 0, result.explain()
    assert cached_manifest(cache_dir, index.digest).exists()
    assert all(cached_blob(cache_dir, blob.digest).exists() for blob in arm64.blobs)
    assert not cached_manifest(cache_dir, amd64.digest).exists()
    assert not any(cached_blob(cache_dir, blob.digest).exists() for blob in amd64.layers)

    result = await mirror_cli(*base, "--platform", "linux/s390x", "team/multi:v1")
    assert result.returncode == 1
    assert result.error_lines == [
        "mirror prefetch: docker.io/team/multi:v1: the index has no linux/s390x image "
        "(it has linux/amd64, linux/arm64/v8)"
    ], result.explain()
    result = await mirror_cli(*base, "--platform", "linux", "team/multi:v1")
    assert result.returncode == 1 and len(result.error_lines) == 1
    assert result.error_lines[0].startswith("mirror prefetch: --platform: ")


async def test_a_second_prefetch_fetches_nothing_and_says_so(
    registry: Registry, seeded: Seeded, cache_dir: Path
) -> None:
    """The summary counts fetched and already-cached bytes; a repeat sends no blob GET."""
    repo, tag = seeded.schema2_ref
    args = ("prefetch", "--upstream", registry.url, "--cache-dir", cache_dir, f"{repo}:{tag}")
    total = sum(blob.size for blob in seeded.schema2.blobs)
    first = await mirror_cli(*args)
    assert first.returncode == 0, first.explain()
    assert first.stdout.strip() == (
        f"prefetched 1 of 1 images: {size(total)} fetched, 0 bytes already cached, 0 failed"
    ), first.stdout
    # Not a terminal: one plain line per image on standard error.
    assert first.error_lines == [
        f"docker.io/{repo}:{tag} {seeded.schema2.digest}: 3 blobs, {size(total)} fetched, "
        "0 bytes already cached"
    ]
    registry.clear_requests()
    second = await mirror_cli(*args)
    assert second.returncode == 0, second.explain()
    assert f"0 bytes fetched, {size(total)} already cached" in second.stdout
    assert blob_gets(registry) == []


async def test_prefetch_beside_a_serving_mirror_fetches_each_blob_once(
    mirror_from: MirrorFromSettings, registry: Registry, seeded: Seeded, cache_dir: Path
) -> None:
    """A server pulling the same big image while prefetch runs on its cache directory: both
    finish, and the upstream served the big layer once."""
    repo, tag = seeded.big_ref
    layer = seeded.big.layers[0]
    client = await mirror_from(mirror_settings(registry.url, cache_dir))
    registry.clear_requests()
    prefetching = asyncio.ensure_future(
        mirror_cli(
            "prefetch", "--upstream", registry.url, "--cache-dir", cache_dir, f"{repo}:{tag}"
        )
    )
    response = await client.get(f"/v2/{repo}/blobs/{layer.digest}")
    assert await response.read() == layer.data
    result = await prefetching
    assert result.returncode == 0, result.explain()
    assert [p for p in blob_gets(registry) if layer.digest in p] == [
        f"/v2/{repo}/blobs/{layer.digest}"
    ]
    assert cached_blob(cache_dir, layer.digest).read_bytes() == layer.data


def test_progress_bars_on_a_terminal(registry: Registry, seeded: Seeded, tmp_path: Path) -> None:
    """With standard error on a terminal, each image gets a progress bar."""
    repo, tag = seeded.oci_ref
    main, secondary = pty.openpty()
    env = storage.current().environ(tmp_path / "cache")
    env.update(COLUMNS="120", TERM="xterm")
    with subprocess.Popen(
        [sys.executable, "-m", "mirror", "prefetch", "--upstream", registry.url,
         "--cache-dir", str(tmp_path / "cache"), f"{repo}:{tag}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=secondary, env=env,
    ) as process:  # fmt: skip
        os.close(secondary)
        screen = b""
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            screen += chunk
        assert process.wait(timeout=120) == 0
    os.close(main)
    text = screen.decode(errors="replace")
    assert f"docker.io/{repo}:{tag}" in text
    assert "━" in text, text  # rich's bar
    assert "done" in text
