"""Content that reaches a cache with a bucket behind it other than by a pull (a push to a local
namespace, a bundle imported with `mirror import`) goes up to the bucket as a pull's does, on a
real SeaweedFS."""

from __future__ import annotations

import uuid
from pathlib import Path

from mirror.config import S3Settings
from tests.conftest import LocalMirrorFactory, Seeded
from tests.support.cli import mirror_cli
from tests.support.images import Blob, make_image
from tests.support.oci import assert_oci_error, wait_until
from tests.support.push import LOCAL, Pusher
from tests.support.registry import Registry
from tests.support.seaweed import Seaweed, storage_config


def blob_key(digest: str) -> str:
    return f"blobs/sha256/{digest.split(':', 1)[1]}"


async def test_a_pushed_blob_goes_up_to_the_bucket(
    local_mirror: LocalMirrorFactory, registry: Registry, seaweed: Seaweed
) -> None:
    """A monolithic push and a chunked one are 201, and each blob lands in the bucket whole."""
    storage: S3Settings = seaweed.settings()
    client = await local_mirror(registry, storage=storage)
    pusher = Pusher(client)
    repo = f"{LOCAL}/team/app"
    whole = Blob.of(uuid.uuid4().bytes * 4000, "application/octet-stream")
    await pusher.push_blob(repo, whole)
    chunked = Blob.of(uuid.uuid4().bytes * 3000, "application/octet-stream")
    location = await pusher.start_upload(repo)
    response = await pusher.request(
        "PUT", location, params={"digest": chunked.digest}, data=chunked.data
    )
    assert response.status == 201, await response.text()
    for blob in (whole, chunked):
        key = blob_key(blob.digest)
        assert await wait_until(lambda key=key: key in seaweed.keys(storage.prefix), within=20)
        assert seaweed.read(f"{storage.prefix}/{key}")[0] == blob.data


async def test_an_imported_bundle_goes_up_to_the_bucket(
    registry: Registry, seeded: Seeded, seaweed: Seaweed, tmp_path: Path
) -> None:
    """`mirror import` onto a cache with a bucket behind it exits 0, and every blob, the
    manifest and the tag record of the image are in the bucket when it is done."""
    repo, tag = seeded.oci_ref
    source = ("--upstream", registry.url, "--storage", tmp_path / "source")
    prefetched = await mirror_cli("prefetch", *source, f"{repo}:{tag}")
    assert prefetched.returncode == 0, prefetched.explain()
    bundle = tmp_path / "bundle.tar"
    exported = await mirror_cli("export", *source, "-o", bundle, f"{repo}:{tag}")
    assert exported.returncode == 0, exported.explain()

    storage = seaweed.settings()
    config = storage_config(tmp_path / "mirror.toml", storage)
    imported = await mirror_cli("import", "--config", config, "--cache-dir", tmp_path / "c", bundle)
    assert imported.returncode == 0, imported.explain()
    keys = seaweed.keys(storage.prefix)
    for blob in seeded.oci.blobs:
        assert keys.get(blob_key(blob.digest)) == blob.size, keys
    assert f"manifests/sha256/{seeded.oci.digest.split(':', 1)[1]}" in keys
    assert [k for k in keys if k.startswith("tags/") and k.endswith(f"/{repo}/_tags/{tag}")]


async def test_a_deleted_tag_of_a_pushed_image_stays_deleted(
    local_mirror: LocalMirrorFactory, registry: Registry, seaweed: Seaweed
) -> None:
    """DELETE of a pushed tag is 202, then the tag is 404 and out of the tag list, though the
    mirror reads what its directory lacks from the bucket; the other tag still serves."""
    client = await local_mirror(registry, storage=seaweed.settings())
    pusher, admin = Pusher(client), Pusher(client, "admin")
    repo = f"{LOCAL}/team/app"
    image = make_image(oci=True, seed="s3-deletes")
    await pusher.push_image(repo, "v1", image)
    await pusher.push_manifest(repo, "latest", image.manifest, image.media_type)
    assert (await admin.request("DELETE", f"/v2/{repo}/manifests/v1")).status == 202
    gone = await pusher.request("GET", f"/v2/{repo}/manifests/v1")
    await assert_oci_error(gone, 404, "MANIFEST_UNKNOWN")
    assert (await pusher.request("GET", f"/v2/{repo}/manifests/latest")).status == 200
    listed = await (await pusher.request("GET", f"/v2/{repo}/tags/list")).json()
    assert listed["tags"] == ["latest"]
