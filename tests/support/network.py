"""A network for the mirror's upstream sessions in tests: names that resolve to loopback
addresses, and one loopback address that counts as public.

Production code takes these through `create_app(settings, network)`; nothing in settings or the
environment can change them, so the production check cannot be weakened from outside a test.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping

from aiohttp.abc import AbstractResolver, ResolveResult

from mirror.upstream.targets import Network, is_public

# Where the mirror's "public" upstreams listen; any other loopback address stays private.
PUBLIC_LOOPBACK = "127.0.0.1"
PRIVATE_LOOPBACK = "127.0.0.2"


class StaticResolver(AbstractResolver):
    """Resolves the names it was given; any other name does not exist."""

    def __init__(self, names: Mapping[str, str]) -> None:
        self._names = dict(names)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in self._names:
            raise OSError(socket.EAI_NONAME, f"{host} is not known in this test")
        address = self._names[host]
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
        ]

    async def close(self) -> None:
        pass


def loopback_network(names: Mapping[str, str] | None = None) -> Network:
    """`names` resolve to their loopback addresses; 127.0.0.1 counts as a public address."""
    public = ipaddress.ip_address(PUBLIC_LOOPBACK)
    known = dict(names or {})
    return Network(
        resolver=lambda: StaticResolver(known),
        classify=lambda address: address == public or is_public(address),
    )
