"""One process at a time prunes a cache directory: the evicting worker of a server, or one of
the `gc` and `rm` commands. A file lock, so it is released when its holder dies."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

POLL = 0.1


class UpkeepLock:
    def __init__(self, root: Path) -> None:
        self._path = root / "upkeep.lock"
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def acquire(self, within: float) -> bool:
        """Wait up to `within` seconds for the lock (blocking: for commands)."""
        deadline = time.monotonic() + within
        while not self.try_acquire():
            if time.monotonic() > deadline:
                return False
            time.sleep(POLL)
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> UpkeepLock:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
