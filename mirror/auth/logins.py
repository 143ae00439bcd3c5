"""Checking Basic credentials (RFC 7617) against the htpasswd file, cheaply and safely.

bcrypt is slow on purpose, and a pull sends dozens of requests, each with the same
`Authorization` header. So a result is remembered under a keyed hash of the header (never the
password itself), and only a header not seen lately costs a bcrypt round, run in a small thread
pool of its own so that logins never hold up the event loop or the threads that write the cache.
A header that logged in is remembered for an hour, apart from those that failed so that wrong
guesses cannot push it out: a client that logged in needs no room among the checks again however
busy they are kept. Either outcome holds only while the user's entry in the file is the one it
was checked against, so a user removed or given a new password is checked anew at the reload.

Failed logins cost bounded work: a client address (for IPv6, its /64: one host commonly has a
whole /64 to pick from) whose checks failed `MAX_FAILURES` times in a row is answered `429`
without any bcrypt round until `FAILURE_WINDOW` passes with no new attempt; its checks still
under way count as failures until they end, so that sending guesses all at once gets no more of
them checked; a header that just failed fails again from memory; and no more than `MAX_PENDING`
checks wait or run at once in a process, beyond which new ones are refused at once. Of those,
one address holds at most `MAX_PENDING_PER_SOURCE` and one network (an IPv6 /48, an IPv4 /24)
at most `MAX_PENDING_PER_NETWORK`, so that guesses from the many addresses of one network
cannot keep everyone else's logins out.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import hmac
import ipaddress
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import bcrypt
from cachetools import TTLCache

from mirror import log
from mirror.auth.htpasswd import HtpasswdFile
from mirror.errors import TooManyRequests, Unauthorized

VERIFIED_FOR = 3600.0  # seconds a header that logged in is answered from memory
REFUSED_FOR = 60.0  # seconds a header that failed is
REMEMBERED = 4096  # headers of each outcome, the least recently used forgotten first
FAILURE_WINDOW = 60.0
MAX_FAILURES = 10
MAX_PENDING = 32
# A host's requests with one header share one check, so an address rarely has more than one
# under way; four leave room for a few users behind one NAT address.
MAX_PENDING_PER_SOURCE = 4
# A quarter of MAX_PENDING: filling them all takes four networks, each either an IPv6 /48, the
# most one site is commonly given (RFC 6177), or an IPv4 /24, the least routed on the internet.
MAX_PENDING_PER_NETWORK = 8
THREADS = 2
# bcrypt reads at most 72 bytes of a password; htpasswd -B hashes those and ignores the rest.
BCRYPT_MAX_PASSWORD = 72
DEFAULT_COST = 5  # htpasswd -B's, for a file with no readable cost


def stand_in(hashes: Iterable[bytes]) -> bytes:
    """A hash checked when the user name is unknown, so that a wrong name takes as long as a
    wrong password: of the cost most of `hashes` have (the higher on a tie).

    The check's time depends on the cost alone, so a fresh salt and a hash nobody's password
    makes (bcrypt's alphabet has no hash of all dots) do, without a bcrypt round to make it.
    """
    # A bcrypt hash is $2?$CC$ then 22 characters of salt and 31 of hash.
    costs = Counter(int(h[4:6]) for h in hashes if h[4:6].isdigit() and 4 <= int(h[4:6]) <= 31)
    cost = max(costs, key=lambda c: (costs[c], c)) if costs else DEFAULT_COST
    return bcrypt.gensalt(rounds=cost) + b"." * 31


def source_of(client: str) -> str:
    """What failed logins are counted against: an IPv4 address itself, an IPv6 address's /64
    (an IPv4 address mapped into IPv6 as the IPv4 one); anything else as it is."""
    return _within(client, ipv4=32, ipv6=64)


def network_of(client: str) -> str:
    """The network whose addresses share `MAX_PENDING_PER_NETWORK`: an IPv4 address's /24, an
    IPv6 address's /48 (an IPv4 address mapped into IPv6 as the IPv4 one); anything else as it
    is."""
    return _within(client, ipv4=24, ipv6=48)


def _within(client: str, *, ipv4: int, ipv6: int) -> str:
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return client
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    bits = ipv4 if address.version == 4 else ipv6
    if bits == address.max_prefixlen:
        return str(address)
    return str(ipaddress.ip_network((address, bits), strict=False))


def basic_credentials(header: str) -> tuple[str, str]:
    """(user, password) of an `Authorization: Basic …` header."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise Unauthorized("this registry accepts Basic credentials only")
    try:
        # b64decode refuses a str with anything but ASCII in it by a bare ValueError, and a
        # header of raw bytes (decoded by aiohttp with surrogateescape) is such a str.
        decoded = base64.b64decode(token.strip().encode("ascii"), validate=True).decode()
    except (binascii.Error, UnicodeError):
        raise Unauthorized("malformed Basic credentials") from None
    user, sep, password = decoded.partition(":")
    if not sep or not user:
        raise Unauthorized("malformed Basic credentials")
    return user, password


class Checked(NamedTuple):
    """A header's remembered outcome: whose it is and the hash it was checked against (None for
    a name not in the file)."""

    user: str
    hashed: bytes | None


def _matches(password: str, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password.encode()[:BCRYPT_MAX_PASSWORD], hashed)
    except ValueError:  # a hash bcrypt cannot read
        return False


class Logins:
    """Who a request logged in as, by its `Authorization` header."""

    def __init__(
        self, htpasswd: HtpasswdFile, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._htpasswd = htpasswd
        self._version = -1  # the first request reads the stand-in's cost as if it had changed
        self._stand_in = b""
        self._key = os.urandom(32)  # what the remembered headers are hashed with
        # By the header's keyed hash: the user and the hash the header was checked against.
        self._verified: TTLCache[bytes, Checked] = TTLCache(REMEMBERED, VERIFIED_FOR, timer=clock)
        self._refused: TTLCache[bytes, Checked] = TTLCache(REMEMBERED, REFUSED_FOR, timer=clock)
        self._failures: TTLCache[str, int] = TTLCache(10_000, FAILURE_WINDOW, timer=clock)
        self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix="bcrypt")
        self._pending = 0
        self._in_flight: dict[str, int] = {}  # checks under way, by source_of their address
        self._in_network: dict[str, int] = {}  # and by network_of it
        self._checking: dict[bytes, asyncio.Future[str | None]] = {}  # by header's keyed hash

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def user(self, header: str | None, client: str) -> str | None:
        """The user name the credentials belong to; None when there are none.

        Raises `Unauthorized` for wrong or malformed ones, `TooManyRequests` when `client` (an
        address, counted by `source_of`) failed too often or too many checks are under way.
        """
        if not header:
            return None
        source, network = source_of(client), network_of(client)
        entries = await self._htpasswd.entries()
        if self._htpasswd.version != self._version:  # the costs may have changed
            self._version = self._htpasswd.version
            self._stand_in = stand_in(entries.values())
        key = hmac.digest(self._key, header.encode(errors="surrogateescape"), hashlib.sha256)
        if (verified := _remembered(self._verified, key, entries)) is not None:
            return verified.user
        if _remembered(self._refused, key, entries) is not None:
            raise Unauthorized("wrong user name or password")
        check = self._checking.get(key)
        if check is None:
            # Requests sent together with the same new header (a pull's first layers) share
            # one check, which counts once against their address.
            user, password = basic_credentials(header)
            self._admit(source, network)
            # Counted before the check first runs, so that requests of the same instant see it.
            self._pending += 1
            _add(self._in_flight, source, 1)
            _add(self._in_network, network, 1)
            check = asyncio.ensure_future(
                self._check(key, user, password, entries.get(user), source, client)
            )
            self._checking[key] = check
            check.add_done_callback(functools.partial(self._checked_one, key, source, network))
        known = await asyncio.shield(check)
        if known is None:
            raise Unauthorized("wrong user name or password")
        return known

    def _admit(self, source: str, network: str) -> None:
        """Refuse a new check for `source` beyond its failures' allowance, counting those under
        way as failed, or beyond the checks under way its address, its network or the process
        may hold."""
        failures = self._failures.get(source, 0)
        if failures >= MAX_FAILURES:
            raise TooManyRequests(
                "too many failed logins from this address; try again later",
                headers={"Retry-After": str(int(FAILURE_WINDOW))},
            )
        in_flight = self._in_flight.get(source, 0)
        if failures + in_flight >= MAX_FAILURES or in_flight >= MAX_PENDING_PER_SOURCE:
            raise TooManyRequests(
                "too many logins from this address are being checked; try again shortly",
                headers={"Retry-After": "1"},
            )
        if self._in_network.get(network, 0) >= MAX_PENDING_PER_NETWORK:
            raise TooManyRequests(
                "too many logins from this network are being checked; try again shortly",
                headers={"Retry-After": "1"},
            )
        if self._pending >= MAX_PENDING:
            raise TooManyRequests(
                "too many logins are being checked; try again shortly",
                headers={"Retry-After": "1"},
            )

    async def _check(
        self,
        key: bytes,
        user: str,
        password: str,
        hashed: bytes | None,
        source: str,
        client: str,
    ) -> str | None:
        """One bcrypt round, its outcome remembered under `key` with the entry it was checked
        against."""
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(self._pool, _matches, password, hashed or self._stand_in)
        if ok and hashed is not None:
            self._verified[key] = Checked(user, hashed)
            return user
        self._refused[key] = Checked(user, hashed)
        self._failures[source] = self._failures.get(source, 0) + 1
        log.get_logger().warning("login failed", user=user[:100], client=client)
        return None

    def _checked_one(self, key: bytes, source: str, network: str, _check: object) -> None:
        """Give the check's places back however it ended, cancelled before it ran included."""
        del self._checking[key]
        self._pending -= 1
        _add(self._in_flight, source, -1)
        _add(self._in_network, network, -1)


def _remembered(
    memory: TTLCache[bytes, Checked], key: bytes, entries: Mapping[str, bytes]
) -> Checked | None:
    """The outcome remembered under `key` while it still holds: while the user's entry is the
    one it was checked against (a check that ran across a reload included)."""
    checked = memory.get(key)
    if checked is None or entries.get(checked.user) != checked.hashed:
        return None
    return checked


def _add(counts: dict[str, int], name: str, n: int) -> None:
    """Change a count of checks under way, forgetting it at zero."""
    if left := counts.get(name, 0) + n:
        counts[name] = left
    else:
        del counts[name]
