"""The `/v2/` routes a pull-only registry serves (everything else there is UNSUPPORTED), and the
health probes beside them."""

from __future__ import annotations

from aiohttp import web

from mirror.api import handlers, health


def setup_routes(app: web.Application) -> None:
    # `name` may span any number of path components; `.+` is greedy, so the last
    # `/manifests/`, `/blobs/` or `/tags/list` decides what is asked for.
    app.router.add_get("/v2/", handlers.ping)
    app.router.add_get("/v2/{name:.+}/manifests/{reference:[^/]+}", handlers.manifest)
    app.router.add_get("/v2/{name:.+}/blobs/{digest:[^/]+}", handlers.blob)
    app.router.add_get("/v2/{name:.+}/tags/list", handlers.tags_list)
    app.router.add_get("/v2/{name:.+}/referrers/{digest:[^/]+}", handlers.referrers)
    app.router.add_route("*", "/v2", handlers.unsupported)
    app.router.add_route("*", "/v2/{tail:.*}", handlers.unsupported)
    # Off /v2/, so no registry client ever mistakes them for registry content.
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
