"""A fill's writing thread: every byte in order, a bounded queue, a disk error reported."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import threading
from pathlib import Path

import pytest

from mirror.pullthrough.spool_writer import QUEUED_MAX, SpoolWriter


async def test_chunks_are_written_and_hashed_in_order(tmp_path: Path) -> None:
    chunks = [os.urandom(n) for n in (1, 70_000, 262_144, 5, 1 << 20, 333)] * 8
    reported: list[int] = []
    hasher = hashlib.sha256()
    fd = os.open(tmp_path / "spool", os.O_WRONLY | os.O_CREAT)
    try:
        writer = SpoolWriter(fd, hasher, reported.append)
        for chunk in chunks:
            await writer.put(chunk)
        await writer.close()
    finally:
        os.close(fd)
    body = b"".join(chunks)
    assert writer.error is None
    assert (tmp_path / "spool").read_bytes() == body
    assert hasher.hexdigest() == hashlib.sha256(body).hexdigest()
    # Every byte is reported once, and all of it by the time close() returns.
    assert sum(reported) == len(body)


async def test_the_receiving_side_waits_while_the_disk_lags() -> None:
    """A disk slower than the upstream holds the fill back: what waits for the thread stays
    within QUEUED_MAX (plus the chunk being handed over), whatever the body's size."""
    read_end, write_end = os.pipe()  # a "disk" that takes nothing until read
    chunk = b"x" * (256 << 10)
    handed = 0
    writer = SpoolWriter(write_end, hashlib.sha256(), lambda count: None)
    os.close(write_end)  # the writer keeps a descriptor of its own

    async def send() -> None:
        nonlocal handed
        for _ in range(64):  # 16 MiB
            await writer.put(chunk)
            handed += len(chunk)

    sending = asyncio.create_task(send())
    await asyncio.sleep(0.3)
    assert not sending.done()
    assert handed <= QUEUED_MAX + len(chunk)

    received = bytearray()

    def drain() -> None:
        while block := os.read(read_end, 1 << 20):
            received.extend(block)

    reader = threading.Thread(target=drain)
    reader.start()
    await asyncio.wait_for(sending, 30)
    await writer.close()
    reader.join(10)
    os.close(read_end)
    assert handed == 64 * len(chunk)
    assert bytes(received) == chunk * 64


async def test_a_full_disk_is_raised_to_the_receiving_side() -> None:
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        writer = SpoolWriter(fd, hashlib.sha256(), lambda count: None)
        raised = None
        try:
            for _ in range(64):
                await writer.put(b"y" * (256 << 10))
        except OSError as e:
            raised = e
        await writer.close()
    finally:
        os.close(fd)
    # put() raises it at the latest once the queue is full, which nothing empties any more.
    assert raised is not None and raised is writer.error
    assert raised.errno == errno.ENOSPC


async def test_small_chunks_are_reported_together_and_never_held_back(tmp_path: Path) -> None:
    """Each report wakes the event loop: a link that delivers small chunks must not cost one
    per chunk. And the last bytes are reported without waiting for more, or for close()."""
    reported: list[int] = []
    fd = os.open(tmp_path / "spool", os.O_WRONLY | os.O_CREAT)
    try:
        writer = SpoolWriter(fd, hashlib.sha256(), reported.append)
        for _ in range(2000):
            await writer.put(b"z" * 1024)
            await asyncio.sleep(0)
        await writer.put(b"last")
        for _ in range(200):
            if sum(reported) == 2000 * 1024 + 4:
                break
            await asyncio.sleep(0.01)
        assert sum(reported) == 2000 * 1024 + 4
        assert len(reported) < 200, len(reported)
        await writer.close()
    finally:
        os.close(fd)


async def test_no_thread_to_be_had_is_an_os_error_and_leaks_no_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fill fails cleanly (a 503, as on a full disk) rather than on an exception it does
    not expect, which would leave its readers waiting."""

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    fd = os.open(tmp_path / "spool", os.O_WRONLY | os.O_CREAT)
    try:
        before = len(os.listdir("/proc/self/fd"))
        with pytest.raises(OSError) as raised:
            SpoolWriter(fd, hashlib.sha256(), lambda count: None)
        assert raised.value.errno == errno.EAGAIN
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        os.close(fd)
