"""`/healthz` and `/readyz`: the questions load balancers and Kubernetes probes ask, off `/v2/`.

`/healthz` is liveness: 200 whenever the process answers requests at all, so only a wedged or
dead process gets restarted. `/readyz` is readiness: 503 only when this process cannot do its
job, which is when the cache directory cannot be written (every miss would fail). A Redis that
cannot be reached leaves it ready (200, `"status": "degraded"`): the mirror then serves from disk
with an in-process store, and taking every replica out of rotation because their one shared
Redis is gone would turn a mirror that shares less into no mirror at all.

Kubernetes counts any status from 200 to 399 as success and anything else as failure; load
balancers check for 2xx, so a readiness answer is exactly 200 or 503, with the reason in the body.
"""

from __future__ import annotations

from aiohttp import web

from mirror.api.keys import READINESS


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    report = await request.app[READINESS].check()
    # Returned, never raised: the request middleware renders raised HTTP errors in OCI terms.
    return web.json_response(report.body(), status=report.http_status)
