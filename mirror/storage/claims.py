"""Claims: which process does a piece of shared work, decided by an exclusive `flock`.

Workers and replicas on one cache directory coordinate through files in the spool, and only
through them: a claim is a file `spool/<name>.claim` that its holder keeps locked, so a claim
ends when its holder lets go or dies, and nothing has to be cleaned up after a crash (start-up
removes claim files nobody holds). A holder may publish a small record in its claim for others
to read (which spool file a fill writes).

`name` is a digest's hex, or the hash of a longer key (`claim_name`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
# How often a process waiting on another one looks again: the only polling interval there is.
POLL_INTERVAL = 0.02


def claim_name(key: str) -> str:
    """A file name for any key (`manifest docker.io/library/alpine@sha256:…`)."""
    return hashlib.sha256(key.encode()).hexdigest()


def claim_path(spool: Path, name: str) -> Path:
    return spool / f"{name}.claim"


class Claim:
    """Held by the one process doing the work; released (and its file removed) when done."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def try_take(cls, spool: Path, name: str) -> Claim | None:
        """The claim, or None when another process holds it. An OSError (no descriptors, a
        full disk) propagates: the caller decides whether to work without coordination."""
        path = claim_path(spool, name)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError:
            os.close(fd)
            raise
        return cls(path, fd)

    def publish(self, record: bytes) -> None:
        """Replace what the claim says; readers check it against the live spool file it names,
        so a record left by a dead holder is never trusted."""
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, record, 0)

    def release(self) -> None:
        """Remove the file while still holding it, then let go: the next holder starts clean."""
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


def is_claimed(spool: Path, name: str) -> bool:
    """Whether some process holds the claim right now."""
    try:
        fd = os.open(claim_path(spool, name), os.O_RDONLY)
    except OSError:
        return False
    try:
        return is_locked(fd)
    finally:
        os.close(fd)


def read_record(spool: Path, name: str) -> bytes | None:
    """What the holder published, if the claim file exists (it may be stale: see `publish`)."""
    try:
        return claim_path(spool, name).read_bytes() or None
    except OSError:
        return None


def is_locked(fd: int) -> bool:
    """Whether another open file holds an exclusive lock on the file behind `fd`."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


async def poll(check: Callable[[], Awaitable[T | None]], within: float) -> T | None:
    """`check()` every POLL_INTERVAL until it returns something, or None after `within` s."""
    deadline = asyncio.get_running_loop().time() + within
    while (found := await check()) is None:
        if asyncio.get_running_loop().time() > deadline:
            return None
        await asyncio.sleep(POLL_INTERVAL)
    return found


def _readers_path(spool: Path, name: str) -> Path:
    return spool / f"{name}.readers"


def join_readers(spool: Path, name: str) -> int:
    """Count this reader among those of `name` in every process (a shared lock on a file);
    returns what `leave_readers` needs."""
    fd = os.open(_readers_path(spool, name), os.O_RDONLY | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def leave_readers(spool: Path, name: str, fd: int) -> None:
    """The last reader to leave removes the file."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pass  # others still read
    else:
        with contextlib.suppress(OSError):
            _readers_path(spool, name).unlink()
    finally:
        os.close(fd)


def has_readers(spool: Path, name: str) -> bool:
    """Whether any process counts a reader of `name` right now."""
    try:
        fd = os.open(_readers_path(spool, name), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


async def once(
    spool: Path,
    key: str,
    work: Callable[[], Awaitable[T]],
    produced: Callable[[], Awaitable[T | None]],
    wait: float,
) -> T:
    """Run `work` unless another process already runs it for `key`; then return what that one
    produced (`produced()` reads it back), or run `work` after all if it let go without a
    result. Without descriptors or disk for the claim, `work` runs uncoordinated: coordination
    saves upstream requests, it is never a reason to fail one."""
    name = claim_name(key)
    try:
        claim = Claim.try_take(spool, name)
    except OSError:
        return await work()
    if claim is not None:
        with claim:
            return await work()

    async def outcome() -> tuple[T | None] | None:
        # (result,) once there is one; (None,) once the holder let go without one.
        if (found := await produced()) is not None:
            return (found,)
        return None if is_claimed(spool, name) else (None,)

    settled = await poll(outcome, wait)
    if settled is None or settled[0] is None:
        return await work()
    return settled[0]
