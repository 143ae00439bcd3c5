"""How much one download may write: no more than its disk can give beyond `--min-free` and the
disk's reserve (`Limits.room`), and, when the upstream announced no size, no more than the cache
may hold (`--max-size`) either. A size announced past the disk's room is refused before any
header goes out; a body that runs past its bound is cut off. No upstream can then fill the disk
that every other download and every metadata write needs, whatever it announces or streams.

A blob announced bigger than the cap but within the disk's room is still streamed to its
clients (through the spool) and not kept: a layer the cache cannot hold passes through it."""

from __future__ import annotations

from typing import Protocol

from mirror import log
from mirror.cache.usage import Room
from mirror.errors import StorageFull
from mirror.oci.digest import Digest

# Bytes received between two looks at the disk: other downloads take room meanwhile, and a
# statvfs for each chunk would cost more than it tells.
LOOK_EVERY = 32 << 20


class RoomSource(Protocol):
    def room(self) -> Room:
        """What one more blob may take now."""

    def out_of_space(self) -> None:
        """Free some room at once, as after a write that failed for want of it."""


class FillBound:
    """The most one fill may write, looked at again every LOOK_EVERY bytes."""

    def __init__(self, space: RoomSource | None, digest: Digest) -> None:
        self._space = space  # None: nothing bounds the fill but its announced size
        self._digest = digest
        self._limit: int | None = None
        self._announced = False  # the upstream said how big the blob is
        self._room: Room | None = None
        self._by_cap = False
        self._next_look = 0

    def admit(self, size: int | None) -> None:
        """Refuse, before anything is written, a blob bigger than the disk could take."""
        self._announced = size is not None
        self._look(0)
        if size is not None and self._limit is not None and size > self._limit:
            raise self._refusal(f"is {size} bytes", size)

    def check(self, received: int) -> None:
        """`received` bytes have come so far (before they are written): cut the body off once
        it runs past the bound."""
        if received >= self._next_look:
            self._look(received)
        if self._limit is not None and received > self._limit:
            raise self._refusal(f"runs past {self._limit} bytes", received)

    def _look(self, received: int) -> None:
        if self._space is None:
            return
        self._room = room = self._space.room()
        # What this fill has written already left the disk's free space.
        disk = received + room.disk
        # An announced size is held to itself already: only the disk bounds it.
        self._by_cap = not self._announced and room.cap is not None and room.cap <= disk
        self._limit = max(0, room.cap if self._by_cap and room.cap is not None else disk)
        self._next_look = received + LOOK_EVERY

    def _refusal(self, what: str, size: int) -> StorageFull:
        room = self._room
        # Without limits nothing is evicted until the disk fills: a blob it cannot take now is
        # that, as a failed write would be, when emptying the cache could make room for it.
        if (
            self._space is not None
            and room is not None
            and not (self._by_cap or room.evicting)
            and size <= room.whole_disk
        ):
            self._space.out_of_space()
        where = (
            "the cache may hold (--max-size)"
            if self._by_cap
            else "the cache's disk has room for, keeping --min-free and a reserve free"
        )
        log.get_logger().warning(
            "blob too large to keep",
            digest=str(self._digest),
            size=size,
            limit=self._limit,
            bound="max_size" if self._by_cap else "disk",
        )
        return StorageFull(f"blob {self._digest} {what}: more than {where} ({self._limit} bytes)")
