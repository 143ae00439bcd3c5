"""The helper process that makes eviction passes for a server process (`python -m
mirror.cache.helper <server pid>`), and the one conversation it has: a pass job in, its result
out, each a length-prefixed pickle over the helper's stdin and stdout. The two processes are the
same program, so nothing but them ever writes to those pipes.

The helper is started on first use, ends when its server does (its stdin closes, and Linux sends
it SIGTERM if the server dies outright), and is stopped after idling a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import pickle
import signal
import struct
import sys
from typing import Any, BinaryIO

from mirror.cache import passes
from mirror.cache.passes import PassJob, PassResult

_HEADER = struct.Struct("!Q")
STOP_WAIT = 5.0
# Below the server's priority, so that on a busy machine the pass waits, not the requests.
NICENESS = 10
_PR_SET_PDEATHSIG = 1


class HelperFailed(Exception):
    """The helper died, or its pass raised; the next pass starts a fresh one."""


class PassHelper:
    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def run(self, job: PassJob) -> PassResult:
        async with self._lock:
            if not self.running:
                self._process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "mirror.cache.helper",
                    str(os.getpid()),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
            process = self._process
            assert process is not None and process.stdin is not None and process.stdout is not None
            try:
                data = pickle.dumps(job)
                process.stdin.write(_HEADER.pack(len(data)) + data)
                await process.stdin.drain()
                (size,) = _HEADER.unpack(await process.stdout.readexactly(_HEADER.size))
                ok, value = pickle.loads(await process.stdout.readexactly(size))
            except (OSError, asyncio.IncompleteReadError) as e:
                await self._stop()
                raise HelperFailed(f"the eviction helper ended: {e}") from e
            except BaseException:
                await self._stop()  # cancelled mid-conversation: the next one starts afresh
                raise
        if not ok:
            raise HelperFailed(value)
        assert isinstance(value, PassResult)
        return value

    async def stop(self) -> None:
        async with self._lock:
            await self._stop()

    async def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        if process.stdin is not None:
            process.stdin.close()  # the helper ends at the end of its input
        try:
            async with asyncio.timeout(STOP_WAIT):
                await process.wait()
        except TimeoutError:
            process.kill()  # in the middle of a long pass: it holds nothing that matters
            await process.wait()


def serve(jobs: BinaryIO, results: BinaryIO, run: Any) -> None:
    """The helper's side: answer each job with (True, result) or (False, why it failed)."""
    while header := jobs.read(_HEADER.size):
        if len(header) < _HEADER.size:
            return
        (size,) = _HEADER.unpack(header)
        job = pickle.loads(jobs.read(size))
        try:
            reply: tuple[bool, Any] = (True, run(job))
        except Exception as e:
            reply = (False, f"{type(e).__name__}: {e}")
        data = pickle.dumps(reply)
        results.write(_HEADER.pack(len(data)) + data)
        with contextlib.suppress(BrokenPipeError):
            results.flush()


def _end_with(server: int) -> None:
    """The helper must not outlive its server, even one killed outright: Linux is asked to send
    it SIGTERM when its parent dies (PR_SET_PDEATHSIG), and a parent already gone ends it now."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != server:
        sys.exit(0)


def main() -> None:
    _end_with(int(sys.argv[1]))
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        serve(sys.stdin.buffer, sys.stdout.buffer, passes.run)


if __name__ == "__main__":
    main()
