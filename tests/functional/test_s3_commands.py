"""The upkeep commands (`ls`, `rm`, `gc`, `verify`, `export`) with `--storage s3://…`, run as an
operator runs them (the real CLI in a subprocess) on a bucket of a real SeaweedFS that a real
mirror filled from a real registry: they act on the bucket, and where they remove something,
on the cache directory in front of it too."""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from mirror.app import create_app
from mirror.config import S3Settings, Settings, UpstreamSettings
from tests.conftest import Seeded
from tests.functional.test_s3_du import storage_config
from tests.functional.test_s3_inventory import fill
from tests.support.cache import pull_image
from tests.support.cli import mirror_cli
from tests.support.images import Image, make_image, push_image, sha256_digest
from tests.support.oci import cached_blob, cached_manifest
from tests.support.processes import free_port
from tests.support.redis_server import RedisServer
from tests.support.registry import Registry
from tests.support.seaweed import ACCESS_KEY, BUCKET, Seaweed, unreachable

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def blob_key(digest: str) -> str:
    return f"blobs/sha256/{digest.split(':')[1]}"


def manifest_key(digest: str) -> str:
    return f"manifests/sha256/{digest.split(':')[1]}"


def tag_key(repo: str, tag: str) -> str:
    return f"tags/docker.io/{repo}/_tags/{tag}"


def image_keys(image: Image) -> set[str]:
    """The keys of an image's manifest and blobs."""
    return {manifest_key(image.digest), *(blob_key(b.digest) for b in image.blobs)}


def damage(seaweed: Seaweed, key: str) -> bytes:
    """Flip one byte of an object in the middle; returns the damaged bytes."""
    data = bytearray(seaweed.read(key)[0])
    data[len(data) // 2] ^= 0x01
    seaweed.client.put_object(Bucket=BUCKET, Key=key, Body=bytes(data))
    return bytes(data)


def mirror_on(storage: S3Settings, registry: Registry, cache_dir: Path) -> Settings:
    return Settings(
        cache_dir=cache_dir,
        upstreams=(UpstreamSettings(default=True, url=registry.url),),
        storage=storage,
    )


async def test_ls_lists_the_bucket_from_a_host_that_never_served(
    aiohttp_client: ClientFactory,
    seaweed: Seaweed,
    registry: Registry,
    redis_server: RedisServer,
    seeded: Seeded,
    tmp_path: Path,
) -> None:
    """Every tag the bucket holds with its digest and its image's size (an index's children
    included), for a host with no cache directory; no pulls are known there; the text form has
    the same rows, with a shared Redis too; nothing is created on the host."""
    storage = seaweed.settings()
    await fill(aiohttp_client, registry, seeded, storage, tmp_path / "cache")
    config = storage_config(tmp_path / "mirror.toml", storage)
    elsewhere = tmp_path / "elsewhere"
    amd64 = seeded.index.images[0]

    result = await mirror_cli("ls", "--json", "--config", config, "--cache-dir", elsewhere)
    assert result.returncode == 0, result.explain()
    rows = {f"{r['repository']}:{r['tag']}": r for r in json.loads(result.stdout)}
    assert set(rows) == {"seed/schema2:v1", "seed/multi:v1"}
    schema2 = rows["seed/schema2:v1"]
    assert schema2["registry"] == "docker.io"
    assert schema2["digest"] == seeded.schema2.digest
    assert schema2["size"] == len(seeded.schema2.manifest) + sum(
        b.size for b in seeded.schema2.blobs
    )
    assert (schema2["pulls"], schema2["last_pull"]) == (0, None)
    multi = rows["seed/multi:v1"]
    assert multi["digest"] == seeded.index.digest
    assert multi["size"] == len(seeded.index.manifest) + len(amd64.manifest) + sum(
        b.size for b in amd64.blobs
    )

    text = await mirror_cli(
        "ls", "--config", config, "--cache-dir", elsewhere, "--redis-url", redis_server.url
    )
    assert text.returncode == 0, text.explain()
    header, *lines = text.stdout.splitlines()
    assert header.split()[:3] == ["REGISTRY", "REPOSITORY", "TAG"]
    line = next(line for line in lines if "seed/schema2" in line)
    assert line.split()[:4] == ["docker.io", "seed/schema2", "v1", seeded.schema2.digest[:19]]
    assert not elsewhere.exists()


async def test_rm_removes_an_image_from_the_bucket_and_the_directory_in_front(
    aiohttp_client: ClientFactory,
    seaweed: Seaweed,
    registry: Registry,
    tmp_path: Path,
) -> None:
    """`rm` by tag takes the tag, the manifest and the blobs no other image uses from the bucket
    and from the cache directory in front, leaving a shared layer and the other image whole; a
    bad reference changes nothing; `rm` by digest takes the other image, shared layer included;
    the next pull fetches the removed image from upstream again."""
    first = make_image(layer_sizes=(2000, 3000), seed="s3rm-a", base_seed="s3rm")
    second = make_image(layer_sizes=(2000, 1000), seed="s3rm-b", base_seed="s3rm")
    shared = first.layers[0]
    assert shared == second.layers[0]
    push_image(registry.url, "s3rm/a", "v1", first)
    push_image(registry.url, "s3rm/b", "v1", second)
    storage = seaweed.settings()
    cache = tmp_path / "cache"
    settings = mirror_on(storage, registry, cache)
    client = await aiohttp_client(create_app(settings))
    await pull_image(client, "s3rm/a", "v1", first)
    await pull_image(client, "s3rm/b", "v1", second)
    await client.close()  # lets the uploads under way finish
    config = storage_config(tmp_path / "mirror.toml", storage)
    everything = set(seaweed.keys(storage.prefix))
    assert image_keys(first) | image_keys(second) <= everything

    bad = await mirror_cli(
        "rm", "--config", config, "--cache-dir", cache, "docker.io/s3rm/a:v1", "docker.io/s3rm/c:v1"
    )
    assert bad.returncode == 1, bad.explain()
    assert bad.error_lines == ["mirror rm: docker.io/s3rm/c:v1 is not in the cache"]
    assert set(seaweed.keys(storage.prefix)) == everything

    result = await mirror_cli("rm", "--config", config, "--cache-dir", cache, "docker.io/s3rm/a:v1")
    assert result.returncode == 0, result.explain()
    lines = result.stdout.splitlines()
    assert lines[:2] == ["untagged docker.io/s3rm/a:v1", f"deleted {first.digest}"]
    own = [first.config, first.layers[1]]
    assert lines[-1].startswith("removed 1 tag and 1 image (1 manifest); 2 blobs"), lines
    left = set(seaweed.keys(storage.prefix))
    assert left == everything - {tag_key("s3rm/a", "v1"), manifest_key(first.digest)} - {
        blob_key(b.digest) for b in own
    }
    assert not cached_manifest(cache, first.digest).exists()
    assert not (cache / tag_key("s3rm/a", "v1")).exists()
    assert not any(cached_blob(cache, b.digest).exists() for b in own)
    assert cached_blob(cache, shared.digest).exists()
    assert cached_manifest(cache, second.digest).exists()

    result = await mirror_cli(
        "rm", "--config", config, "--cache-dir", cache, f"docker.io/s3rm/b@{second.digest}"
    )
    assert result.returncode == 0, result.explain()
    assert "removed 1 tag and 1 image (1 manifest); 3 blobs" in result.stdout, result.explain()
    assert not {k for k in seaweed.keys(storage.prefix) if not k.endswith("/_list")}
    assert not cached_blob(cache, shared.digest).exists()

    registry.clear_requests()
    client = await aiohttp_client(create_app(settings))
    await pull_image(client, "s3rm/a", "v1", first)
    assert ("GET", f"/v2/s3rm/a/blobs/{shared.digest}") in registry.requests()
    await client.close()


async def test_gc_removes_unreferenced_content_and_upload_debris_from_the_bucket(
    aiohttp_client: ClientFactory,
    seaweed: Seaweed,
    registry: Registry,
    seeded: Seeded,
    tmp_path: Path,
) -> None:
    """Within the protection window gc keeps what a pull by digest left; past it (here 0 s),
    it removes that manifest and its blobs, a blob nothing links to, a tag whose manifest is
    gone, an object left under uploads/ and an unfinished multipart upload, from the bucket
    and from the cache directory in front, and nothing a tag leads to; a dry run removes
    nothing."""
    storage = seaweed.settings()
    cache = tmp_path / "cache"
    client = await aiohttp_client(create_app(mirror_on(storage, registry, cache)))
    await pull_image(client, *seeded.schema2_ref, seeded.schema2)
    oci_repo, _ = seeded.oci_ref
    await pull_image(client, oci_repo, seeded.oci.digest, seeded.oci)
    await client.close()  # lets the uploads under way finish
    prefix = storage.prefix
    stray = b"nothing links to this"
    seaweed.client.put_object(
        Bucket=BUCKET, Key=f"{prefix}/{blob_key(sha256_digest(stray))}", Body=stray
    )
    record = {"digest": sha256_digest(b"gone"), "media_type": "x", "fetched_at": 1.0}
    dangling = tag_key("seed/gone", "v1")
    seaweed.client.put_object(
        Bucket=BUCKET, Key=f"{prefix}/{dangling}", Body=json.dumps(record).encode()
    )
    seaweed.client.put_object(Bucket=BUCKET, Key=f"{prefix}/uploads/abc", Body=b"x" * 5)
    seaweed.client.create_multipart_upload(Bucket=BUCKET, Key=f"{prefix}/uploads/parts")
    assert seaweed.multipart_uploads(prefix)
    config = storage_config(tmp_path / "mirror.toml", storage)
    before = set(seaweed.keys(prefix))
    args = ("gc", "--config", config, "--cache-dir", cache)

    recent = await mirror_cli(*args)
    assert recent.returncode == 0, recent.explain()
    assert set(seaweed.keys(prefix)) == before - {dangling}, recent.explain()

    dry = await mirror_cli(*args, "--protect-window", "0", "--dry-run")
    assert dry.returncode == 0, dry.explain()
    assert "unreferenced: would remove 1 manifest, 3 blobs" in dry.stdout, dry.explain()
    assert set(seaweed.keys(prefix)) == before - {dangling}
    assert seaweed.multipart_uploads(prefix)

    result = await mirror_cli(*args, "--protect-window", "0")
    assert result.returncode == 0, result.explain()
    lines = result.stdout.splitlines()
    assert lines[0] == f"bucket {storage.url}:"
    assert lines[1].startswith("unreferenced: removed 1 manifest, 3 blobs"), lines
    assert lines[2] == "uploads left behind: removed 1 object and 1 multipart upload (5 B)"
    assert f"cache directory {cache}, in front of the bucket:" in lines
    gone = image_keys(seeded.oci) | {blob_key(sha256_digest(stray)), "uploads/abc", dangling}
    assert set(seaweed.keys(prefix)) == before - gone
    assert image_keys(seeded.schema2) <= before - gone
    assert seaweed.multipart_uploads(prefix) == []
    assert not cached_manifest(cache, seeded.oci.digest).exists()
    assert not any(cached_blob(cache, b.digest).exists() for b in seeded.oci.blobs)
    assert all(cached_blob(cache, b.digest).exists() for b in seeded.schema2.blobs)


async def test_gc_evicts_a_bucket_past_its_cap(
    aiohttp_client: ClientFactory,
    seaweed: Seaweed,
    registry: Registry,
    seeded: Seeded,
    tmp_path: Path,
) -> None:
    """With `[storage] max_size` just under what the bucket's blobs and manifests take, gc
    evicts whole images until the bucket is within it (a dry run says so and removes
    nothing); each image is either all there or all gone."""
    storage = seaweed.settings()
    await fill(aiohttp_client, registry, seeded, storage, tmp_path / "cache")
    prefix = storage.prefix

    def stored() -> int:
        keys = seaweed.keys(prefix)
        return sum(size for key, size in keys.items() if key.startswith(("blobs/", "manifests/")))

    cap = stored() - 1
    config = storage_config(tmp_path / "mirror.toml", storage)
    config.write_text(config.read_text() + f"max_size = {cap}\n")
    args = ("gc", "--config", config, "--cache-dir", tmp_path / "cache", "--protect-window", "0")
    before = set(seaweed.keys(prefix))

    dry = await mirror_cli(*args, "--dry-run")
    assert dry.returncode == 0, dry.explain()
    assert "over the cap: would remove 1 image" in dry.stdout, dry.explain()
    assert set(seaweed.keys(prefix)) == before

    result = await mirror_cli(*args)
    assert result.returncode == 0, result.explain()
    assert "over the cap: removed " in result.stdout, result.explain()
    assert stored() <= cap
    keys = set(seaweed.keys(prefix))
    index_keys = {manifest_key(seeded.index.digest)} | image_keys(seeded.index.images[0])
    held = [keys >= image_keys(seeded.schema2), keys >= index_keys]
    gone = [not keys & image_keys(seeded.schema2), not keys & index_keys]
    assert [h or g for h, g in zip(held, gone, strict=True)] == [True, True]
    assert gone.count(True) >= 1


async def test_verify_removes_damaged_objects_and_the_next_pull_restores_them(
    aiohttp_client: ClientFactory,
    seaweed: Seaweed,
    registry: Registry,
    seeded: Seeded,
    tmp_path: Path,
) -> None:
    """A blob and a manifest with one byte changed in the bucket are found, reported and
    removed from it (exit 1), the rest kept; a pull through a replica with an empty cache
    directory fetches them from upstream and stores good copies; verify is then clean."""
    storage = seaweed.settings()
    await fill(aiohttp_client, registry, seeded, storage, tmp_path / "cache")
    prefix = storage.prefix
    layer = seeded.schema2.layers[1]
    damage(seaweed, f"{prefix}/{blob_key(layer.digest)}")
    damage(seaweed, f"{prefix}/{manifest_key(seeded.schema2.digest)}")
    before = set(seaweed.keys(prefix))
    config = storage_config(tmp_path / "mirror.toml", storage)
    args = ("verify", "--config", config, "--cache-dir", tmp_path / "elsewhere")

    result = await mirror_cli(*args)
    assert result.returncode == 1, result.explain()
    assert f"bad blob {layer.digest}: removed from {storage.url}" in result.stdout
    assert f"bad manifest {seeded.schema2.digest}: removed from {storage.url}" in result.stdout
    blobs = sum(1 for k in before if k.startswith("blobs/"))
    last = result.stdout.splitlines()[-1]
    assert last.startswith(f"bucket {storage.url}: verified {blobs} blobs and 3 manifests ")
    assert last.endswith(": 2 bad"), last
    gone = {blob_key(layer.digest), manifest_key(seeded.schema2.digest)}
    assert set(seaweed.keys(prefix)) == before - gone

    registry.clear_requests()
    settings = mirror_on(storage, registry, tmp_path / "replica")
    client = await aiohttp_client(create_app(settings))
    await pull_image(client, *seeded.schema2_ref, seeded.schema2)
    await client.close()  # lets the uploads under way finish
    repo, _ = seeded.schema2_ref
    assert ("GET", f"/v2/{repo}/blobs/{layer.digest}") in registry.requests()
    assert seaweed.read(f"{prefix}/{blob_key(layer.digest)}")[0] == layer.data

    clean = await mirror_cli(*args)
    assert clean.returncode == 0, clean.explain()
    assert clean.stdout.splitlines()[-1].endswith(": 0 bad"), clean.explain()


async def test_verify_checks_the_directory_in_front_too(
    aiohttp_client: ClientFactory,
    seaweed: Seaweed,
    registry: Registry,
    seeded: Seeded,
    tmp_path: Path,
) -> None:
    """On a host with a cache directory in front of the bucket, a damaged local copy is
    quarantined there (exit 1) while the bucket's good object stays."""
    storage = seaweed.settings()
    cache = tmp_path / "cache"
    await fill(aiohttp_client, registry, seeded, storage, cache)
    layer = seeded.schema2.layers[0]
    path = cached_blob(cache, layer.digest)
    data = bytearray(path.read_bytes())
    data[0] ^= 0x01
    path.write_bytes(bytes(data))
    config = storage_config(tmp_path / "mirror.toml", storage)

    result = await mirror_cli("verify", "--config", config, "--cache-dir", cache)
    assert result.returncode == 1, result.explain()
    lines = result.stdout.splitlines()
    assert lines[0] == f"cache directory {cache}, in front of the bucket:"
    assert f"bad blob {layer.digest}: moved to {cache / 'quarantine'}" in result.stdout
    assert lines[-1].endswith(": 0 bad"), lines
    assert seaweed.read(f"{storage.prefix}/{blob_key(layer.digest)}")[0] == layer.data


async def test_export_reads_what_the_host_lacks_from_the_bucket(
    aiohttp_client: ClientFactory,
    seaweed: Seaweed,
    registry: Registry,
    seeded: Seeded,
    tmp_path: Path,
) -> None:
    """A host that never served exports an image the bucket holds: every blob and manifest in
    the archive byte for byte, with no request upstream and no staging left behind; with a
    blob damaged in the bucket, export stops with one line and writes nothing."""
    storage = seaweed.settings()
    await fill(aiohttp_client, registry, seeded, storage, tmp_path / "cache")
    config = storage_config(tmp_path / "mirror.toml", storage)
    out = tmp_path / "out"
    out.mkdir()
    reference = "docker.io/seed/schema2:v1"
    args = ("export", "--config", config, "--upstream", registry.url)
    registry.clear_requests()

    result = await mirror_cli(
        *args, "--cache-dir", tmp_path / "one", "-o", out / "a.tar", reference
    )
    assert result.returncode == 0, result.explain()
    assert registry.requests() == []
    with tarfile.open(out / "a.tar") as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        for blob in seeded.schema2.blobs:
            f = tar.extractfile(members[f"blobs/{blob.digest.replace(':', '/')}"])
            assert f is not None and f.read() == blob.data
        index_file = tar.extractfile(members["index.json"])
        assert index_file is not None
        index = json.loads(index_file.read())
    assert index["manifests"][0]["digest"] == seeded.schema2.digest
    assert os.listdir(out) == ["a.tar"]

    layer = seeded.schema2.layers[0]
    damage(seaweed, f"{storage.prefix}/{blob_key(layer.digest)}")
    broken = await mirror_cli(
        *args, "--cache-dir", tmp_path / "two", "-o", out / "b.tar", reference
    )
    assert broken.returncode == 1, broken.explain()
    # Before it, the log's own line about the damaged object.
    assert broken.error_lines[-1] == (
        f"mirror export: the object store's copy of {layer.digest} is damaged; nothing was written"
    )
    assert "Traceback" not in broken.stderr
    assert os.listdir(out) == ["a.tar"]


@pytest.mark.parametrize("command", ["ls", "du", "rm", "gc", "verify", "export"])
async def test_a_store_that_is_down_stops_a_command_with_one_line(
    command: str, tmp_path: Path
) -> None:
    """With nothing listening at the store's endpoint, each command stops with one error line
    naming the store and a non-zero status, no traceback."""
    config = storage_config(tmp_path / "mirror.toml", unreachable())
    more = {
        "rm": ["docker.io/seed/schema2:v1"],
        "export": ["-o", str(tmp_path / "x.tar"), "docker.io/seed/schema2:v1"],
    }.get(command, [])
    result = await mirror_cli(command, "--config", config, "--cache-dir", tmp_path / "c", *more)
    assert result.returncode == 1, result.explain()
    (line,) = result.error_lines
    assert line.startswith(f"mirror {command}: the object store is unreachable"), result.explain()
    assert not (tmp_path / "x.tar").exists()


async def test_a_store_that_refuses_stops_a_command_with_one_line(
    seaweed: Seaweed, tmp_path: Path
) -> None:
    """A wrong secret and a missing bucket each give one line naming the store's answer and a
    non-zero status."""
    wrong = S3Settings(
        bucket=BUCKET,
        prefix="p",
        endpoint=seaweed.endpoint,
        access_key_id=ACCESS_KEY,
        secret_access_key="wrong",
    )
    missing = seaweed.settings()
    missing = S3Settings(
        bucket="no-such-bucket",
        prefix="p",
        endpoint=seaweed.endpoint,
        access_key_id=missing.access_key_id,
        secret_access_key=missing.secret_access_key,
    )
    for storage, answer in ((wrong, "SignatureDoesNotMatch"), (missing, "NoSuchBucket")):
        config = storage_config(tmp_path / "mirror.toml", storage)
        for command in ("ls", "gc"):
            result = await mirror_cli(command, "--config", config, "--cache-dir", tmp_path / "c")
            assert result.returncode == 1, result.explain()
            (line,) = result.error_lines
            assert line.startswith(f"mirror {command}: the object store answered {answer} "), (
                result.explain()
            )


@pytest.mark.parametrize("command", ["ls", "du", "serve"])
async def test_an_sdk_setting_that_stops_the_client_is_one_line(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An AWS_PROFILE that names no profile (with no keys given, the SDK reads it) stops a
    command, and the server before it serves, with one line naming the failure."""
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    args = ["--storage", "s3://bucket-x/p", "--cache-dir", str(tmp_path / "c")]
    if command == "serve":
        args += ["--listen", f"127.0.0.1:{free_port()}"]
    result = await mirror_cli(command, *args, within=60.0)
    assert result.returncode != 0, result.explain()
    (line,) = result.error_lines
    assert line.endswith("the object store is unreachable: ProfileNotFound"), result.explain()
