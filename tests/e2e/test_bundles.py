"""Across an air gap: images exported from the mirror, imported into a fresh mirror that has no
upstream at all, then pulled from it by every client; and the archive read by `ctr` and skopeo
directly."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.catalogue import Catalogue, Seeded
from tests.e2e.checks import assert_ok
from tests.e2e.clients import Containerd, Docker, Outcome, Podman, Skopeo, hosts_toml, run
from tests.e2e.conftest import TAG_TTL
from tests.e2e.daemons import MirrorServer
from tests.support.registry import Registry

pytestmark = pytest.mark.e2e

BUNDLED = ("bundle-schema2", "bundle-oci", "bundle-index")
# Port 1 is never served here: the far mirror's upstream refuses every connection at once.
NO_UPSTREAM = "http://127.0.0.1:1"


def mirror_command(*args: str | Path) -> Outcome:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIRROR_")}
    return run([sys.executable, "-m", "mirror", *(str(a) for a in args)], env=env, timeout=300)


def full_name(item: Seeded) -> str:
    return f"docker.io/{item.tag_ref}"


@pytest.fixture(scope="module")
def bundle(e2e_dir: Path, mirror: MirrorServer, upstream: Registry, catalogue: Catalogue) -> Path:
    """Exported with --pull on the session mirror's cache directory while that mirror runs."""
    path = e2e_dir / "bundle.tar"
    outcome = mirror_command(
        "export", "--pull", "--upstream", upstream.url, "--cache-dir", mirror.cache_dir,
        "-o", path, *(full_name(catalogue[key]) for key in BUNDLED),
    )  # fmt: skip
    assert_ok(outcome)
    return path


@pytest.fixture(scope="module")
def far_mirror(e2e_dir: Path, bundle: Path) -> Iterator[MirrorServer]:
    """A fresh mirror whose cache holds only the imported bundle, and whose upstream is gone."""
    workdir = e2e_dir / "far-mirror"
    outcome = mirror_command(
        "import", "--upstream", NO_UPSTREAM, "--cache-dir", workdir / "cache", bundle
    )
    assert_ok(outcome)
    server = MirrorServer.start(workdir, NO_UPSTREAM, tag_ttl=TAG_TTL)
    try:
        yield server
    finally:
        server.stop()


def test_docker_pulls_imported_images_by_tag_and_digest(
    docker: Docker, far_mirror: MirrorServer, catalogue: Catalogue
) -> None:
    """`docker pull` from the far mirror gives the upstream's image, by tag and by digest."""
    for key in ("bundle-schema2", "bundle-index"):
        item = catalogue[key]
        for ref in (item.tag_ref, item.digest_ref):
            name = f"{far_mirror.host}/{ref}"
            assert_ok(docker.pull(name))
            assert docker.image_id(name) == item.image.config.digest
            docker.remove(name)


def test_ctr_pulls_imported_images_through_hosts_toml(
    containerd: Containerd, far_mirror: MirrorServer, catalogue: Catalogue, e2e_dir: Path
) -> None:
    """`ctr images pull` with the far mirror as docker.io's server: every platform's content."""
    hosts = e2e_dir / "far-hosts"
    (hosts / "docker.io").mkdir(parents=True, exist_ok=True)
    (hosts / "docker.io" / "hosts.toml").write_text(hosts_toml(far_mirror.url))
    for key in ("bundle-oci", "bundle-index"):
        item = catalogue[key]
        for ref in (item.tag_ref, item.digest_ref):
            pull = ("images", "pull", "--hosts-dir", str(hosts), "--snapshotter", "native")
            assert_ok(containerd.run(*pull, "--all-platforms", f"docker.io/{ref}"))
            assert containerd.image_digest(ref) == item.digest
            images = item.index.images if item.index else [item.image]
            assert {b.digest for i in images for b in i.blobs} <= containerd.content_digests()
            containerd.remove(ref)


def test_podman_pulls_imported_images(
    podman: Podman, far_mirror: MirrorServer, catalogue: Catalogue
) -> None:
    """`podman pull` from the far mirror, by tag and by digest."""
    item = catalogue["bundle-oci"]
    for ref in (item.tag_ref, item.digest_ref):
        name = f"{far_mirror.host}/{ref}"
        assert_ok(
            podman.run("pull", "--tls-verify=false", "--signature-policy", str(podman.policy), name)
        )
        found = podman.run("image", "inspect", "--format", "{{.Id}}", name, timeout=30)
        assert found.stdout.strip() == item.image.config.digest.removeprefix("sha256:")
        podman.run("rmi", "--force", name, timeout=60)


def test_skopeo_copies_imported_images_byte_for_byte(
    skopeo: Skopeo, far_mirror: MirrorServer, catalogue: Catalogue, tmp_path: Path
) -> None:
    """`skopeo copy docker://FAR/...` gets the exact manifest bytes the upstream served."""
    for key in BUNDLED:
        item = catalogue[key]
        target = tmp_path / key
        assert_ok(skopeo.copy(f"{far_mirror.host}/{item.tag_ref}", f"dir:{target}"))
        image = item.index.images[0] if item.index else item.image
        assert (target / "manifest.json").read_bytes() == image.manifest


def test_ctr_imports_the_bundle_as_it_is(
    containerd: Containerd, bundle: Path, catalogue: Catalogue
) -> None:
    """`ctr images import BUNDLE.tar` names each image by its full reference, at its digest."""
    for key in BUNDLED:
        containerd.remove(catalogue[key].tag_ref)
    assert_ok(
        containerd.run(
            "images", "import", "--all-platforms", "--snapshotter", "native", str(bundle)
        )
    )
    for key in BUNDLED:
        item = catalogue[key]
        assert containerd.image_digest(item.tag_ref) == item.digest, key
        assert {b.digest for b in item.image.blobs} <= containerd.content_digests()


def test_skopeo_reads_the_bundle_as_it_is(
    skopeo: Skopeo, bundle: Path, catalogue: Catalogue, tmp_path: Path
) -> None:
    """`skopeo copy oci-archive:BUNDLE:docker.io/...` of an OCI index keeps its digest."""
    item = catalogue["bundle-index"]
    target = tmp_path / "copied"
    assert_ok(
        skopeo.run("copy", "--all", f"oci-archive:{bundle}:{full_name(item)}", f"oci:{target}")
    )
    index = json.loads((target / "index.json").read_text())
    assert [entry["digest"] for entry in index["manifests"]] == [item.digest]
