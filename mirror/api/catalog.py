"""`GET /v2/_catalog?n=&last=`: the repositories the endpoint holds, as the caller may see them
(distribution's catalog API: sorted, paged with `n`, `last` and an RFC 8288 `Link`)."""

from __future__ import annotations

import functools
import json

from aiohttp import web
from yarl import URL

from mirror.api.keys import ACCESS, LOCAL, USER
from mirror.auth.access import PULL
from mirror.pullthrough.listings import page_size


async def catalog(request: web.Request) -> web.Response:
    n = page_size(request.query.get("n"))
    may_pull = functools.partial(request.app[ACCESS].allows, request.get(USER), PULL)
    page = await request.app[LOCAL].catalog.page(may_pull, n, request.query.get("last"))
    headers = {"Content-Type": "application/json"}
    if page.more:
        following = {"n": str(n), "last": page.tags[-1]}
        headers["Link"] = f'<{URL.build(path="/v2/_catalog", query=following)}>; rel="next"'
    body = json.dumps({"repositories": page.tags}).encode()
    return web.Response(body=body, headers=headers)
