"""What each mirrored repository is known to hold: shared through its file by every process on
the cache directory, and safe against lines another process is still writing."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from mirror.cache.links import Links, links
from mirror.oci.digest import Digest
from mirror.oci.mediatypes import OCI_INDEX, OCI_MANIFEST
from mirror.pullthrough import holdings
from mirror.pullthrough.holdings import RepoHoldings
from mirror.storage.layout import CacheLayout
from mirror.storage.manifests import ManifestStore
from mirror.storage.tags import TagStore

ONE = Digest.parse("sha256:" + "1" * 64)
TWO = Digest.parse("sha256:" + "2" * 64)


def _holdings(root: Path) -> RepoHoldings:
    layout = CacheLayout(root)
    layout.prepare()
    return RepoHoldings(layout, TagStore(layout), ManifestStore(layout))


async def test_what_one_process_records_another_knows(tmp_path: Path) -> None:
    """Two processes' holdings on one directory: each sees the other's record; repositories
    and registries stay apart."""
    first, second = _holdings(tmp_path), _holdings(tmp_path)
    assert not await second.holds("docker.io", "team/app", ONE)
    await first.hold("docker.io", "team/app", (ONE,))
    assert await second.holds("docker.io", "team/app", ONE)
    assert not await second.holds("docker.io", "team/other", ONE)
    assert not await second.holds("ghcr.io", "team/app", ONE)


async def test_a_line_half_written_or_not_a_digest_is_never_taken(tmp_path: Path) -> None:
    """Only whole lines count, and only digests: a half-written one is read once finished."""
    holdings = _holdings(tmp_path)
    await holdings.hold("docker.io", "team/app", (ONE,))
    path = tmp_path / "tags/docker.io/team/app/_held"
    _append(path, b"not-hex\n" + TWO.hex[:40].encode())
    reader = _holdings(tmp_path)
    assert await reader.holds("docker.io", "team/app", ONE)
    assert not await reader.holds("docker.io", "team/app", TWO)
    _append(path, TWO.hex[40:].encode() + b"\n")
    assert await reader.holds("docker.io", "team/app", TWO)


async def test_a_manifest_is_held_and_what_it_names_only_remembered(tmp_path: Path) -> None:
    """A manifest answered through a repository is held; a layer it names is not (its upstream
    may not hold it: a foreign layer), only remembered for when the upstream cannot be asked."""
    holdings = _holdings(tmp_path)
    manifest = json.dumps({"schemaVersion": 2, "layers": [{"digest": str(TWO)}]}).encode()
    await holdings.hold_manifest("docker.io", "team/app", ONE, manifest)
    assert await holdings.holds("docker.io", "team/app", ONE)
    assert not await holdings.holds("docker.io", "team/app", TWO)
    assert await holdings.names("docker.io", "team/app", TWO)
    assert not await _holdings(tmp_path).holds("docker.io", "team/app", TWO)


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


async def test_the_record_keeps_only_the_newest_digests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upstream that confirms any digest cannot grow the record, or the memory of a process
    reading it, past twice MAX_HELD: the oldest are forgotten, the newest kept, in every
    process on the directory."""
    monkeypatch.setattr(holdings, "MAX_HELD", 8)
    writer, reader = _holdings(tmp_path), _holdings(tmp_path)
    confirmed = [_digest(n) for n in range(40)]
    await writer.hold("docker.io", "team/app", confirmed[:1])
    assert await reader.holds("docker.io", "team/app", confirmed[0])
    for digest in confirmed[1:]:
        await writer.hold("docker.io", "team/app", (digest,))
    record = (tmp_path / "tags/docker.io/team/app/_held").read_bytes().splitlines()
    assert 8 <= len([line for line in record if not line.startswith(b"#")]) <= 16
    await reader.hold("docker.io", "team/app", (_digest(40),))
    for process in (writer, reader, _holdings(tmp_path)):
        assert not await process.holds("docker.io", "team/app", confirmed[0])
        assert await process.holds("docker.io", "team/app", confirmed[-1])
        assert await process.holds("docker.io", "team/app", _digest(40))


async def test_tags_unchanged_since_their_walk_are_not_walked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests for digests no tag leads to read the repository's manifests once, not again
    while its tags stay as they are; a tag another process adds is walked, and held."""
    monkeypatch.setattr(holdings, "WALK_EVERY", 0.0)
    reads = _counted_reads(monkeypatch)
    repo = _holdings(tmp_path)
    first = await _tag(tmp_path, "v1", _manifest(1))
    _settle(tmp_path)
    for n in range(5):
        assert not await repo.holds("docker.io", "team/app", _digest(100 + n))
    assert await repo.holds("docker.io", "team/app", first)
    assert len(reads) == 1
    second = await _tag(tmp_path, "v2", _manifest(2))
    assert await repo.holds("docker.io", "team/app", second)


async def test_a_tag_added_within_the_timestamp_of_a_walk_is_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tags directory changed as late as a walk may change again without its time moving
    (filesystems keep it coarsely): it is walked again until its time has settled."""
    monkeypatch.setattr(holdings, "WALK_EVERY", 0.0)
    repo = _holdings(tmp_path)
    await _tag(tmp_path, "v1", _manifest(1))
    unsettled = _settle(tmp_path, time.time_ns() + 3_600_000_000_000)
    assert not await repo.holds("docker.io", "team/app", _digest(100))
    second = await _tag(tmp_path, "v2", _manifest(2))
    _settle(tmp_path, unsettled)
    assert await repo.holds("docker.io", "team/app", second)


async def test_an_index_child_cached_after_its_tag_stands_in_for_the_upstream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prefetch records an index's tag before it fetches the index's children: once a child
    is cached, what it names is known, though no tag changed."""
    monkeypatch.setattr(holdings, "WALK_EVERY", 0.0)
    repo = _holdings(tmp_path)
    child = _manifest(1)
    entry = {"mediaType": OCI_MANIFEST, "digest": str(Digest.of(child)), "size": len(child)}
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]})
    await _tag(tmp_path, "v1", index.encode(), OCI_INDEX)
    _settle(tmp_path)
    assert not await repo.names("docker.io", "team/app", _digest(1))
    await ManifestStore(CacheLayout(tmp_path)).put(Digest.of(child), OCI_MANIFEST, child)
    assert await repo.names("docker.io", "team/app", _digest(1))


async def _tag(root: Path, tag: str, manifest: bytes, media_type: str = OCI_MANIFEST) -> Digest:
    """Cache `manifest` and tag it in team/app, as any process on the directory may."""
    layout, digest = CacheLayout(root), Digest.of(manifest)
    await ManifestStore(layout).put(digest, media_type, manifest)
    await TagStore(layout).put("docker.io", "team/app", tag, digest, media_type)
    return digest


def _manifest(n: int) -> bytes:
    """An image manifest whose one layer is `_digest(n)`."""
    layers = [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": str(_digest(n))}]
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": layers}).encode()


def _settle(root: Path, ns: int | None = None) -> int:
    """Date team/app's tags directory at `ns` (an hour ago by default); that time."""
    ns = time.time_ns() - 3_600_000_000_000 if ns is None else ns
    os.utime(root / "tags/docker.io/team/app/_tags", ns=(ns, ns))
    return ns


def _counted_reads(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every manifest the holdings read, as it is read."""
    reads: list[bytes] = []

    def counted(data: bytes) -> Links:
        reads.append(data)
        return links(data)

    monkeypatch.setattr(holdings, "links", counted)
    return reads


def _digest(n: int) -> Digest:
    return Digest.parse("sha256:" + hashlib.sha256(str(n).encode()).hexdigest())
