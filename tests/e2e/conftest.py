"""Session fixtures: upstream registry, the mirror (real CLI), containerd, dockerd, skopeo, podman.

Everything listens on free loopback ports or on unix sockets under one temp dir, and every
process is stopped by its own PID when the session ends, whatever happened in between.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.catalogue import Catalogue, build_catalogue, seed
from tests.e2e.clients import Containerd, Docker, Podman, Skopeo
from tests.e2e.daemons import MirrorServer, http_ok, require_binary
from tests.support.registry import Registry, start_registry

# Short, so the offline tests also prove that expired tags are served stale when upstream is down.
TAG_TTL = 2.0


@pytest.fixture(scope="session")
def e2e_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def catalogue() -> Catalogue:
    return build_catalogue()


@pytest.fixture(scope="session")
def upstream(e2e_dir: Path, catalogue: Catalogue) -> Iterator[Registry]:
    """docker-registry on loopback, seeded with the whole catalogue."""
    require_binary("docker-registry")
    registry = start_registry(e2e_dir / "upstream")
    try:
        seed(registry.url, catalogue)
        registry.clear_requests()
        yield registry
    finally:
        registry.stop()


@pytest.fixture
def upstream_outage(upstream: Registry) -> Iterator[Callable[[], None]]:
    """A function that takes the upstream down; it comes back when the test ends."""

    def begin() -> None:
        upstream.stop()
        assert not http_ok(f"{upstream.url}/v2/"), "the upstream still answers"
        # Let every cached tag expire, so tag pulls must be answered from stale cache.
        time.sleep(TAG_TTL + 0.5)

    try:
        yield begin
    finally:
        upstream.start()


@pytest.fixture(scope="session")
def mirror(e2e_dir: Path, upstream: Registry) -> Iterator[MirrorServer]:
    """`python -m mirror serve` with the upstream registry as its "Docker Hub"."""
    server = MirrorServer.start(e2e_dir / "mirror", upstream.url, tag_ttl=TAG_TTL)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def containerd(e2e_dir: Path, mirror: MirrorServer) -> Iterator[Containerd]:
    daemon = Containerd(e2e_dir / "containerd", mirror.url)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
        # Unpacked layers are big and only useful while the daemon runs.
        shutil.rmtree(daemon.workdir / "root", ignore_errors=True)


@pytest.fixture(scope="session")
def docker(e2e_dir: Path, containerd: Containerd, mirror: MirrorServer) -> Iterator[Docker]:
    daemon = Docker(e2e_dir / "docker", containerd, mirror.url, mirror.host)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(daemon.workdir / "data", ignore_errors=True)


@pytest.fixture(scope="session")
def skopeo(e2e_dir: Path) -> Skopeo:
    return Skopeo(e2e_dir / "skopeo")


@pytest.fixture(scope="session")
def podman(e2e_dir: Path, mirror: MirrorServer) -> Iterator[Podman]:
    client = Podman(e2e_dir / "podman", mirror.host)
    client.check_usable()
    try:
        yield client
    finally:
        client.run("rmi", "--all", "--force", timeout=120)
