"""`mirror du` with `--storage s3://…`, on a real SeaweedFS: the bucket's totals counted from a
listing of its keys, after the cache directory in front of it when there is one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from mirror.app import create_app
from mirror.commands.cachedir import human_size
from mirror.config import Settings, UpstreamSettings
from tests.conftest import Seeded
from tests.support.cli import mirror_cli
from tests.support.oci import ACCEPT_ALL
from tests.support.registry import Registry
from tests.support.seaweed import BUCKET, Seaweed, storage_config

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


async def test_du_counts_the_bucket_after_the_cache_directory_in_front(
    aiohttp_client: ClientFactory,
    seaweed: Seaweed,
    registry: Registry,
    seeded: Seeded,
    tmp_path: Path,
) -> None:
    """After a pull, du shows the cache directory's table, then one line with the bucket's
    blobs, manifests, tag records and an upload left behind, and every byte under the prefix;
    for a replica with no cache directory yet, the bucket's line alone."""
    storage = seaweed.settings()
    repo, tag = seeded.schema2_ref
    image = seeded.schema2
    settings = Settings(
        cache_dir=tmp_path / "cache",
        upstreams=(UpstreamSettings(default=True, url=registry.url),),
        storage=storage,
    )
    client = await aiohttp_client(create_app(settings))
    manifest = await client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT_ALL})
    assert manifest.status == 200, await manifest.text()
    for blob in image.blobs:
        response = await client.get(f"/v2/{repo}/blobs/{blob.digest}")
        assert response.status == 200 and await response.read() == blob.data
    await client.close()  # lets the uploads under way finish
    # What a process that died mid-upload leaves (for a lifecycle rule to remove).
    seaweed.client.put_object(Bucket=BUCKET, Key=f"{storage.prefix}/uploads/abc", Body=b"x" * 5)
    everything = sum(seaweed.keys(storage.prefix).values())
    config = storage_config(tmp_path / "mirror.toml", storage)
    blobs = sum(blob.size for blob in image.blobs)
    expected = (
        f"bucket {storage.url}: {len(image.blobs)} blobs {human_size(blobs)}, "
        f"1 manifest {human_size(len(image.manifest))}, 1 tag, 1 upload in progress 5 B; "
        f"{human_size(everything)} in all"
    )

    result = await mirror_cli("du", "--config", config, "--cache-dir", tmp_path / "cache")
    assert result.returncode == 0, result.explain()
    lines = result.stdout.splitlines()
    assert lines[0] == f"cache directory {tmp_path / 'cache'}, in front of the bucket:"
    assert lines[1].split() == ["REGISTRY", "TAGS", "IMAGES", "SIZE"], result.explain()
    assert lines[-1] == expected, result.explain()

    fresh = await mirror_cli("du", "--config", config, "--cache-dir", tmp_path / "none")
    assert fresh.returncode == 0, fresh.explain()
    assert fresh.stdout.splitlines() == [expected], fresh.explain()
