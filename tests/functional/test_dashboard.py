"""deploy/grafana/mirror.json: a dashboard Grafana can import, querying only metrics the mirror
exports."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from mirror.app import create_app
from mirror.config import Settings, UpstreamSettings
from tests.conftest import Seeded
from tests.faults import FakeUpstream, RateLimit, content, rate_limited
from tests.support import storage
from tests.support.metrics import scrape
from tests.support.oci import ACCEPT_ALL
from tests.support.redis_server import RedisServer

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "mirror.json"
METRIC = re.compile(r"\bmirror_[a-z_]+\b")
# The sample names a family's name stands for, as PromQL may write them.
SUFFIXES = ("_total", "_bucket", "_sum", "_count")


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found += [panel, *panel.get("panels", [])]
    return found


def _queries(dashboard: dict[str, Any]) -> list[str]:
    queries = [t["expr"] for p in _panels(dashboard) for t in p.get("targets", ())]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        queries.append(query["query"] if isinstance(query, dict) else str(query))
    return queries


def test_the_dashboard_is_one_grafana_can_import() -> None:
    """It parses; every panel has a unique id, a place on the grid and Prometheus queries
    through the dashboard's data source variable; the promised panels are there."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 30
    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels:
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys(), panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for target in [panel, *panel["targets"]]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    titles = " | ".join(p["title"].lower() for p in panels)
    for topic in ("hit ratio", "bytes saved", "latency", "failures", "limit", "circuit", "slots"):
        assert topic in titles, topic


async def test_every_metric_the_dashboard_queries_is_exported(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    make_fake_upstream: Callable[[], Awaitable[FakeUpstream]],
    redis_server: RedisServer,
    seeded: Seeded,
    tmp_path: Path,
) -> None:
    """A mirror with Redis that pulled through a rate-limited upstream exports every metric
    the dashboard's queries name (those that count failures at least declared)."""
    fake = await make_fake_upstream()
    image = seeded.oci
    limit = RateLimit()
    fake.route("/v2/lib/app/manifests/v1", rate_limited(image.manifest, image.media_type, limit))
    layer = image.layers[0]
    fake.route(f"/v2/lib/app/blobs/{layer.digest}", content(layer.data))
    settings = Settings(
        cache_dir=tmp_path / "cache",
        upstreams=(UpstreamSettings(default=True, url=fake.url),),
        redis_url=redis_server.url,
        redis_prefix="dashboard:",
    )
    client = await aiohttp_client(create_app(storage.current().applied(settings)))
    manifest = await client.get("/v2/lib/app/manifests/v1", headers={"Accept": ACCEPT_ALL})
    assert manifest.status == 200
    for _ in range(2):
        assert (await client.get(f"/v2/lib/app/blobs/{layer.digest}")).status == 200
    found = await scrape(client)
    exported = found.names() | set(found.families)
    wanted = {
        name
        for query in _queries(json.loads(DASHBOARD.read_text()))
        for name in METRIC.findall(query)
    }
    assert wanted
    for name in sorted(wanted):
        family = next((name.removesuffix(s) for s in SUFFIXES if name.endswith(s)), name)
        assert name in exported or family in exported, f"{name} is not in /metrics"
    assert found.get("mirror_redis_up") == 1
