"""Challenge-driven upstream auth: `WWW-Authenticate` parsing and a per-scope token cache.

Docker's token spec (distribution docs/spec/auth/token.md): a 401 names a realm; a GET there with
`service` and `scope` (Basic credentials when configured) returns `token`/`access_token`, valid for
`expires_in` seconds (60 when absent, never less).
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from dataclasses import dataclass

import aiohttp
from yarl import URL

from mirror.config.upstreams import UpstreamSettings
from mirror.errors import Denied, UpstreamError, UpstreamTimeout, UpstreamUnavailable

# auth-param = token "=" ( token / quoted-string ), RFC 9110 §11.2; quoted values may hold commas.
_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')
MIN_TOKEN_LIFETIME = 60.0


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


def _same_site(a: str, b: str) -> bool:
    """Whether two hosts share an owner: equal, or the same last two DNS labels."""
    if a == b:
        return True
    la, lb = a.split("."), b.split(".")
    return len(la) >= 2 and len(lb) >= 2 and la[-2:] == lb[-2:] and not a.replace(".", "").isdigit()


class Authenticator:
    """Turns challenges into `Authorization` values for one upstream, caching tokens per scope."""

    def __init__(self, settings: UpstreamSettings, session: aiohttp.ClientSession) -> None:
        self._settings = settings
        self._session = session
        self._upstream_host = URL(settings.url).host or ""
        self._challenge: Challenge | None = None
        self._tokens: dict[str, tuple[str, float]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def _basic(self) -> str | None:
        s = self._settings
        if s.username is None:
            return None
        raw = f"{s.username}:{s.password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    async def authorization(self, scope: str) -> str | None:
        """What to send before any challenge is seen for this request (the last one we saw)."""
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return self._basic
        return await self._bearer(challenge, scope, refresh=False)

    async def answer(self, header: str | None, scope: str, failed: str | None) -> str | None:
        """An `Authorization` for a fresh 401, or None when retrying would not help."""
        challenge = parse_challenge(header or "")
        if challenge is None:
            return None
        self._challenge = challenge
        if challenge.scheme == "basic":
            basic = self._basic
            return basic if basic != failed else None
        token = await self._bearer(challenge, scope, refresh=True)
        return token if token != failed else None

    async def _bearer(self, challenge: Challenge, scope: str, *, refresh: bool) -> str | None:
        realm = challenge.params.get("realm", "")
        service = challenge.params.get("service", "")
        # quay.io often sends no scope: the repository scope is what a pull needs anyway.
        key = f"{realm} {service} {scope}"
        seen = self._tokens.get(key)
        if not refresh and seen and seen[1] > time.monotonic():
            return seen[0]
        async with self._locks.setdefault(key, asyncio.Lock()):
            # Concurrent requests share one token fetch: whoever waited takes the new token.
            current = self._tokens.get(key)
            if current is not seen and current and current[1] > time.monotonic():
                return current[0]
            token, lifetime = await self._fetch_token(realm, service, scope)
            self._tokens[key] = (f"Bearer {token}", time.monotonic() + lifetime - 5)
            return f"Bearer {token}"

    async def _fetch_token(self, realm: str, service: str, scope: str) -> tuple[str, float]:
        url = URL(realm)
        if url.scheme not in ("http", "https") or not url.host:
            raise UpstreamError(f"upstream {self._upstream_host} sent an unusable token realm")
        headers = {}
        # Credentials go only to a realm the upstream's own operator runs.
        if self._basic and _same_site(url.host, self._upstream_host):
            headers["Authorization"] = self._basic
        params = {"scope": scope}
        if service:
            params["service"] = service
        try:
            async with self._session.get(url.update_query(params), headers=headers) as resp:
                if resp.status in (401, 403):
                    raise Denied(f"upstream {self._upstream_host} refused the credentials")
                if resp.status != 200:
                    raise UpstreamError(
                        f"token service of {self._upstream_host} answered {resp.status}"
                    )
                body = await resp.json(content_type=None)
        except (aiohttp.ClientConnectionError, OSError) as e:
            raise UpstreamUnavailable(f"token service of {self._upstream_host} unreachable") from e
        except TimeoutError as e:
            raise UpstreamTimeout(f"token service of {self._upstream_host} timed out") from e
        except ValueError as e:
            raise UpstreamError(f"token service of {self._upstream_host} sent no JSON") from e
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise UpstreamError(f"token service of {self._upstream_host} sent no token")
        try:
            lifetime = float(body.get("expires_in") or MIN_TOKEN_LIFETIME)
        except (TypeError, ValueError):
            lifetime = MIN_TOKEN_LIFETIME
        return token, max(lifetime, MIN_TOKEN_LIFETIME)
