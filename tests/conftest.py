"""Fixtures shared by every suite: real upstream registries, seeded images, mirrors, fake upstreams.

The upstream registries are real `docker-registry` processes started once per session and seeded
through their push API; a test that must break an upstream (stop it, re-tag it) gets its own
through `make_registry` or pushes to a repository no other test reads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp.web_app
import pytest
from aiohttp.test_utils import TestClient, TestServer

from mirror.config import Settings, UpstreamSettings
from mirror.server import serving
from mirror.tls import ServerTls
from mirror.upstream.targets import Network
from mirror.workers import listening_socket
from tests.faults import FakeFactory, FakeUpstream
from tests.support import storage
from tests.support.images import (
    Image,
    Index,
    make_image,
    make_index,
    push_image,
    push_index,
)
from tests.support.redis_ha import ClusterNodes, SentinelSet
from tests.support.redis_server import RedisServer
from tests.support.registry import Registry, start_registry
from tests.support.seaweed import Seaweed
from tests.support.served import Served, ServeFactory
from tests.support.storage import ContentStore
from tests.support.tokens import TokenService

BIG_LAYER = 8 * 1024 * 1024


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--storage",
        choices=storage.CHOICES,
        default=storage.CHOICES[0],
        help="where every mirror of the run keeps content: its cache directory (the default), "
        "or a bucket on a SeaweedFS started for the run, behind the cache directory",
    )


# On a bucket, one value of each parameter that picks Redis (a backend or a topology): the
# directory pass runs every value, and a bucket is what replicas share, with their Redis.
S3_PASS_PARAMS = {"metadata": "redis", "shared_through": "redis", "replicas_redis": "server"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a bucket (`--storage=s3`): tests about the cache directory itself are skipped with
    their reason; the Redis variants other than those of `S3_PASS_PARAMS` are left out, and so
    are tests that take a bucket of the session's SeaweedFS themselves (the directory pass runs
    them, just as they would run here)."""
    if config.getoption("storage") == "directory":
        return
    kept, deselected = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        if "seaweed" in getattr(item, "fixturenames", ()) or any(
            params.get(name, value) != value for name, value in S3_PASS_PARAMS.items()
        ):
            deselected.append(item)
            continue
        kept.append(item)
        marker = item.get_closest_marker(storage.DIRECTORY_ONLY)
        if marker is not None:
            reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
            item.add_marker(pytest.mark.skip(reason=f"directory only: {reason}"))
    config.hook.pytest_deselected(items=deselected)
    items[:] = kept


@dataclass(frozen=True)
class Seeded:
    """The images every session registry holds, and where: tests read digests from here."""

    schema2: Image
    oci: Image
    index: Index
    big: Image
    # (repository, tag) of each; the same schema2 image also sits under one and three components.
    schema2_ref: tuple[str, str] = ("seed/schema2", "v1")
    oci_ref: tuple[str, str] = ("seed/oci", "v1")
    index_ref: tuple[str, str] = ("seed/multi", "v1")
    big_ref: tuple[str, str] = ("seed/big", "v1")
    solo_ref: tuple[str, str] = ("solo", "v1")
    deep_ref: tuple[str, str] = ("org/team/app", "v1")


def seed_registry(
    registry: Registry, images: Seeded, auth: TokenService | tuple[str, str] | None = None
) -> None:
    """Push the seeded images to `registry`."""
    push_image(registry.url, *images.schema2_ref, images.schema2, auth=auth)
    push_image(registry.url, *images.oci_ref, images.oci, auth=auth)
    push_index(registry.url, *images.index_ref, images.index, auth=auth)
    push_image(registry.url, *images.big_ref, images.big, auth=auth)
    # A one-component name: the mirror may or may not add `library/`, so both exist upstream.
    solo, tag = images.solo_ref
    push_image(registry.url, solo, tag, images.schema2, auth=auth)
    push_image(registry.url, f"library/{solo}", tag, images.schema2, auth=auth)
    push_image(registry.url, *images.deep_ref, images.schema2, auth=auth)


@pytest.fixture(scope="session")
def seeded() -> Seeded:
    """The images the session registries are seeded with."""
    return Seeded(
        schema2=make_image(layer_sizes=(2048, 4096), seed="schema2"),
        oci=make_image(layer_sizes=(3000,), oci=True, seed="oci"),
        index=make_index(
            [
                make_image(oci=True, arch="amd64", seed="multi"),
                make_image(oci=True, arch="arm64", seed="multi"),
            ]
        ),
        big=make_image(layer_sizes=(BIG_LAYER,), seed="big"),
    )


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory, seeded: Seeded) -> Iterator[Registry]:
    """An anonymous docker-registry holding the seeded images, shared by the session."""
    upstream = start_registry(tmp_path_factory.mktemp("registry"))
    try:
        seed_registry(upstream, seeded)
        yield upstream
    finally:
        upstream.stop()


@pytest.fixture(scope="session")
def token_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenService]:
    """The token service `token_registry` trusts (anonymous pulls allowed)."""
    service = TokenService(tmp_path_factory.mktemp("token-service"))
    try:
        yield service
    finally:
        service.close()


@pytest.fixture(scope="session")
def token_registry(
    tmp_path_factory: pytest.TempPathFactory, seeded: Seeded, token_service: TokenService
) -> Iterator[Registry]:
    """A docker-registry that demands Bearer tokens from `token_service`, like Docker Hub."""
    upstream = start_registry(tmp_path_factory.mktemp("token-registry"), token_auth=token_service)
    try:
        seed_registry(upstream, seeded, auth=token_service)
        yield upstream
    finally:
        upstream.stop()


class RegistryFactory(Protocol):
    def __call__(
        self,
        *,
        token_auth: TokenService | None = None,
        htpasswd: tuple[str, str] | None = None,
        foreign_layers: bool = False,
    ) -> Registry: ...


@pytest.fixture
def make_registry(tmp_path: Path) -> Iterator[RegistryFactory]:
    """Start a private docker-registry for a test that stops, breaks or rewrites its upstream."""
    started: list[Registry] = []

    def make(
        *,
        token_auth: TokenService | None = None,
        htpasswd: tuple[str, str] | None = None,
        foreign_layers: bool = False,
    ) -> Registry:
        upstream = start_registry(
            tmp_path / f"registry-{len(started)}",
            token_auth=token_auth,
            htpasswd=htpasswd,
            foreign_layers=foreign_layers,
        )
        started.append(upstream)
        return upstream

    try:
        yield make
    finally:
        for upstream in started:
            upstream.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server shared by the session; tests keep apart by key prefix."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    """A real master, replica and sentinel shared by the session (tests that fail it over
    start their own)."""
    servers = SentinelSet(tmp_path_factory.mktemp("sentinel"))
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterNodes]:
    """A real three-node Redis Cluster shared by the session."""
    nodes = ClusterNodes(tmp_path_factory.mktemp("cluster"))
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    """A real SeaweedFS with its S3 gateway, shared by the session; tests keep apart by prefix."""
    server = Seaweed(tmp_path_factory.mktemp("seaweed"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", autouse=True)
def content_store(request: pytest.FixtureRequest) -> Iterator[ContentStore]:
    """The store every mirror of the run keeps content in (`--storage`), for the fixtures and
    for the helpers that start `mirror` processes."""
    if request.config.getoption("storage") == "s3":
        store = ContentStore(request.getfixturevalue("seaweed"))
    else:
        store = ContentStore()
    storage.use(store)
    try:
        yield store
    finally:
        storage.use(ContentStore())


@pytest.fixture(autouse=True)
def apps_let_go() -> Iterator[None]:
    """After each test, aiohttp's cache of middleware chains (keyed by the applications, up to
    1024 of them) lets go of the test's apps: else every app of the run stays alive with all it
    holds (a bucket client's botocore session alone is some 12 MB, and a heap that big makes
    each garbage collection take seconds)."""
    yield
    cached = getattr(aiohttp.web_app, "_cached_build_middleware", None)
    if cached is not None:
        cached.cache_clear()


@pytest.fixture(params=["embedded", "redis"])
def metadata(request: pytest.FixtureRequest) -> tuple[str | None, str]:
    """Every mirror test runs on both metadata backends: (redis URL or None, key prefix)."""
    if request.param == "embedded":
        return None, "mirror:"
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url, f"test-{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """The mirror's cache directory for this test."""
    return tmp_path / "cache"


class MirrorFactory(Protocol):
    def __call__(
        self,
        upstream: str | Registry | FakeUpstream,
        *,
        cache_dir: Path | None = None,
        tag_ttl: float = 300.0,
        username: str | None = None,
        password: str | None = None,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
    ) -> Awaitable[TestClient[Any, Any]]: ...


class MirrorFromSettings(Protocol):
    def __call__(
        self, settings: Settings, network: Network | None = None
    ) -> Awaitable[TestClient[Any, Any]]: ...


@pytest.fixture
def mirror_from(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    metadata: tuple[str | None, str],
    content_store: ContentStore,
) -> MirrorFromSettings:
    """Build a mirror app from ready settings, on this test's metadata backend and the run's
    store (unless the settings name a bucket).

    Mirrors on one cache directory share Redis keys and a bucket prefix, as replicas do; others
    are independent.
    """
    from mirror.app import create_app

    async def make(settings: Settings, network: Network | None = None) -> TestClient[Any, Any]:
        prefix = hashlib.sha1(str(settings.cache_dir).encode()).hexdigest()[:8]
        settings = dataclasses.replace(
            content_store.applied(settings),
            redis_url=metadata[0],
            redis_prefix=f"{metadata[1]}{prefix}:",
        )
        return await aiohttp_client(create_app(settings, network))

    return make


@pytest.fixture
async def make_mirror(mirror_from: MirrorFromSettings, cache_dir: Path) -> MirrorFactory:
    """Build a mirror app over `upstream` and return a test client for it.

    Restarting the mirror is closing its client and calling this again with the same cache_dir.
    """

    async def make(
        upstream: str | Registry | FakeUpstream,
        *,
        cache_dir: Path | None = cache_dir,
        tag_ttl: float = 300.0,
        username: str | None = None,
        password: str | None = None,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
    ) -> TestClient[Any, Any]:
        url = upstream if isinstance(upstream, str) else upstream.url
        settings = Settings(
            cache_dir=cache_dir if cache_dir is not None else Path("cache"),
            upstreams=(
                UpstreamSettings(
                    default=True,
                    url=url,
                    username=username,
                    password=password,
                    connect_timeout=connect_timeout,
                    read_timeout=read_timeout,
                ),
            ),
            tag_ttl=tag_ttl,
        )
        return await mirror_from(settings)

    return make


@pytest.fixture
async def make_fake_upstream(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> AsyncIterator[FakeFactory]:
    """Start an in-process fake upstream (see tests/faults.py) on a free loopback port (of
    127.0.0.1, unless another loopback address is given)."""
    fakes: list[FakeUpstream] = []

    async def make(host: str = "127.0.0.1") -> FakeUpstream:
        fake = FakeUpstream()
        server = await aiohttp_server(fake.app(), host=host)
        fake.url = str(server.make_url("")).rstrip("/")
        fake.host = f"{server.host}:{server.port}"
        fakes.append(fake)
        return fake

    try:
        yield make
    finally:
        for fake in fakes:
            fake.release.set()


@pytest.fixture
async def serve(
    registry: Registry, cache_dir: Path, content_store: ContentStore
) -> AsyncIterator[ServeFactory]:
    """Serve the mirror over the session registry, with these settings, for this test (on the
    run's store unless they name a bucket)."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(**settings: Any) -> Served:
            upstream = UpstreamSettings(
                default=True, url=registry.url, connect_timeout=2.0, read_timeout=5.0
            )
            base = Settings(cache_dir=cache_dir, upstreams=(upstream,), host="127.0.0.1", port=0)
            configured = content_store.applied(dataclasses.replace(base, **settings))
            sock = listening_socket(configured)
            port = sock.getsockname()[1]
            stack.callback(sock.close)
            tls = ServerTls.of(configured)
            connections = await stack.enter_async_context(
                serving(configured, sock, tls.context if tls else None, settle=0)
            )
            return Served(port, connections)

        yield start


class LocalMirrorFactory(Protocol):
    def __call__(
        self,
        upstream: Registry,
        *,
        default: bool = False,
        rules: str | None = None,
        cache_dir: Path | None = None,
        **settings: Any,
    ) -> Awaitable[TestClient[Any, Any]]: ...


@pytest.fixture
def local_mirror(
    mirror_from: MirrorFromSettings, cache_dir: Path, tmp_path: Path
) -> LocalMirrorFactory:
    """A mirror of `upstream` (as docker.io) with the local namespace `tests.support.push.LOCAL`,
    the users and access rules of `tests.support.push`."""
    import tomllib

    from mirror.config import LocalSettings
    from mirror.config.access import parse_access
    from tests.support.htpasswd import write_htpasswd
    from tests.support.push import LOCAL, RULES, USERS

    async def make(
        upstream: Registry,
        *,
        default: bool = False,
        rules: str | None = None,
        cache_dir: Path | None = cache_dir,
        **settings: Any,
    ) -> TestClient[Any, Any]:
        """`settings` are further fields of `Settings` (max_uploads, fill_wait, …)."""
        users = write_htpasswd(tmp_path / "users", USERS)
        built = Settings(
            cache_dir=cache_dir or Path("cache"),
            upstreams=(UpstreamSettings(default=True, url=upstream.url),),
            htpasswd=users,
            access=parse_access(tomllib.loads(RULES if rules is None else rules).get("access")),
            local=(LocalSettings(LOCAL, default=default),),
            **settings,
        )
        return await mirror_from(built)

    return make
