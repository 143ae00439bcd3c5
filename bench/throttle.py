"""A TCP relay in front of the upstream that sends its answers no faster than a set rate, as a
link to a remote registry does: the cold phase measures coalescing under that condition too.

On loopback the upstream is as fast as the mirror itself, so 50 clients of one cold blob cost 50
times the mirror's output; behind a link of realistic speed the fill is the slow part, and
every waiting client should finish when it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

from tests.support.processes import free_port

CHUNK = 64 * 1024


class ThrottledRelay:
    """127.0.0.1:<port> → target, answers paced at `rate` bytes per second per connection."""

    def __init__(self, target_host: str, target_port: int, rate: float) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._target = (target_host, target_port)
        self._rate = rate
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="throttled-relay", daemon=True)

    def __enter__(self) -> ThrottledRelay:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the throttled relay did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._relay, "127.0.0.1", self.port)
        )
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            self._loop.run_until_complete(server.wait_closed())
            self._loop.close()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self._target)
        except OSError:
            client_w.close()
            return
        tasks = [
            asyncio.ensure_future(_pipe(client_r, up_w, None)),
            asyncio.ensure_future(_pipe(up_r, client_w, self._rate)),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for writer in (client_w, up_w):
            writer.close()


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rate: float | None
) -> None:
    started = time.monotonic()
    sent = 0
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
            sent += len(data)
            if rate is not None and (ahead := sent / rate - (time.monotonic() - started)) > 0:
                await asyncio.sleep(ahead)
