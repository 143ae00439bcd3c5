"""`mirror export` and `mirror import`: images carried across an air gap in an OCI image layout
archive, served byte for byte on the far side with no upstream at all."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import os
import tarfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from mirror.commands.progress import size
from mirror.config import Settings, UpstreamSettings
from mirror.images.bundle import MAX_MEMBERS
from mirror.storage.files import last_used
from tests.conftest import MirrorFromSettings, Seeded
from tests.support.cache import cache_usage, cached_tags
from tests.support.cli import mirror_cli, upstream_config
from tests.support.images import OCI_MANIFEST, Image
from tests.support.oci import ACCEPT_ALL, cached_blob, cached_manifest
from tests.support.processes import free_port
from tests.support.registry import Registry

Client = TestClient[Any, Any]
NOWHERE = f"http://127.0.0.1:{free_port()}"  # nothing listens there: no upstream at all


def name(repo_tag: tuple[str, str]) -> str:
    """The full reference export writes for a seeded image (seed/x is a Docker Hub name)."""
    return f"docker.io/{repo_tag[0]}:{repo_tag[1]}"


def offline_settings(cache_dir: Path, *, offline: bool = True) -> Settings:
    upstream = UpstreamSettings(default=True, url=NOWHERE, offline=offline, connect_timeout=2.0)
    return Settings(cache_dir=cache_dir, upstreams=(upstream,), tag_ttl=0.0)


@pytest.fixture
def export_bundle(
    registry: Registry, seeded: Seeded, tmp_path: Path
) -> Callable[..., Awaitable[Path]]:
    """Prefetch the seeded images into a cache of their own (on the run's store) and export
    `refs` from it."""

    async def make(*refs: str, bundle: str = "bundle.tar") -> Path:
        cache = tmp_path / "source-cache"
        source = ("--upstream", registry.url, "--cache-dir", cache)
        prefetched = await mirror_cli("prefetch", *source, *refs)
        assert prefetched.returncode == 0, prefetched.explain()
        output = tmp_path / bundle
        exported = await mirror_cli("export", *source, "-o", output, *refs)
        assert exported.returncode == 0, exported.explain()
        assert exported.stdout.startswith(f"exported {len(refs)} images to {output}")
        return output

    return make


def members(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isreg()
        }


def blob(digest: str) -> str:
    return "blobs/" + digest.replace(":", "/")


async def assert_serves(client: Client, repo: str, reference: str, data: bytes, kind: str) -> None:
    response = await client.get(f"/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT_ALL})
    assert response.status == 200, await response.text()
    assert await response.read() == data
    assert response.content_type == kind


async def assert_serves_image(client: Client, repo: str, image: Image) -> None:
    await assert_serves(client, repo, image.digest, image.manifest, image.media_type)
    for layer in image.blobs:
        response = await client.get(f"/v2/{repo}/blobs/{layer.digest}")
        assert await response.read() == layer.data


async def test_imported_images_are_served_byte_for_byte_with_no_upstream(
    export_bundle: Callable[..., Awaitable[Path]],
    mirror_from: MirrorFromSettings,
    seeded: Seeded,
    tmp_path: Path,
) -> None:
    """Export on one mirror, import beside a running mirror with no upstream: every tag,
    digest, platform and blob is served, online (stale) and --offline."""
    by_digest = f"docker.io/{seeded.oci_ref[0]}@{seeded.oci.digest}"
    refs = (name(seeded.schema2_ref), name(seeded.oci_ref), name(seeded.index_ref), by_digest)
    bundle = await export_bundle(*refs)
    cache = tmp_path / "far-cache"
    serving = await mirror_from(offline_settings(cache))
    tag_path = f"/v2/{seeded.oci_ref[0]}/manifests/{seeded.oci_ref[1]}"
    assert (await serving.get(tag_path, headers={"Accept": ACCEPT_ALL})).status == 404

    result = await mirror_cli("import", "--upstream", NOWHERE, "--cache-dir", cache, bundle)
    assert result.returncode == 0, result.explain()
    assert result.stdout.splitlines()[:4] == [f"imported {ref}" for ref in refs]
    assert result.stdout.splitlines()[4].startswith("imported 4 images from ")

    for offline in (True, False):
        client = serving if offline else await mirror_from(offline_settings(cache, offline=False))
        for ref, image in ((seeded.schema2_ref, seeded.schema2), (seeded.oci_ref, seeded.oci)):
            await assert_serves(client, ref[0], ref[1], image.manifest, image.media_type)
            await assert_serves_image(client, ref[0], image)
        repo, tag = seeded.index_ref
        await assert_serves(client, repo, tag, seeded.index.manifest, seeded.index.media_type)
        for child in seeded.index.images:
            await assert_serves_image(client, repo, child)

    again = await mirror_cli("import", "--upstream", NOWHERE, "--cache-dir", cache, bundle)
    assert again.returncode == 0, again.explain()
    assert "0 blobs, 0 bytes added" in again.stdout


async def test_an_image_imported_again_counts_as_just_used(
    export_bundle: Callable[..., Awaitable[Path]], seeded: Seeded, tmp_path: Path
) -> None:
    """Files already in the cache, unused for ages, are as recent as a pull's once their image
    is imported again: eviction does not take what was just carried in first."""
    bundle = await export_bundle(name(seeded.schema2_ref))
    cache = tmp_path / "far-cache"
    args = ("import", "--upstream", NOWHERE, "--cache-dir", cache, bundle)
    assert (await mirror_cli(*args)).returncode == 0
    kept = [
        *(cached_blob(cache, b.digest) for b in seeded.schema2.blobs),
        cached_manifest(cache, seeded.schema2.digest),
    ]
    for path in kept:
        os.utime(path, ns=(0, 0))
    started = time.time()
    result = await mirror_cli(*args)
    assert result.returncode == 0, result.explain()
    assert "0 blobs, 0 bytes added" in result.stdout
    assert all(last_used(path.stat()) >= started - 1 for path in kept)


async def test_the_bundle_is_an_oci_image_layout_with_full_names(
    export_bundle: Callable[..., Awaitable[Path]], seeded: Seeded, tmp_path: Path
) -> None:
    """oci-layout, index.json with both name annotations, every blob by digest, indexes whole;
    written atomically and the same bytes every time."""
    bundle = await export_bundle(name(seeded.index_ref), name(seeded.schema2_ref))
    files = members(bundle)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"])
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    entries = [
        (e["digest"], e["mediaType"], e["size"], e["annotations"]) for e in index["manifests"]
    ]
    assert entries == [
        (
            image.digest,
            image.media_type,
            len(image.manifest),
            {
                "org.opencontainers.image.ref.name": ref,
                "io.containerd.image.name": ref,
            },
        )
        for ref, image in (
            (name(seeded.index_ref), seeded.index),
            (name(seeded.schema2_ref), seeded.schema2),
        )
    ]
    for path, data in files.items():
        if path.startswith("blobs/"):
            assert path == "blobs/sha256/" + hashlib.sha256(data).hexdigest()
    assert files[blob(seeded.index.digest)] == seeded.index.manifest
    for image in (*seeded.index.images, seeded.schema2):
        assert files[blob(image.digest)] == image.manifest
        for layer in image.blobs:
            assert files[blob(layer.digest)] == layer.data
    first = bundle.read_bytes()
    second = await export_bundle(
        name(seeded.index_ref), name(seeded.schema2_ref), bundle="again.tar"
    )
    assert second.read_bytes() == first
    assert [p.name for p in files_under(tmp_path) if p.name.endswith(".part")] == []


async def test_export_refuses_what_is_not_cached_and_writes_nothing(
    registry: Registry, seeded: Seeded, tmp_path: Path
) -> None:
    """An uncached tag and an index cached for one platform are error lines, no bundle is
    written; --pull fetches what is missing first."""
    cache = tmp_path / "cache"
    source = ("--upstream", registry.url, "--cache-dir", cache)
    output = tmp_path / "bundle.tar"
    partial = await mirror_cli(
        "prefetch", *source, "--platform", "linux/amd64", name(seeded.index_ref)
    )
    assert partial.returncode == 0, partial.explain()
    result = await mirror_cli(
        "export", *source, "-o", output, name(seeded.oci_ref), name(seeded.index_ref)
    )
    assert result.returncode == 1
    assert result.error_lines == [
        f"mirror export: {name(seeded.oci_ref)}: the tag is not in the cache",
        f"mirror export: {name(seeded.index_ref)}: the index's linux/arm64/v8 manifest "
        f"{seeded.index.images[1].digest} is not in the cache (prefetch it with --platform all)",
    ], result.explain()
    assert [p for p in files_under(tmp_path) if p.parent == tmp_path] == []

    pulled = await mirror_cli(
        "export", *source, "--pull", "-o", output, name(seeded.oci_ref), name(seeded.index_ref)
    )
    assert pulled.returncode == 0, pulled.explain()
    assert blob(seeded.index.images[1].digest) in members(output)


def rewrite(bundle: Path, out: Path, changes: dict[str, bytes | None]) -> Path:
    """A copy of `bundle` with members replaced or added (bytes) or left out (None)."""
    with tarfile.open(bundle) as source, tarfile.open(out, "w") as target:
        for member in source.getmembers():
            data = source.extractfile(member).read() if member.isreg() else b""  # type: ignore[union-attr]
            if member.name in changes:
                replacement = changes[member.name]
                if replacement is None:
                    continue
                data = replacement
                member.size = len(data)
            target.addfile(member, io.BytesIO(data) if member.isreg() else None)
        for name, data in changes.items():
            if data is not None and name not in source.getnames():
                added = tarfile.TarInfo(name)
                added.size = len(data)
                target.addfile(added, io.BytesIO(data))
    return out


def retyped(files: dict[str, bytes], own: str | None, entry: str) -> dict[str, bytes | None]:
    """Changes that put in the image's place a copy of its manifest whose own mediaType is
    `own` (None: it has none), named in index.json with the type `entry`."""
    manifest = json.loads(files[blob(json.loads(files["index.json"])["manifests"][0]["digest"])])
    manifest.pop("mediaType")
    if own is not None:
        manifest["mediaType"] = own
    data = json.dumps(manifest).encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    index = json.loads(files["index.json"])
    index["manifests"][0].update(mediaType=entry, digest=digest, size=len(data))
    return {blob(digest): data, "index.json": json.dumps(index).encode()}


def crowded(bundle: Path, out: Path, extra: int) -> Path:
    """The bundle gzip'd, after `extra` empty members (a few bytes of gzip each)."""
    header = tarfile.TarInfo("empty").tobuf(tarfile.PAX_FORMAT)
    out.write_bytes(gzip.compress(header * extra + bundle.read_bytes(), compresslevel=1))
    return out


def files_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


def flipped(data: bytes) -> bytes:
    return bytes([data[0] ^ 1]) + data[1:]


def renamed(index: bytes, new_name: str) -> bytes:
    document = json.loads(index)
    for key in ("org.opencontainers.image.ref.name", "io.containerd.image.name"):
        document["manifests"][0]["annotations"][key] = new_name
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    "case",
    [
        "not a tar",
        "no oci-layout",
        "no index.json",
        "truncated",
        "blob does not match its digest",
        "manifest names a missing blob",
        "manifest does not match its digest",
        "name does not parse",
        "registry not mirrored",
        "index entry type has a line break",
        "manifest type has a line break",
        "manifest type is not a manifest type",
        "manifest type from index.json is not one",
        "too many members",
    ],
)
async def test_a_bad_bundle_is_one_line_and_imports_nothing(
    export_bundle: Callable[..., Awaitable[Path]],
    mirror_from: MirrorFromSettings,
    seeded: Seeded,
    tmp_path: Path,
    case: str,
) -> None:
    """Each kind of bad input: exit 1, one line naming the problem, no tag and no manifest in
    the cache, and the mirror still answers 404 for the image."""
    good = await export_bundle(name(seeded.schema2_ref))
    files = members(good)
    layer = seeded.schema2.layers[1]
    bad = tmp_path / "bad.tar"
    if case == "not a tar":
        bad.write_bytes(b"this is not an archive\n" * 100)
    elif case == "no oci-layout":
        rewrite(good, bad, {"oci-layout": None})
    elif case == "no index.json":
        rewrite(good, bad, {"index.json": None})
    elif case == "truncated":
        with tarfile.open(good) as tar:
            cut = tar.getmember(blob(layer.digest)).offset_data + layer.size // 2
        bad.write_bytes(good.read_bytes()[:cut])
    elif case == "blob does not match its digest":
        rewrite(good, bad, {blob(layer.digest): flipped(layer.data)})
    elif case == "manifest names a missing blob":
        rewrite(good, bad, {blob(layer.digest): None})
    elif case == "manifest does not match its digest":
        manifest = blob(seeded.schema2.digest)
        rewrite(good, bad, {manifest: files[manifest].replace(b"   ", b"  ")})
    elif case == "name does not parse":
        rewrite(good, bad, {"index.json": renamed(files["index.json"], "docker.io/Seed/X:v1")})
    elif case == "index entry type has a line break":
        rewrite(good, bad, retyped(files, None, OCI_MANIFEST + "\r\nX-Injected: 1"))
    elif case == "manifest type has a line break":
        rewrite(good, bad, retyped(files, OCI_MANIFEST + "\r\nX-Injected: 1", OCI_MANIFEST))
    elif case == "manifest type is not a manifest type":
        rewrite(good, bad, retyped(files, "text/html", OCI_MANIFEST))
    elif case == "manifest type from index.json is not one":
        rewrite(good, bad, retyped(files, None, "text/html"))
    elif case == "too many members":
        bad = crowded(good, tmp_path / "bad.tar.gz", MAX_MEMBERS)
    else:
        rewrite(good, bad, {"index.json": renamed(files["index.json"], "ghcr.io/seed/x:v1")})
    cache = tmp_path / "far-cache"
    config = upstream_config(tmp_path / "mirror.toml", NOWHERE)

    result = await mirror_cli("import", "--config", config, "--cache-dir", cache, bad)
    assert result.returncode == 1, result.explain()
    assert len(result.error_lines) == 1, result.explain()
    line = result.error_lines[0]
    assert line.startswith(f"mirror import: {bad}: ") and line.endswith("no image was imported")
    expected = {
        "not a tar": "not a tar archive",
        "no oci-layout": "no oci-layout file",
        "no index.json": "no index.json",
        "truncated": "truncated",
        "blob does not match its digest": "the bytes do not match the digest",
        "manifest names a missing blob": f"names blob {layer.digest}, which the bundle lacks",
        "manifest does not match its digest": "the bytes do not match the digest",
        "name does not parse": "must be lowercase",
        "registry not mirrored": "ghcr.io",
        "index entry type has a line break": "manifests[0]: 'application/vnd.oci.image.manifest",
        "manifest type has a line break": "is not a media type (RFC 6838)",
        "manifest type is not a manifest type": "'text/html' is not a manifest type",
        "manifest type from index.json is not one": "'text/html' is not a manifest type",
        "too many members": f"more than {MAX_MEMBERS} members",
    }[case]
    assert expected in line, line
    assert files_under(cache / "tags") == files_under(cache / "manifests") == []
    assert files_under(cache / "spool") == []
    client = await mirror_from(offline_settings(cache))
    repo, tag = seeded.schema2_ref
    for reference in (tag, seeded.schema2.digest):
        response = await client.get(f"/v2/{repo}/manifests/{reference}")
        assert response.status == 404


async def skopeo(*args: str | Path) -> tuple[int, bytes, str]:
    """Run skopeo (no registries configuration, any signature accepted)."""
    process = await asyncio.create_subprocess_exec(
        "skopeo", "--insecure-policy", *(str(a) for a in args),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "CONTAINERS_REGISTRIES_CONF": "/dev/null"},
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out, err.decode(errors="replace")


async def test_skopeo_reads_images_from_the_bundle_by_their_full_names(
    export_bundle: Callable[..., Awaitable[Path]], seeded: Seeded, tmp_path: Path
) -> None:
    """`skopeo inspect` and `skopeo copy oci-archive:BUNDLE:docker.io/...` find the images and
    see the very bytes the upstream served."""
    image_name, index_name = name(seeded.oci_ref), name(seeded.index_ref)
    bundle = await export_bundle(image_name, index_name)
    status, out, err = await skopeo("inspect", f"oci-archive:{bundle}:{image_name}")
    assert status == 0, err
    inspected = json.loads(out)
    assert inspected["Digest"] == seeded.oci.digest
    assert inspected["Layers"] == [layer.digest for layer in seeded.oci.layers]
    for ref, manifest in ((image_name, seeded.oci.manifest), (index_name, seeded.index.manifest)):
        status, out, err = await skopeo("inspect", "--raw", f"oci-archive:{bundle}:{ref}")
        assert status == 0, err
        assert out == manifest

    copied = tmp_path / "copied"
    status, _, err = await skopeo(
        "copy", "--all", f"oci-archive:{bundle}:{index_name}", f"oci:{copied}"
    )
    assert status == 0, err
    index = json.loads((copied / "index.json").read_text())
    assert [entry["digest"] for entry in index["manifests"]] == [seeded.index.digest]
    for image in seeded.index.images:
        assert (copied / blob(image.digest)).read_bytes() == image.manifest
        for layer in image.blobs:
            assert (copied / blob(layer.digest)).read_bytes() == layer.data


async def test_a_compressed_bundle_imports_too(
    export_bundle: Callable[..., Awaitable[Path]],
    mirror_from: MirrorFromSettings,
    seeded: Seeded,
    tmp_path: Path,
) -> None:
    """A gzip'd archive (as bundles are often carried) imports like the plain one."""
    bundle = await export_bundle(name(seeded.oci_ref))
    compressed = tmp_path / "bundle.tar.gz"
    compressed.write_bytes(gzip.compress(bundle.read_bytes()))
    cache = tmp_path / "far-cache"
    result = await mirror_cli("import", "--upstream", NOWHERE, "--cache-dir", cache, compressed)
    assert result.returncode == 0, result.explain()
    client = await mirror_from(offline_settings(cache))
    await assert_serves_image(client, seeded.oci_ref[0], seeded.oci)


CAPPED = pytest.mark.directory_only(
    reason="a bucket behind the cache keeps what the cache directory's own cap evicts"
)


async def imported_size(bundle: Path, tmp_path: Path) -> int:
    """What the bundle's images take in a cache of their own."""
    alone = tmp_path / "alone"
    result = await mirror_cli("import", "--upstream", NOWHERE, "--cache-dir", alone, bundle)
    assert result.returncode == 0, result.explain()
    return cache_usage(alone)


async def cache_with_old_image(export_bundle: Callable[..., Awaitable[Path]], seeded: Seeded,
                               cache: Path) -> int:  # fmt: skip
    """Import the OCI image into `cache`, unused since long ago; returns what it takes."""
    old = await export_bundle(name(seeded.oci_ref), bundle="old.tar")
    result = await mirror_cli("import", "--upstream", NOWHERE, "--cache-dir", cache, old)
    assert result.returncode == 0, result.explain()
    for path in files_under(cache / "blobs") + files_under(cache / "manifests"):
        os.utime(path, ns=(0, 0))
    return cache_usage(cache)


@CAPPED
async def test_an_import_past_the_cap_evicts_the_least_recently_used_first(
    export_bundle: Callable[..., Awaitable[Path]], seeded: Seeded, tmp_path: Path
) -> None:
    """An import that takes the cache past its cap makes room as a server does: the image
    unused longest goes, what the bundle brings stays, and the cache ends within its cap."""
    cache = tmp_path / "far-cache"
    old_size = await cache_with_old_image(export_bundle, seeded, cache)
    new = await export_bundle(name(seeded.schema2_ref), bundle="new.tar")
    cap = await imported_size(new, tmp_path) + old_size // 2

    result = await mirror_cli(
        "import", "--upstream", NOWHERE, "--cache-dir", cache, "--max-size", str(cap), new
    )
    assert result.returncode == 0, result.explain()
    assert result.stdout.splitlines()[-1] == (
        f"evicted {size(old_size)} (1 image), the least recently used, to keep the cache within "
        "its cap"
    ), result.explain()
    assert result.stderr == "", result.explain()
    assert cache_usage(cache) <= cap
    assert cached_tags(cache) == {"seed/schema2:v1"}
    assert not cached_manifest(cache, seeded.oci.digest).exists()
    assert not any(cached_blob(cache, b.digest).exists() for b in seeded.oci.blobs)
    assert cached_manifest(cache, seeded.schema2.digest).exists()
    assert all(cached_blob(cache, b.digest).exists() for b in seeded.schema2.blobs)


@CAPPED
async def test_an_import_keeps_all_it_brings_and_says_when_the_cache_stays_past_its_cap(
    export_bundle: Callable[..., Awaitable[Path]], seeded: Seeded, tmp_path: Path
) -> None:
    """With nothing else to evict (the rest is pinned) and no protection window, the import
    still evicts none of its own content: it completes whole, and says the cache is past its
    cap."""
    cache = tmp_path / "far-cache"
    old_size = await cache_with_old_image(export_bundle, seeded, cache)
    new = await export_bundle(name(seeded.schema2_ref), bundle="new.tar")
    cap = await imported_size(new, tmp_path) + old_size // 2
    config = tmp_path / "pins.toml"
    config.write_text(f'pin = ["{name(seeded.oci_ref)}"]\n')

    result = await mirror_cli(
        "import", "--config", config, "--upstream", NOWHERE, "--cache-dir", cache,
        "--max-size", str(cap), "--protect-window", "0", new,
    )  # fmt: skip
    assert result.returncode == 0, result.explain()
    assert result.error_lines == [
        f"mirror import: the cache is {size(cache_usage(cache) - cap)} over its cap "
        "(--max-size): what else it holds is pinned, in use, or used within --protect-window"
    ], result.explain()
    assert cached_tags(cache) == {"seed/oci:v1", "seed/schema2:v1"}
    for image in (seeded.oci, seeded.schema2):
        assert cached_manifest(cache, image.digest).exists()
        assert all(cached_blob(cache, b.digest).exists() for b in image.blobs)


@CAPPED
async def test_a_bundle_larger_than_the_whole_cap_is_refused_before_anything_is_copied(
    export_bundle: Callable[..., Awaitable[Path]], seeded: Seeded, tmp_path: Path
) -> None:
    """No eviction could make room for it: one line, exit 1, nothing in the cache."""
    bundle = await export_bundle(name(seeded.schema2_ref))
    content = sum(b.size for b in seeded.schema2.blobs) + len(seeded.schema2.manifest)
    cache = tmp_path / "far-cache"
    result = await mirror_cli(
        "import", "--upstream", NOWHERE, "--cache-dir", cache, "--max-size", str(content - 1),
        bundle,
    )  # fmt: skip
    assert result.returncode == 1, result.explain()
    assert result.error_lines == [
        f"mirror import: {bundle}: its images take {content} bytes, more than the cache may "
        f"hold (--max-size, {content - 1} bytes); no image was imported"
    ], result.explain()
    assert files_under(cache / "blobs") == files_under(cache / "manifests") == []
