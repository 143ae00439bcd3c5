"""How commands that move images show their progress: a bar per image (`rich`) on a terminal,
one plain line per finished image otherwise (logs, CI)."""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.filesize import decimal
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)

from mirror.images.prefetch import Prefetched


def size(count: int) -> str:
    return str(decimal(count))


def describe(result: Prefetched) -> str:
    """One image's outcome in a line."""
    text = (
        f"{result.name} {result.digest}: {result.blobs} blobs, {size(result.fetched)} fetched, "
        f"{size(result.cached)} already cached"
    )
    if result.stale:
        text += " (tag not revalidated: its upstream could not be asked; the cached one is kept)"
    return text


class ImageProgress:
    """One image's bar (or nothing until its line is written)."""

    def __init__(self, display: Display, name: str) -> None:
        self._display = display
        self._task: TaskID | None = None
        if display.bars is not None:
            self._task = display.bars.add_task(name, total=0, status="")

    def expect(self, count: int) -> None:
        if self._display.bars is not None and self._task is not None:
            total = self._display.bars.tasks[self._task].total or 0
            self._display.bars.update(self._task, total=total + count)

    def advance(self, count: int) -> None:
        if self._display.bars is not None and self._task is not None:
            self._display.bars.advance(self._task, count)

    def finished(self, result: Prefetched) -> None:
        if self._display.bars is not None and self._task is not None:
            self._display.bars.update(self._task, status="done")
        else:
            self._display.line(describe(result))

    def failed(self) -> None:
        if self._display.bars is not None and self._task is not None:
            self._display.bars.update(self._task, status="[red]failed")


class Display(AbstractContextManager["Display"]):
    """Bars on a terminal, plain lines elsewhere; both on `stream` (standard error)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self.bars: Progress | None = None
        if self._stream.isatty():
            self.bars = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TextColumn("{task.fields[status]}"),
                console=Console(file=self._stream),
            )

    def image(self, name: str) -> ImageProgress:
        return ImageProgress(self, name)

    def line(self, text: str) -> None:
        print(text, file=self._stream, flush=True)

    def __enter__(self) -> Display:
        if self.bars is not None:
            self.bars.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.bars is not None:
            self.bars.stop()
