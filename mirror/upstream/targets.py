"""Where an upstream may send the mirror: redirect targets and token realms keep to the address
class of the configured upstream and never downgrade from https.

A public upstream (one whose host resolves to global addresses) may not point the mirror at
loopback, link-local (169.254.169.254, the cloud metadata service), private, shared, unspecified,
multicast or reserved addresses, written as literal IPs or as names that resolve to them, unless
its `allow_private_targets` says so. Names are checked on the addresses a connection actually
uses: the session's resolver drops the refused ones, so a DNS answer that changes between a check
and the connection cannot slip through. An upstream that is itself private (a site registry) may
send the mirror anywhere but to a link-local address, where clouds serve their metadata (the
host's credentials among it) and no registry keeps its storage: that too only with
`allow_private_targets`.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from mirror.errors import UpstreamError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Classifier = Callable[[IPAddress], bool]


def is_public(address: IPAddress) -> bool:
    """Whether an address is on the public internet (a target a public upstream may name)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is loopback
    return address.is_global and not (
        address.is_multicast
        or address.is_private
        or address.is_reserved
        or address.is_loopback
        or address.is_link_local
        or address.is_unspecified
    )


def is_link_local(address: IPAddress) -> bool:
    """Whether an address is link-local (169.254.0.0/16, fe80::/10), mapped into IPv6 or not."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_link_local


def literal_address(host: str | None) -> IPAddress | None:
    """The address a URL's host names literally, or None for a DNS name."""
    try:
        return ipaddress.ip_address((host or "").strip("[]"))
    except ValueError:
        return None


def _default_resolver() -> AbstractResolver:
    return DefaultResolver()


@dataclass(frozen=True, slots=True)
class Network:
    """How upstream host names are resolved and which addresses count as public.

    The system resolver and `is_public` in production; tests substitute a resolver that maps
    names to loopback addresses and a classifier that calls one loopback address public.
    """

    resolver: Callable[[], AbstractResolver] = field(default=_default_resolver)
    classify: Classifier = field(default=is_public)


class RefusedAddress(OSError):
    """Raised by the resolver for a name whose every address is refused; aiohttp hands it back
    as the `os_error` of a `ClientConnectorError`."""


class TargetGuard:
    """The rules for one upstream: its address class, learned from its own DNS answer (or its
    literal address), and whether private targets are allowed anyway."""

    def __init__(self, name: str, upstream: URL, allow_private: bool, classify: Classifier):
        self._name = name
        self._host = upstream.host or ""
        self._allow_private = allow_private
        self._classify = classify
        literal = literal_address(self._host)
        # Unknown until the upstream's name is resolved: refuse private targets meanwhile.
        self._upstream_public: bool | None = None if literal is None else classify(literal)

    @property
    def restricted(self) -> bool:
        """Whether targets must be public addresses."""
        return not self._allow_private and self._upstream_public is not False

    def _refuses(self, address: IPAddress) -> bool:
        """Whether a target other than the upstream's own host may not have this address."""
        if self.restricted:
            return not self._classify(address)
        return not self._allow_private and is_link_local(address)

    def check(self, source: URL, target: URL, what: str) -> None:
        """Refuse a target (a redirect `Location`, a token realm) named by an answer from
        `source`: an unusable URL, a downgrade to http, or a refused literal address."""
        if target.scheme not in ("http", "https") or not target.host:
            raise UpstreamError(f"{self._name} sent an unusable {what}")
        if source.scheme == "https" and target.scheme != "https":
            raise UpstreamError(
                f"{self._name} sent a {what} on plain http ({target.host}); "
                "the mirror does not leave https"
            )
        address = literal_address(target.host)
        if address is not None and target.host != self._host and self._refuses(address):
            raise UpstreamError(self._refusal(what, target.host, address))

    def admit(self, host: str, addresses: list[ResolveResult]) -> list[ResolveResult]:
        """The addresses of `host` a connection may use (see `GuardedResolver`)."""
        parsed = [ipaddress.ip_address(a["host"]) for a in addresses]
        if host == self._host:
            self._upstream_public = any(self._classify(a) for a in parsed)
            return addresses
        kept = [a for a, ip in zip(addresses, parsed, strict=True) if not self._refuses(ip)]
        if not kept and addresses:
            raise RefusedAddress(self._refusal("target", host, parsed[0]))
        return kept

    def _refusal(self, what: str, host: str, address: IPAddress) -> str:
        return (
            f"{self._name} sent the mirror to {host} ({address}), a {_kind(address)} address: "
            f"refused{' for a public upstream' if self.restricted else ''} (a {what}); "
            f"set allow_private_targets = true for {self._name} to allow it"
        )


def _kind(address: IPAddress) -> str:
    for kind in ("loopback", "link_local", "multicast", "unspecified", "private", "reserved"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return "non-public"


class GuardedResolver(AbstractResolver):
    """The session's resolver: the system's answers, less the addresses the guard refuses."""

    def __init__(self, guard: TargetGuard, inner: AbstractResolver) -> None:
        self._guard = guard
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return self._guard.admit(host, await self._inner.resolve(host, port, family))

    async def close(self) -> None:
        await self._inner.close()
