"""The `/v2/` routes: pulls of mirrored and local repositories, the push API of local
namespaces (everything else there is UNSUPPORTED), the catalog, and the health probes beside
them."""

from __future__ import annotations

from aiohttp import web

from mirror.api import handlers, health, push
from mirror.api.catalog import catalog
from mirror.api.keys import SETTINGS
from mirror.api.middlewares import Handler
from mirror.api.peer import add_peer_routes


def _pull_only(mirrored: Handler, _local: push.LocalHandler) -> Handler:
    return mirrored


# What a request addresses, by the route it took, as `mirror_requests_total` labels it (every
# other route under /v2/ is "other"): pulls, pushes and deletes alike.
REQUEST_KINDS = {
    "/v2/{name}/manifests/{reference}": "manifest",
    "/v2/{name}/blobs/{digest}": "blob",
    "/v2/{name}/tags/list": "tags",
    "/v2/{name}/referrers/{digest}": "referrers",
}


def setup_routes(app: web.Application) -> None:
    # Without local namespaces, the pull handlers as they are, at no cost.
    pull_or_local = push.local_or if app[SETTINGS].local else _pull_only

    # `name` may span any number of path components; `.+` is greedy, so the last
    # `/manifests/`, `/blobs/` or `/tags/list` decides what is asked for.
    manifests = "/v2/{name:.+}/manifests/{reference:[^/]+}"
    blobs = "/v2/{name:.+}/blobs/{digest:[^/]+}"
    session = "/v2/{name:.+}/blobs/uploads/{session:[^/]+}"
    app.router.add_get("/v2/", handlers.ping)
    app.router.add_get("/v2/_catalog", catalog)
    app.router.add_post("/v2/{name:.+}/blobs/uploads/", push.write_only(push.start_upload))
    app.router.add_post("/v2/{name:.+}/blobs/uploads", push.write_only(push.start_upload))
    app.router.add_get(session, push.write_only(push.upload_status))
    app.router.add_patch(session, push.write_only(push.upload_chunk))
    app.router.add_put(session, push.write_only(push.finish_upload))
    app.router.add_delete(session, push.write_only(push.cancel_upload))
    app.router.add_get(manifests, pull_or_local(handlers.manifest, push.manifest))
    app.router.add_put(manifests, push.write_only(push.put_manifest))
    app.router.add_delete(manifests, push.write_only(push.delete_manifest))
    app.router.add_get(blobs, pull_or_local(handlers.blob, push.blob))
    app.router.add_delete(blobs, push.write_only(push.delete_blob))
    app.router.add_get("/v2/{name:.+}/tags/list", pull_or_local(handlers.tags_list, push.tags_list))
    app.router.add_get(
        "/v2/{name:.+}/referrers/{digest:[^/]+}",
        pull_or_local(handlers.referrers, push.referrers),
    )
    app.router.add_route("*", "/v2", handlers.unsupported)
    app.router.add_route("*", "/v2/{tail:.*}", handlers.unsupported)
    # Off /v2/, so no registry client ever mistakes them for registry content.
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    add_peer_routes(app)
