"""What each mirrored repository is known to hold: shared through its file by every process on
the cache directory, and safe against lines another process is still writing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mirror.oci.digest import Digest
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


def _digest(n: int) -> Digest:
    return Digest.parse("sha256:" + hashlib.sha256(str(n).encode()).hexdigest())
