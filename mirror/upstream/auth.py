"""Challenge-driven upstream auth: `WWW-Authenticate` parsing and a bounded per-scope token cache.

Docker's token spec (distribution docs/spec/auth/token.md): a 401 names a realm; a GET there with
`service` and `scope` (Basic credentials when configured) returns `token`/`access_token`, valid for
`expires_in` seconds (60 when absent, never less).

Credentials go to the upstream's own origin, and to a token realm only when its operator is the
upstream's: the same host, or a host under the same registrable domain by the Public Suffix List
(auth.docker.io for registry-1.docker.io; not another customer's name under co.uk or
s3.amazonaws.com). A realm on an IP address gets them only if it is the upstream's own address.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import re
from dataclasses import dataclass

import aiohttp
from cachetools import TLRUCache
from publicsuffixlist import PublicSuffixList
from yarl import URL

from mirror import jsondoc
from mirror.config.upstreams import UpstreamSettings
from mirror.errors import (
    Denied,
    MirrorError,
    UpstreamError,
    UpstreamThrottled,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from mirror.flight import SingleFlight
from mirror.upstream.headers import retry_after
from mirror.upstream.pool import MAX_TOKEN_SIZE, Pool, read_limited
from mirror.upstream.targets import RefusedAddress, TargetGuard, literal_address

# auth-param = token "=" ( token / quoted-string ), RFC 9110 §11.2; quoted values may hold commas.
_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')
# b64token (RFC 6750 §2.1) in spirit: visible ASCII only, so a token can never break a header.
_TOKEN = re.compile(r"[\x21-\x7e]{1,16384}")
MIN_TOKEN_LIFETIME = 60.0
# Tokens are renewed this long before they expire, so none runs out on the way.
_EXPIRY_MARGIN = 5.0
# Bytes of tokens kept per authenticator (a Docker Hub token is 1-3 KB: hundreds of scopes).
TOKEN_CACHE_BYTES = 1 << 20
_ENTRY_OVERHEAD = 256


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str  # "bearer" or "basic", lower-cased
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge | None:
    """The first Bearer or Basic challenge in a `WWW-Authenticate` value."""
    scheme, _, rest = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme not in ("bearer", "basic"):
        return None
    params = {}
    for match in _PARAM.finditer(rest):
        value = match.group(2) if match.group(2) is not None else match.group(3)
        params[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", value or "")
    return Challenge(scheme, params)


def is_insufficient_scope(header: str | None) -> bool:
    """Whether a 401 says the token is valid but grants nothing here (RFC 6750 §3.1), which is
    how Docker Hub answers for a repository that does not exist."""
    challenge = parse_challenge(header or "")
    return challenge is not None and challenge.params.get("error") == "insufficient_scope"


@functools.cache
def _suffixes() -> PublicSuffixList:
    return PublicSuffixList()  # the list the package ships: no network access


def may_receive_credentials(upstream: URL, realm: URL) -> bool:
    """Whether `realm` is run by the upstream's operator (see the module docstring)."""
    host, other = (upstream.host or "").lower(), (realm.host or "").lower()
    if upstream.scheme == "https" and realm.scheme != "https":
        return False
    if host == other:
        return True
    if literal_address(host) is not None or literal_address(other) is not None:
        return False
    site = _suffixes().privatesuffix(host)
    return site is not None and site == _suffixes().privatesuffix(other)


@dataclass(frozen=True, slots=True)
class _Token:
    authorization: str
    lifetime: float


class Authenticator:
    """Turns challenges into `Authorization` values for one origin, caching tokens per scope.

    The cache is bounded in bytes and each token leaves it when it expires; a token being
    fetched is shared by every request that needs it, and forgotten once it arrives."""

    def __init__(
        self, settings: UpstreamSettings, origin: URL, pool: Pool, guard: TargetGuard
    ) -> None:
        self._settings = settings
        self._origin = origin
        self._pool = pool
        self._guard = guard
        self._challenge: Challenge | None = None
        self._tokens: TLRUCache[tuple[str, str, str], _Token] = TLRUCache(
            maxsize=TOKEN_CACHE_BYTES,
            ttu=lambda _key, token, now: now + token.lifetime - _EXPIRY_MARGIN,
            getsizeof=lambda token: len(token.authorization) + _ENTRY_OVERHEAD,
        )
        # Concurrent requests share one token fetch; a caller that goes away does not cancel it.
        self._fetching: SingleFlight[tuple[str, str, str], _Token] = SingleFlight(note=False)

    @property
    def cached_tokens(self) -> int:
        """How many tokens are cached now."""
        return len(self._tokens)

    @property
    def fetches_in_flight(self) -> int:
        return len(self._fetching)

    @property
    def _basic(self) -> str | None:
        s = self._settings
        if s.username is None:
            return None
        raw = f"{s.username}:{s.password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    async def authorization(self, scope: str) -> str | None:
        """What to send before any challenge is seen for this request: the answer to the last
        challenge that was answered.

        Only a guess: the request may need no token at all (an upstream may challenge for
        some repositories only). So a token that cannot be had now sends the request without
        one, for its own challenge, if any, to decide; and nothing is guessed again until a
        realm gives a token for a challenge."""
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return self._basic
        try:
            return await self._bearer(challenge, scope, None)
        except MirrorError:
            if self._challenge is challenge:
                self._challenge = None
            return None

    async def answer(self, header: str | None, scope: str, failed: str | None) -> str | None:
        """An `Authorization` for a fresh 401, or None when retrying would not help."""
        challenge = parse_challenge(header or "")
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            self._challenge = challenge
            basic = self._basic
            return basic if basic != failed else None
        token = await self._bearer(challenge, scope, failed)
        # Kept for guessing only once its realm gave a token: a broken realm named in one
        # repository's challenge must not stand in front of requests that need none.
        self._challenge = challenge
        return token if token != failed else None

    async def _bearer(self, challenge: Challenge, scope: str, failed: str | None) -> str:
        """A token for the challenge: the cached one, unless that is what `failed`."""
        # quay.io often sends no scope: the repository scope is what a pull needs anyway.
        key = (challenge.params.get("realm", ""), challenge.params.get("service", ""), scope)
        cached = self._tokens.get(key)
        if cached is not None and cached.authorization != failed:
            return cached.authorization
        return (await self._fetching.run(key, lambda: self._fetch_and_keep(key))).authorization

    async def _fetch_and_keep(self, key: tuple[str, str, str]) -> _Token:
        token = await self._fetch(key)
        if len(token.authorization) + _ENTRY_OVERHEAD <= TOKEN_CACHE_BYTES:
            self._tokens[key] = token
        return token

    async def _fetch(self, key: tuple[str, str, str]) -> _Token:
        realm, service, scope = key
        name = self._settings.name
        try:
            url = URL(realm)
            self._guard.check(self._origin, url, "token realm")
        except ValueError:  # yarl could not make a URL (or a host) of it
            raise UpstreamError(f"{name} sent an unusable token realm") from None
        headers = {}
        if self._basic and may_receive_credentials(self._origin, url):
            headers["Authorization"] = self._basic
        params = {"scope": scope}
        if service:
            params["service"] = service
        what = f"the token service of {name}"
        try:
            # Its own deadline: the fetch is shared, and outlives any one request waiting on it.
            async with (
                asyncio.timeout(self._pool.deadline),
                self._pool.open("GET", url.update_query(params), headers) as resp,
            ):
                if resp.status in (401, 403):
                    raise Denied(f"{what} refused the mirror's credentials")
                if resp.status == 429:  # auth.docker.io throttles token requests of its own
                    wait = retry_after(resp.headers.get("Retry-After"))
                    raise UpstreamThrottled(
                        f"{what} is rate limiting token requests",
                        headers={"Retry-After": f"{wait:.0f}"},
                    )
                if resp.status != 200:
                    raise UpstreamError(f"{what} answered {resp.status}")
                body = jsondoc.parse(
                    await read_limited(resp, MAX_TOKEN_SIZE, f"a token from {name}")
                )
        except aiohttp.ClientConnectorError as e:
            if isinstance(e.os_error, RefusedAddress):
                raise UpstreamError(str(e.os_error)) from e
            raise UpstreamUnavailable(f"{what} is unreachable") from e
        except (aiohttp.ClientConnectionError, OSError) as e:
            raise UpstreamUnavailable(f"{what} is unreachable") from e
        except TimeoutError as e:
            raise UpstreamTimeout(f"{what} timed out") from e
        except (aiohttp.ClientError, ValueError) as e:
            raise UpstreamError(f"{what} sent no usable answer") from e
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            raise UpstreamError(f"{what} sent no usable token")
        try:
            lifetime = float(body.get("expires_in") or MIN_TOKEN_LIFETIME)
        except (TypeError, ValueError, OverflowError):
            lifetime = MIN_TOKEN_LIFETIME
        # NaN compares false with everything: max() would keep it.
        if not lifetime >= MIN_TOKEN_LIFETIME:
            lifetime = MIN_TOKEN_LIFETIME
        return _Token(f"Bearer {token}", min(lifetime, 86400.0))
