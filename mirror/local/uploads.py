"""Upload sessions: blobs pushed in one or more requests, kept on disk between them.

```
<cache-dir>/uploads/<id>/owner   JSON: the namespace and repository the upload is for
<cache-dir>/uploads/<id>/data    the bytes received so far
```

A session lives on disk, not in a process, so its requests may land on any worker or replica
sharing the cache directory, and it survives a restart. Sessions are not in `spool/` because
start-up clears the spool of files nobody holds, and a session between two requests is held by
nobody. A request that writes to a session holds an exclusive `flock` on its `data` file, so two
requests never write to one session at once, and expiry never removes one being written.

Hashing: SHA-256 state cannot be saved to disk (hashlib cannot serialise it), so each process
keeps the hasher of the sessions it wrote to, and knows how many bytes it covers. A session
whose chunks all came through one process (what docker, podman, skopeo and containerd do: one
body, then the closing `PUT`) is verified without reading it again; one whose chunks went
through several processes, or that is closed with another algorithm, is hashed from the file
when it is closed. Nothing becomes visible before its digest matched: the file is renamed into
`blobs/` only then.

A session with no request for `upload_expiry` seconds is removed (`expire`), and at most
MAX_SESSIONS are kept at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cachetools import LRUCache

from mirror.errors import BlobUploadUnknown, Busy, RangeInvalid
from mirror.oci.digest import Digest

HASH_CHUNK = 4 << 20
# Sessions kept at once on the cache directory. Each takes a directory and two files until it
# ends or expires, and a pusher could start thousands a second: without a cap, an hour of
# that would take every inode of the file system.
MAX_SESSIONS = 10_000


@dataclass(frozen=True, slots=True)
class Owner:
    registry: str
    repo: str


class Session:
    """An open upload: its data file, locked for writing by this request."""

    def __init__(self, id: str, directory: Path, fd: int) -> None:
        self.id = id
        self.directory = directory
        self.data = directory / "data"
        self.fd = fd

    @property
    def size(self) -> int:
        return os.fstat(self.fd).st_size


class UploadSessions:
    def __init__(self, root: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.root = root  # <cache-dir>/uploads
        self._clock = clock
        # Per session id: the hasher of its bytes and how many it has seen (this process's).
        self._hashers: LRUCache[str, tuple[hashlib._Hash, int]] = LRUCache(4096)

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def create(self, owner: Owner) -> str:
        """A new, empty session; its id (blocking). Past MAX_SESSIONS, `Busy`."""
        with os.scandir(self.root) as entries:
            if sum(1 for _ in itertools.islice(entries, MAX_SESSIONS)) >= MAX_SESSIONS:
                raise Busy(
                    f"{MAX_SESSIONS} uploads are open; finish or cancel some, or wait for "
                    "abandoned ones to expire",
                    retry_after=60,
                )
        id = uuid.uuid4().hex
        directory = self.root / id
        directory.mkdir(parents=True)
        record = json.dumps({"registry": owner.registry, "repo": owner.repo}).encode()
        (directory / "owner").write_bytes(record)
        (directory / "data").touch()
        return id

    def _directory(self, id: str, owner: Owner) -> Path:
        """The session's directory if it exists and belongs to `owner`."""
        # The id is ours (uuid4 hex): anything else names no session, and no path.
        if len(id) != 32 or any(c not in "0123456789abcdef" for c in id):
            raise BlobUploadUnknown(f"no upload {id[:100]!r}")
        directory = self.root / id
        try:
            raw = json.loads((directory / "owner").read_bytes())
        except (OSError, ValueError):
            raise BlobUploadUnknown(
                f"no upload {id}: unknown, finished, cancelled or expired"
            ) from None
        if raw != {"registry": owner.registry, "repo": owner.repo}:
            raise BlobUploadUnknown(f"no upload {id} in this repository")
        return directory

    def size(self, id: str, owner: Owner) -> int:
        """How many bytes the session holds; counts as activity (blocking)."""
        data = self._directory(id, owner) / "data"
        try:
            os.utime(data)
            return data.stat().st_size
        except FileNotFoundError:
            raise BlobUploadUnknown(f"no upload {id}") from None

    @contextlib.contextmanager
    def open(self, id: str, owner: Owner) -> Iterator[Session]:
        """Hold the session for writing (blocking). Another request writing to it now is a
        416: the client should ask where the upload stands and go on from there."""
        directory = self._directory(id, owner)
        try:
            fd = os.open(directory / "data", os.O_RDWR)
        except FileNotFoundError:
            raise BlobUploadUnknown(f"no upload {id}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                size = os.fstat(fd).st_size
                raise RangeInvalid(
                    "another request is writing to this upload",
                    headers={"Range": upload_range(size)},
                ) from None
            if not (directory / "data").exists():
                raise BlobUploadUnknown(f"no upload {id}: finished meanwhile")
            yield Session(id, directory, fd)
        finally:
            os.close(fd)

    def hasher(self, session: Session) -> hashlib._Hash | None:
        """The hasher that covers exactly the session's bytes so far, if this process has one
        (a new session's is empty); None when the bytes will have to be hashed at the end."""
        size = session.size
        known = self._hashers.pop(session.id, None)
        if known is not None and known[1] == size:
            return known[0]
        return hashlib.sha256() if size == 0 else None

    def wrote(self, session: Session, hasher: hashlib._Hash | None) -> None:
        """The session now holds what `hasher` covers (None: no hasher carries on)."""
        if hasher is not None:
            self._hashers[session.id] = (hasher, session.size)

    def digest_of(self, session: Session, algorithm: str) -> Digest:
        """The digest of everything in the session (blocking: may read the whole file)."""
        known = self._hashers.pop(session.id, None)
        if known is not None and known[1] == session.size and known[0].name == algorithm:
            return Digest(algorithm, known[0].hexdigest())
        hasher = hashlib.new(algorithm)
        offset = 0
        while data := os.pread(session.fd, HASH_CHUNK, offset):
            hasher.update(data)
            offset += len(data)
        return Digest(algorithm, hasher.hexdigest())

    def remove(self, session: Session) -> None:
        """Drop the session (finished or refused), while still holding it."""
        self._hashers.pop(session.id, None)
        shutil.rmtree(session.directory, ignore_errors=True)

    def cancel(self, id: str, owner: Owner) -> None:
        with self.open(id, owner) as session:
            self.remove(session)

    def expire(self, older_than: float) -> int:
        """Remove sessions with no request since `older_than` (a time) that nobody writes to
        now; returns how many (blocking)."""
        removed = 0
        try:
            ids = [entry.name for entry in os.scandir(self.root) if entry.is_dir()]
        except OSError:
            return 0
        for id in ids:
            directory = self.root / id
            try:
                fd = os.open(directory / "data", os.O_RDONLY)
            except FileNotFoundError:
                # Half made (a crash between mkdir and data) or half removed.
                if _mtime(directory) < older_than:
                    shutil.rmtree(directory, ignore_errors=True)
                    removed += 1
                continue
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.fstat(fd).st_mtime < older_than:
                    self._hashers.pop(id, None)
                    shutil.rmtree(directory, ignore_errors=True)
                    removed += 1
            except BlockingIOError:
                continue  # a request is writing to it
            finally:
                os.close(fd)
        return removed


def upload_range(size: int) -> str:
    """The `Range` of an upload holding `size` bytes: `0-<last byte>`, `0-0` when empty (as
    distribution answers; the spec's `<end-of-range>` is the position of the last byte)."""
    return f"0-{max(size - 1, 0)}"


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
