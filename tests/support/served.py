"""A mirror served in this process by `mirror.server`, as `mirror serve` runs it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from mirror.api.connections import Connections


@dataclass
class Served:
    """A mirror served in this process as `mirror serve` serves it (its own listener and
    connection handling), on a loopback port."""

    port: int
    connections: Connections
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def get(self, path: str, **headers: str) -> tuple[int, bytes, dict[str, str]]:
        """One request on a connection of its own, closed afterwards."""
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session,
            session.get(self.url + path, headers=headers) as response,
        ):
            return response.status, await response.read(), dict(response.headers)


ServeFactory = Callable[..., Awaitable[Served]]
