"""A fill does not read the upstream's body until the request that asked for the blob has had
its turn to answer with headers: reading on meanwhile delays that client's first byte."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mirror.oci.digest import Digest
from mirror.pullthrough.fills import BlobFill
from mirror.pullthrough.running_fills import Fills
from mirror.pullthrough.slots import FillSlots
from mirror.storage.blobs import BlobStore
from mirror.storage.layout import CacheLayout

BODY = b"layer" * 1000
DIGEST = Digest.parse("sha256:" + hashlib.sha256(BODY).hexdigest())


class Connection:
    """The upstream connection's flow control, as aiohttp's response protocol offers it."""

    def __init__(self, connected: bool = True) -> None:
        self.connected = connected
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")


class Source:
    """An upstream answering with BODY; records what the connection's state was each time the
    fill took in a part of the body."""

    name = "upstream"
    relayed = False

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.stats = SimpleNamespace(received=lambda _count: None)
        self.read_after: list[list[str]] = []

    @contextlib.asynccontextmanager
    async def open_blob(self, repo: str, digest: Digest, offset: int = 0) -> AsyncIterator[Any]:
        async def chunks() -> AsyncIterator[tuple[bytes, bool]]:
            for start in range(0, len(BODY), 1000):
                self.read_after.append(list(self.connection.calls))
                yield BODY[start : start + 1000], False

        content = SimpleNamespace(iter_chunks=chunks)
        yield SimpleNamespace(
            status=200,
            content=content,
            content_length=len(BODY),
            connection=SimpleNamespace(protocol=self.connection),
        )


def _fills(tmp_path: Path) -> Fills:
    layout = CacheLayout(tmp_path / "cache")
    layout.prepare()
    return Fills(BlobStore(layout), layout.spool, FillSlots(4, lambda _name: 4, 5.0))


async def _read_all(fill: BlobFill) -> bytes:
    body = b""
    async for file, offset, count in fill.segments():
        body += os.pread(file.fileno(), count, offset)
    return body


async def test_the_body_waits_for_the_first_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Long enough that only a reader can end the wait, however slow the machine.
    monkeypatch.setattr("mirror.pullthrough.fills.FIRST_READER_WAIT", 60.0)
    connection = Connection()
    source = Source(connection)
    fill = _fills(tmp_path).start(source, "lib/app", DIGEST)  # type: ignore[arg-type]
    await fill.started()
    # Answered, announced, and waiting for its reader: the connection is not read meanwhile.
    for _ in range(10):
        await asyncio.sleep(0)
    assert connection.calls == ["pause"]
    assert source.read_after == []
    assert await _read_all(fill) == BODY
    # Every part of the body was taken in after reading had resumed.
    assert source.read_after and all(c == ["pause", "resume"] for c in source.read_after)


async def test_a_fill_nobody_reads_resumes_after_the_wait(tmp_path: Path) -> None:
    connection = Connection()
    source = Source(connection)
    fill = _fills(tmp_path).start(source, "lib/app", DIGEST)  # type: ignore[arg-type]
    await fill.started()
    await asyncio.wait_for(fill.wait_done(), timeout=5)
    assert connection.calls == ["pause", "resume"]
    assert source.read_after[0] == ["pause", "resume"]


async def test_a_lost_connection_is_neither_paused_nor_resumed(tmp_path: Path) -> None:
    connection = Connection(connected=False)
    source = Source(connection)
    fill = _fills(tmp_path).start(source, "lib/app", DIGEST)  # type: ignore[arg-type]
    await fill.started()
    assert await _read_all(fill) == BODY
    assert connection.calls == []
