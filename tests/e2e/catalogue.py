"""The images the upstream is seeded with, one set per client and per test module, so that every
first pull is cold whatever order the tests run in.

Names live under `library/` because the mirror plays Docker Hub: `docker pull library/NAME:TAG`
and `docker.io/library/NAME:TAG` are how clients spell official images.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from tests.support.images import Image, Index, make_image, make_index, push_image, push_index

TAG = "1.0"
CLIENTS = ("docker", "containerd", "skopeo", "podman")
BIG_LAYER_SIZE = 210 * 1024 * 1024
MANY_LAYERS = 30


@dataclass(frozen=True)
class Seeded:
    """An image (or index) pushed to the upstream as `library/NAME:TAG`."""

    name: str
    image: Image
    index: Index | None = None

    @property
    def repo(self) -> str:
        return f"library/{self.name}"

    @property
    def tag_ref(self) -> str:
        return f"{self.repo}:{TAG}"

    @property
    def digest(self) -> str:
        """What the tag points at: the index digest for an index, else the manifest digest."""
        return self.index.digest if self.index else self.image.digest

    @property
    def digest_ref(self) -> str:
        return f"{self.repo}@{self.digest}"

    def platform(self, arch: str) -> Image:
        """The child image for `arch` of an index."""
        assert self.index is not None
        return next(image for image in self.index.images if image.arch == arch)


class Catalogue:
    """Every seeded image by key, e.g. `catalogue["docker-schema2"]`."""

    def __init__(self) -> None:
        self.items: dict[str, Seeded] = {}

    def add(self, seeded: Seeded) -> None:
        self.items[seeded.name] = seeded

    def __getitem__(self, key: str) -> Seeded:
        return self.items[f"e2e-{key}"]

    def __iter__(self) -> Iterator[Seeded]:
        return iter(self.items.values())


def build_catalogue() -> Catalogue:
    """Build every image in memory (the 200 MiB one included) with distinct contents."""
    catalogue = Catalogue()
    for client in CLIENTS:
        # "hit", "offline" and "login" belong to test_cache_hits.py, test_offline.py and
        # test_login.py.
        kinds = (
            ("schema2", False),
            ("oci", True),
            ("hit", False),
            ("offline", True),
            ("login", True),
        )
        for kind, oci in kinds:
            name = f"e2e-{client}-{kind}"
            catalogue.add(Seeded(name, make_image(layer_sizes=(4096, 1024), oci=oci, seed=name)))
    # test_push.py: pulled through the mirror, then pushed to its local namespace.
    for client in ("docker", "podman", "skopeo", "containerd"):
        name = f"e2e-{client}-push"
        catalogue.add(Seeded(name, make_image(layer_sizes=(4096, 1024), oci=True, seed=name)))
    for client in ("docker", "containerd"):
        name = f"e2e-{client}-index"
        images = [make_image(oci=True, arch=arch, seed=name) for arch in ("amd64", "arm64")]
        catalogue.add(Seeded(name, images[0], make_index(images)))
    # test_bundles.py: exported from the mirror, imported into one with no upstream.
    for kind, oci in (("schema2", False), ("oci", True)):
        name = f"e2e-bundle-{kind}"
        catalogue.add(Seeded(name, make_image(layer_sizes=(4096, 1024), oci=oci, seed=name)))
    name = "e2e-bundle-index"
    images = [make_image(oci=True, arch=arch, seed=name) for arch in ("amd64", "arm64")]
    catalogue.add(Seeded(name, images[0], make_index(images)))
    name = "e2e-docker-layers"
    catalogue.add(Seeded(name, make_image(layer_sizes=(2048,) * MANY_LAYERS, seed=name)))
    name = "e2e-docker-big"
    catalogue.add(Seeded(name, make_image(layer_sizes=(BIG_LAYER_SIZE,), seed=name)))
    return catalogue


def seed(registry_url: str, catalogue: Catalogue) -> None:
    """Push the whole catalogue to the upstream registry."""
    for item in catalogue:
        if item.index is not None:
            push_index(registry_url, item.repo, TAG, item.index)
        else:
            push_image(registry_url, item.repo, TAG, item.image)
