"""The htpasswd file: `user:hash` lines, bcrypt hashes only, re-read when it changes.

`htpasswd -B` writes `$2y$` bcrypt hashes; the other kinds it can write (MD5 `$apr1$`, `{SHA}`,
crypt) are fast to brute-force, so a file holding one is refused rather than half used.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from mirror import log
from mirror.config import ConfigError

BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
BCRYPT_LENGTH = 60
RELOAD_INTERVAL = 2.0  # the file is looked at (one stat) at most this often

Stamp = tuple[int, int, int]  # inode, size, mtime in ns: any change means a new file


class HtpasswdError(Exception):
    """The file cannot be used; the message names the file and the line."""


def parse(text: str, source: str) -> dict[str, bytes]:
    """User name to bcrypt hash. Blank lines and `#` comments are skipped."""
    entries: dict[str, bytes] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user:
            raise HtpasswdError(f"{source} line {number}: expected user:hash")
        if not hashed.startswith(BCRYPT_PREFIXES) or len(hashed) != BCRYPT_LENGTH:
            # The hash itself is never quoted: it is a secret too.
            raise HtpasswdError(
                f"{source} line {number}: the password of {user!r} is not a bcrypt hash; "
                "only bcrypt is accepted (write entries with htpasswd -B)"
            )
        entries[user] = hashed.encode()
    return entries


def _stamp(path: Path) -> Stamp:
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


def _read(path: Path) -> tuple[dict[str, bytes], Stamp]:
    stamp = _stamp(path)
    return parse(path.read_text(encoding="utf-8"), str(path)), stamp


class HtpasswdFile:
    """The users of one htpasswd file, as of its last change.

    Requests ask for the entries; at most every `interval` seconds one of them also looks at
    the file (in a thread) and re-reads it if its inode, size or mtime changed. A changed file
    that cannot be used (unreadable, a non-bcrypt line) leaves the previous users in force,
    with a warning: a typo must not lock everyone out of a running mirror.
    """

    def __init__(
        self,
        path: Path,
        *,
        interval: float = RELOAD_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        try:
            self._entries, self._stamp = _read(path)
        except OSError as e:
            raise ConfigError(f"--htpasswd: cannot read {path}: {e.strerror}") from None
        except (HtpasswdError, UnicodeDecodeError) as e:
            raise ConfigError(f"--htpasswd: {e}") from None
        self.version = 0  # bumped at each reload, so that caches of verified logins are dropped
        self._interval = interval
        self._clock = clock
        self._next_check = clock() + interval
        self._checking = False

    @property
    def users(self) -> int:
        return len(self._entries)

    async def entries(self) -> Mapping[str, bytes]:
        """The current users; re-reads the file first when it is time to look and it changed.
        Requests that arrive while another is looking use the entries in force."""
        if self._clock() >= self._next_check and not self._checking:
            self._checking = True
            try:
                await asyncio.to_thread(self._reload_if_changed)
            finally:
                self._checking = False
                self._next_check = self._clock() + self._interval
        return self._entries

    def _reload_if_changed(self) -> None:
        try:
            if _stamp(self.path) == self._stamp:
                return
            entries, stamp = _read(self.path)
        except (OSError, HtpasswdError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) else str(e)
            log.warn_once("htpasswd not reloaded; the previous users stay", error=reason)
            return
        self._entries, self._stamp = entries, stamp
        self.version += 1
        log.get_logger().info("htpasswd reloaded", path=str(self.path), users=len(entries))
