"""The login and access middleware in front of `/v2/`: present only when the settings ask for
`--htpasswd` or `[[access]]` rules, so a mirror without them pays nothing.

Access is decided as soon as routing knows the registry and repository, before any handler
runs, so a refused request never touches the cache: its answer, and the time it takes, are the
same whether the content is cached or not. Health probes stay outside, unauthenticated.
"""

from __future__ import annotations

import functools

from aiohttp import web

from mirror.api.keys import ACCESS, ROUTER, USER
from mirror.api.middlewares import Handler
from mirror.auth.access import DELETE, PULL, PUSH
from mirror.auth.htpasswd import HtpasswdFile
from mirror.auth.logins import Logins
from mirror.config import Settings
from mirror.errors import Denied, Unauthorized
from mirror.pullthrough.routing import LocalRoute

_DOING = {PULL: "pulling", PUSH: "pushing to", DELETE: "deleting from"}


def setup_client_auth(app: web.Application, settings: Settings) -> None:
    """Put the middleware in `app` when logins or access rules are configured."""
    if settings.htpasswd is None and not settings.access:
        return
    logins = Logins(HtpasswdFile(settings.htpasswd)) if settings.htpasswd else None
    policy = app[ACCESS]
    # With a user file, a client that did not log in gets nowhere unless a rule names it.
    anonymous_in = logins is None or policy.lets_anonymous_in

    @web.middleware
    async def client_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != "/v2" and not request.path.startswith("/v2/"):
            return await handler(request)
        user = None
        if logins is not None:
            user = await logins.user(request.headers.get("Authorization"), request.remote or "")
            if user is None and not anonymous_in:
                raise Unauthorized("log in to pull from this mirror")
            if user is not None:
                request[USER] = user
        name = request.match_info.get("name")
        if name is None:  # the ping (or a refused method): nothing of a repository is at stake
            if user is None and logins is not None and request.path in ("/v2", "/v2/"):
                # Clients learn from the ping's challenge that they may log in (docker login
                # sends its credentials only after one).
                raise Unauthorized("log in to pull from this mirror")
            return await handler(request)
        route = request.app[ROUTER].resolve(name, request.query.get("ns"))
        target = f"{route.registry}/{route.repo}"
        # Only local namespaces take writes; a write to a mirrored registry is checked as the
        # pull it is not, and its handler answers 405.
        action = _action(request) if isinstance(route, LocalRoute) else PULL
        if action != PULL and _from_another_site(request):
            raise Denied("a web page of another site may not write to this registry")
        if not policy.allows(user, action, target):
            if user is None and logins is not None:
                raise Unauthorized(f"log in to {action} {target[:300]}")
            raise Denied(f"{_DOING[action]} {target[:300]} is not allowed")
        return await handler(request)

    app.middlewares.append(client_auth)
    if logins is not None:
        app.on_cleanup.append(functools.partial(_close, logins))


def _action(request: web.Request) -> str:
    """What a request to a local repository does: every request to an upload (its status and
    its cancelling included) is part of a push."""
    if "session" in request.match_info or request.method == "POST":
        return PUSH
    return {"GET": PULL, "HEAD": PULL, "DELETE": DELETE}.get(request.method, PUSH)


def _from_another_site(request: web.Request) -> bool:
    """Whether a browser sends the request for a page of another site: a form posted there
    carries the login a browser keeps for the mirror (cross-site request forgery). Registry
    clients send neither header; browsers send `Sec-Fetch-Site`, or at least `Origin`, with
    every such write."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = request.headers.get("Origin")
    return origin is not None and origin != f"{request.scheme}://{request.host}"


async def _close(logins: Logins, _app: web.Application) -> None:
    logins.close()
