"""A missing tag or repository fails each client with "not found", never a mirror error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.catalogue import TAG, Catalogue
from tests.e2e.checks import NOT_FOUND, assert_not_found_without_errors
from tests.e2e.clients import Containerd, Docker, Podman, Skopeo
from tests.e2e.daemons import MirrorServer

pytestmark = pytest.mark.e2e

# dockerd logs the mirror's answer, then falls back to Docker Hub (refused here) and reports that.
DOCKER_MIRROR_ERROR = re.compile(r"Attempting next endpoint for pull after error: (.*)")
# podman lists the mirror's answer separately from the primary registry's.
PODMAN_MIRROR_ERROR = re.compile(r"Mirrors also failed: \[(.*?)\]\)")


@pytest.fixture(params=["tag", "repo"])
def missing(request: pytest.FixtureRequest, catalogue: Catalogue) -> tuple[str, str]:
    """(repo, reference) of a tag missing from an existing repo, or of a repo that never existed."""
    if request.param == "tag":
        repo = catalogue["docker-schema2"].repo
        return repo, f"{repo}:no-such-tag"
    repo = "library/e2e-no-such-repo"
    return repo, f"{repo}:{TAG}"


def test_docker_pull_of_missing_image_fails_with_not_found(
    docker: Docker, mirror: MirrorServer, missing: tuple[str, str]
) -> None:
    """dockerd reports the mirror's "manifest unknown" before falling back; the mirror says 404."""
    repo, ref = missing
    mark, docker_mark = mirror.log_size(), docker.log_size()
    outcome = docker.pull(ref)
    assert not outcome.ok, outcome.explain()
    errors = DOCKER_MIRROR_ERROR.findall(docker.log_since(docker_mark))
    assert errors, f"dockerd logged no mirror error:\n{docker.log_since(docker_mark)[-3000:]}"
    assert NOT_FOUND.search(errors[0]), f"mirror error seen by dockerd: {errors[0]}"
    assert_not_found_without_errors(mirror, mark, repo)


def test_ctr_pull_of_missing_image_fails_with_not_found(
    containerd: Containerd, mirror: MirrorServer, missing: tuple[str, str]
) -> None:
    """`ctr images pull` exits non-zero saying "not found"; the mirror says 404."""
    repo, ref = missing
    mark = mirror.log_size()
    outcome = containerd.pull(ref)
    assert not outcome.ok, outcome.explain()
    assert NOT_FOUND.search(outcome.output), outcome.explain()
    assert_not_found_without_errors(mirror, mark, repo)


def test_skopeo_copy_of_missing_image_fails_with_not_found(
    skopeo: Skopeo, mirror: MirrorServer, missing: tuple[str, str], tmp_path: Path
) -> None:
    """`skopeo copy` exits non-zero saying "manifest unknown"; the mirror says 404."""
    repo, ref = missing
    mark = mirror.log_size()
    outcome = skopeo.copy(f"{mirror.host}/{ref}", f"oci:{tmp_path / 'out'}")
    assert not outcome.ok, outcome.explain()
    assert NOT_FOUND.search(outcome.output), outcome.explain()
    assert_not_found_without_errors(mirror, mark, repo)


def test_podman_pull_of_missing_image_fails_with_not_found(
    podman: Podman, mirror: MirrorServer, missing: tuple[str, str]
) -> None:
    """`podman pull` exits non-zero; its report of the mirror says "manifest unknown"."""
    repo, ref = missing
    mark = mirror.log_size()
    outcome = podman.pull(ref)
    assert not outcome.ok, outcome.explain()
    from_mirror = PODMAN_MIRROR_ERROR.search(outcome.output)
    assert from_mirror, outcome.explain()
    assert NOT_FOUND.search(from_mirror.group(1)), outcome.explain()
    assert_not_found_without_errors(mirror, mark, repo)
