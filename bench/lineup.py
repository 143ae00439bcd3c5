"""What the benchmark compares: the mirror in four set-ups and two references (nginx's caching
proxy, the CNCF registry's proxy mode), each started fresh, with an empty cache, in front of the
same upstream."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.context import Context
from bench.nginx import NginxCache
from bench.servers import MirrorServer, start_proxy_registry
from tests.support.redis_server import RedisServer


@dataclass(frozen=True)
class Entrant:
    name: str
    kind: str  # "mirror", "nginx-cache" or "proxy"
    workers: int = 1
    redis: bool = False
    metrics: bool = True

    @property
    def is_mirror(self) -> bool:
        return self.kind == "mirror"


EMBEDDED_W1 = Entrant("mirror embedded w1", "mirror", 1, False)
EMBEDDED_W2 = Entrant("mirror embedded w2", "mirror", 2, False)
REDIS_W1 = Entrant("mirror redis w1", "mirror", 1, True)
REDIS_W2 = Entrant("mirror redis w2", "mirror", 2, True)
NGINX_CACHE = Entrant("nginx cache", "nginx-cache")
CNCF_PROXY = Entrant("docker-registry proxy", "proxy")
# Two set-ups again without metrics: what counting costs a hit, measured in the same rounds.
METRICS_OFF = " metrics off"
EMBEDDED_W1_OFF = Entrant(f"mirror embedded w1{METRICS_OFF}", "mirror", 1, False, metrics=False)
EMBEDDED_W2_OFF = Entrant(f"mirror embedded w2{METRICS_OFF}", "mirror", 2, False, metrics=False)
MIRRORS = (EMBEDDED_W1, EMBEDDED_W2, REDIS_W1, REDIS_W2)
LINEUP = (*MIRRORS, NGINX_CACHE, CNCF_PROXY)


@dataclass
class Running:
    """A started entrant: where it answers, its process (for memory), how to stop it."""

    entrant: Entrant
    url: str
    pid: int
    stop: Callable[[], None]
    cache: Path  # what it stored (its logs are kept elsewhere)
    mirror: MirrorServer | None = None
    redis: RedisServer | None = None

    def discard(self) -> None:
        """Stop it and remove its cache: big blobs add up over the runs."""
        self.stop()
        shutil.rmtree(self.cache, ignore_errors=True)


def start(ctx: Context, entrant: Entrant, *, upstream_url: str | None = None) -> Running:
    """A fresh instance of `entrant` (its own empty cache), answering."""
    upstream = upstream_url or ctx.upstream.url
    label = entrant.name.replace(" ", "-")
    if entrant.kind == "nginx-cache":
        nginx = NginxCache(ctx.scratch(label), upstream, ctx.plan.tag_ttl)
        nginx.start()
        return Running(entrant, nginx.url, nginx.pid, nginx.stop, nginx.cache)
    if entrant.kind == "proxy":
        workdir = ctx.scratch(label)
        registry = start_proxy_registry(workdir, upstream)
        assert registry.pid is not None
        return Running(entrant, registry.url, registry.pid, registry.stop, workdir / "storage")
    redis = None
    if entrant.redis:
        redis = RedisServer(ctx.scratch(f"redis-{label}"))
        redis.start()
    extra_args: list[str] = []
    if not entrant.metrics:
        config = ctx.scratch(f"config-{label}") / "mirror.toml"
        config.write_text("metrics = false\n")
        extra_args = ["--config", str(config)]
    mirror = ctx.mirror(
        label,
        workers=entrant.workers,
        redis_url=redis.url if redis else None,
        upstream_url=upstream,
        extra_args=extra_args,
    )
    try:
        mirror.start()
    except BaseException:
        mirror.stop()
        if redis:
            redis.stop()
        raise

    def stop() -> None:
        mirror.stop()
        if redis:
            redis.stop()

    return Running(entrant, mirror.url, mirror.pid, stop, mirror.cache_dir, mirror, redis)
