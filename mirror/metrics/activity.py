"""What the status page tells beyond the metrics: the most pulled images and the latest misses.

Both are kept in memory and bounded (image names would make a metric's labels unbounded). Each
worker of `--workers N` writes a small snapshot of its own into the directory the workers share
for their metrics, and the page adds them up, so whichever worker answers shows them all. A
worker that takes a dead one's slot starts from its snapshot, so what that one counted stays.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MAX_IMAGES = 1000  # names counted per process; past it, the less pulled half is forgotten
RECENT_MISSES = 20
SNAPSHOT_IMAGES = 50  # of each process, in its snapshot
_PREFIX = "activity_"


@dataclass(frozen=True, slots=True)
class Miss:
    """One request the cache could not answer from what it held."""

    at: float  # seconds since the epoch
    kind: str  # manifest, blob, tags, referrers
    image: str  # registry/repository
    reference: str  # tag or digest
    status: int
    size: int  # bytes sent to the client


class Activity:
    """Manifest pulls per image and the latest misses, in this process."""

    def __init__(
        self,
        max_images: int = MAX_IMAGES,
        recent: int = RECENT_MISSES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._max_images = max_images
        self._clock = clock
        self._pulls: dict[str, int] = {}  # by registry/repository
        self._misses: deque[Miss] = deque(maxlen=recent)
        self.changed = False

    def pulled(self, registry: str, repo: str) -> None:
        self._add(f"{registry}/{repo}", 1)
        self.changed = True

    def _add(self, image: str, count: int) -> None:
        self._pulls[image] = self._pulls.get(image, 0) + count
        if len(self._pulls) > self._max_images:
            kept = heapq.nlargest(self._max_images // 2, self._pulls.items(), key=_count)
            self._pulls = dict(kept)

    def missed(self, kind: str, image: str, reference: str, status: int, size: int) -> None:
        self._misses.append(Miss(self._clock(), kind, image, reference, status, size))
        self.changed = True

    def snapshot(self, images: int = SNAPSHOT_IMAGES) -> dict[str, Any]:
        """What this process knows, as JSON-ready data: its most pulled images, latest misses."""
        top = heapq.nlargest(images, self._pulls.items(), key=_count)
        return {
            "pulls": [[image, count] for image, count in top],
            "misses": [asdict(miss) for miss in self._misses],
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Start from a snapshot: the one a dead worker left in the slot this one took."""
        merged = merge([snapshot], images=self._max_images, recent=self._misses.maxlen or 0)
        for image, count in merged.pulls:
            self._add(image, count)
        self._misses.extend(reversed(merged.misses))  # oldest first, as they happened


def _count(item: tuple[str, int]) -> int:
    return item[1]


@dataclass(frozen=True, slots=True)
class Merged:
    pulls: list[tuple[str, int]]  # most pulled first
    misses: list[Miss]  # latest first


def merge(
    snapshots: Iterable[dict[str, Any]], images: int = 10, recent: int = RECENT_MISSES
) -> Merged:
    """Several processes' snapshots as one: pull counts added up, misses by time."""
    pulls: dict[str, int] = {}
    misses: list[Miss] = []
    for snapshot in snapshots:
        try:
            counted = [(str(image), int(count)) for image, count in snapshot.get("pulls", ())]
            missed = [Miss(**miss) for miss in snapshot.get("misses", ())]
        except (TypeError, ValueError, AttributeError):
            continue  # not a snapshot this version wrote
        for image, count in counted:
            pulls[image] = pulls.get(image, 0) + count
        misses += missed
    top = heapq.nlargest(images, pulls.items(), key=lambda item: (item[1], item[0]))
    latest = heapq.nlargest(recent, misses, key=lambda miss: miss.at)
    return Merged(top, latest)


def write_snapshot(directory: Path, slot: str, snapshot: dict[str, Any]) -> None:
    """Replace this worker's snapshot file at once (readers never see half of one)."""
    final = directory / f"{_PREFIX}{slot}.json"
    part = directory / f".{_PREFIX}{slot}.json.part"
    part.write_bytes(json.dumps(snapshot).encode())
    os.replace(part, final)


def read_snapshot(directory: Path, slot: str) -> dict[str, Any]:
    """The snapshot last written in `slot` (empty if none)."""
    with contextlib.suppress(OSError, ValueError):
        found = json.loads((directory / f"{_PREFIX}{slot}.json").read_bytes())
        if isinstance(found, dict):
            return found
    return {}


def read_snapshots(directory: Path, but: str) -> list[dict[str, Any]]:
    """Every slot's snapshot except `but`'s (the caller's own, which it has fresher); a slot
    whose worker died holds its counts until another worker takes it over."""
    found = []
    for path in directory.glob(f"{_PREFIX}*.json"):
        if path.name == f"{_PREFIX}{but}.json":
            continue
        with contextlib.suppress(OSError, ValueError):
            found.append(json.loads(path.read_bytes()))
    return found
