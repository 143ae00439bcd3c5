"""Content that reaches a cache with a bucket behind it other than by a pull (a push to a local
namespace, a bundle imported with `mirror import`) goes up to the bucket as a pull's does, on a
real SeaweedFS."""

from __future__ import annotations

import uuid

from mirror.config import S3Settings
from tests.conftest import LocalMirrorFactory
from tests.support.images import Blob
from tests.support.oci import wait_until
from tests.support.push import LOCAL, Pusher
from tests.support.registry import Registry
from tests.support.seaweed import Seaweed


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
