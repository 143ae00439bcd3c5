"""What the upkeep commands share: the cache directory they work on, and sizes and times written
for people."""

from __future__ import annotations

import time
from pathlib import Path

from mirror.cache.inventory import Stores
from mirror.commands import CommandError
from mirror.config import Settings

# How long `gc` and `rm` wait for a server's evictor to finish its pass.
LOCK_WAIT = 120.0
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def refuse_shared_storage(settings: Settings) -> None:
    """The upkeep commands see the cache directory alone: with a bucket behind it, what they
    would report or change is only the local copy, so they refuse."""
    if settings.storage is not None:
        raise CommandError(
            f"works on a cache directory alone, and the content is in {settings.storage.url} "
            "(--storage): not supported"
        )


def open_cache(settings: Settings) -> Stores:
    """The stores of the configured cache directory, when it is the whole cache."""
    refuse_shared_storage(settings)
    return open_directory(settings.cache_dir)


def open_directory(root: Path) -> Stores:
    """The stores of a cache directory, which must exist (nothing is created)."""
    if not (root / "blobs").is_dir():
        raise CommandError(f"no cache at {root} (--cache-dir, MIRROR_CACHE_DIR)")
    return Stores.at(root)


def human_size(size: int) -> str:
    value = float(size)
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def count(n: int, noun: str) -> str:
    """`1 blob`, `2 blobs`."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def utc_time(at: float | None) -> str | None:
    """ISO 8601 in UTC, to the second (None stays None)."""
    return None if at is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, for a terminal."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]
    return "\n".join(lines)
