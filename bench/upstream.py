"""The upstream every mirror and proxy pulls from: a docker-registry seeded with bench images.

Upstream traffic is read from the registry's access log (the combined log format carries each
response's size), so "upstream bytes ÷ blob size" counts what the upstream really sent.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.images import make_image, push_image
from tests.support.registry import Registry, start_registry

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
ACCEPT_MANIFESTS = {"Accept": MANIFEST_TYPES}
_LINE = re.compile(r'"([A-Z]+) (\S+) HTTP/[0-9.]+" (\d{3}) (\d+|-)')
_SENTINEL = "__requests_sentinel"


@dataclass(frozen=True)
class SeededImage:
    """What the phases need to know about a pushed image; its bytes are not kept in memory."""

    repo: str
    tag: str
    digest: str
    manifest_size: int
    config_digest: str
    config_size: int
    layer_digest: str
    layer_size: int

    @property
    def size(self) -> int:
        return self.manifest_size + self.config_size + self.layer_size

    def manifest_path(self, reference: str) -> str:
        return f"/v2/{self.repo}/manifests/{reference}"

    def blob_path(self, digest: str) -> str:
        return f"/v2/{self.repo}/blobs/{digest}"


@dataclass(frozen=True)
class Traffic:
    """Requests the upstream answered in a window, and the body bytes of its GET answers."""

    requests: int
    gets: int
    get_bytes: int


class Upstream:
    """A docker-registry whose traffic can be counted between two marks."""

    def __init__(self, workdir: Path) -> None:
        self.registry: Registry = start_registry(workdir)
        self.url = self.registry.url

    def seed(self, repo: str, tag: str, layer_bytes: int, seed: str) -> SeededImage:
        image = make_image(layer_sizes=(layer_bytes,), seed=seed)
        push_image(self.url, repo, tag, image)
        return SeededImage(
            repo=repo,
            tag=tag,
            digest=image.digest,
            manifest_size=len(image.manifest),
            config_digest=image.config.digest,
            config_size=image.config.size,
            layer_digest=image.layers[0].digest,
            layer_size=image.layers[0].size,
        )

    def settle(self, quiet: float = 0.3, timeout: float = 15.0) -> bool:
        """Wait until the upstream has logged nothing new for `quiet` seconds (or `timeout`)."""
        deadline = time.monotonic() + timeout
        size = self.registry.access_log.stat().st_size
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            now_size = self.registry.access_log.stat().st_size
            if now_size != size:
                size, quiet_since = now_size, time.monotonic()
            elif time.monotonic() - quiet_since >= quiet:
                return True
        return False

    def mark(self) -> int:
        """Start counting from now; returns the access log offset to pass to `since`."""
        self.registry.clear_requests()
        return self.registry.access_log.stat().st_size

    def since(self, mark: int) -> Traffic:
        # requests() first makes sure every answered request has reached the log.
        requests = len(self.registry.requests())
        with self.registry.access_log.open("rb") as log:
            log.seek(mark)
            text = log.read().decode(errors="replace")
        gets = get_bytes = 0
        for match in _LINE.finditer(text):
            method, path, _status, size = match.groups()
            if method == "GET" and _SENTINEL not in path:
                gets += 1
                get_bytes += int(size) if size.isdigit() else 0
        return Traffic(requests=requests, gets=gets, get_bytes=get_bytes)

    def stop(self) -> None:
        self.registry.stop()
