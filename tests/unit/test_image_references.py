"""Image references parse and normalise as docker's do; platforms match index entries."""

from __future__ import annotations

import pytest

from mirror.oci.platform import InvalidPlatform, Platform, parse_platform
from mirror.oci.reference import InvalidReference, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("alpine", "docker.io/library/alpine:latest"),
        ("alpine:3.20", "docker.io/library/alpine:3.20"),
        ("library/alpine:3.20", "docker.io/library/alpine:3.20"),
        ("docker.io/library/alpine:3.20", "docker.io/library/alpine:3.20"),
        ("index.docker.io/alpine", "docker.io/library/alpine:latest"),
        ("bitnami/redis:7", "docker.io/bitnami/redis:7"),
        (f"ghcr.io/org/app@{DIGEST}", f"ghcr.io/org/app@{DIGEST}"),
        (f"alpine:3.20@{DIGEST}", f"docker.io/library/alpine:3.20@{DIGEST}"),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/team/app:v1", "localhost:5000/team/app:v1"),
        ("registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.9"),
        ("quay.io/a/b/c:x_y-z.1", "quay.io/a/b/c:x_y-z.1"),
    ],
)
def test_references_normalise_like_docker(text: str, normal: str) -> None:
    """Docker Hub is the default registry, library/ the default namespace, latest the tag."""
    assert str(parse_reference(text)) == normal


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("Alpine", "lowercase"),
        ("docker.io/Library/alpine", "lowercase"),
        ("alpine:", "not a valid"),
        ("alpine:-x", "invalid tag"),
        ("alpine@sha256:1234", "digest"),
        ("alpine@md5:" + "a" * 32, "digest"),
        ("a//b", "invalid repository name"),
        ("-x.io/app", "not a registry host"),
        ("host:port/app", "not a registry host"),
        ("alpine:1@" + DIGEST + "@" + DIGEST, "not a valid"),
        ("a" * 600, "not a valid"),
    ],
)
def test_malformed_references_say_what_is_wrong(text: str, why: str) -> None:
    """A reference that does not parse is refused with a message naming the problem."""
    with pytest.raises(InvalidReference, match=why):
        parse_reference(text)


def test_platforms_match_index_entries() -> None:
    """os/arch must match; a variant asked for must match (arm64 means v8 when unsaid)."""
    arm64 = {"os": "linux", "architecture": "arm64"}
    assert parse_platform("linux/arm64").matches(arm64)
    assert parse_platform("linux/arm64/v8").matches(arm64)
    assert not parse_platform("linux/arm64/v9").matches(arm64)
    assert parse_platform("linux/aarch64") == Platform("linux", "arm64")
    assert not parse_platform("linux/amd64").matches(arm64)
    assert not parse_platform("linux/amd64").matches(None)
    assert not parse_platform("linux/amd64").matches({"os": "unknown", "architecture": "unknown"})
    for bad in ("linux", "linux/amd64/v1/x", "linux/", "lin ux/amd64"):
        with pytest.raises(InvalidPlatform):
            parse_platform(bad)
