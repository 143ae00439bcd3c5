"""The protocol vocabulary: digests, names, tags and Accept negotiation."""

from __future__ import annotations

import pytest

from mirror.errors import DigestInvalid, NameInvalid, TagInvalid
from mirror.oci.digest import Digest, looks_like_digest
from mirror.oci.mediatypes import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    accepted_types,
    is_acceptable,
)
from mirror.oci.names import validate_name, validate_tag

HEX = "a" * 64


def test_digest_round_trips_and_hashes() -> None:
    """A parsed digest prints as it came, and `of` hashes bytes the same way."""
    assert str(Digest.parse(f"sha256:{HEX}")) == f"sha256:{HEX}"
    assert Digest.of(b"") == Digest.parse(
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


@pytest.mark.parametrize(
    "text",
    [
        "sha256:" + "a" * 63,
        "sha256:" + "A" * 64,
        "md5:" + "a" * 32,
        "sha256:../../etc",
        "",
        "sha256",
        f"sha256:{HEX}\n",
    ],
)
def test_bad_digests_are_rejected(text: str) -> None:
    """Only well-formed sha256/sha512 digests become file names."""
    with pytest.raises(DigestInvalid):
        Digest.parse(text)


def test_references_with_a_colon_are_digests() -> None:
    """Tags cannot hold colons, so a colon marks a digest (even an invalid one)."""
    assert looks_like_digest(f"sha256:{HEX}")
    assert looks_like_digest("sha256:totallywrong")
    assert not looks_like_digest("latest")
    assert not looks_like_digest(f"sha256:{HEX}\n")


@pytest.mark.parametrize("name", ["alpine", "library/alpine", "a/b/c/d", "my-org/app_1.2", "a__b"])
def test_valid_names(name: str) -> None:
    """Names of any depth that follow the spec's grammar pass."""
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["..", "a/../b", "/abs", "A", "a//b", "a/", ".a", "a\0b", "a" * 256, "a/_tags", "alpine\n"],
)
def test_invalid_names(name: str) -> None:
    """Traversal, upper case, empty components, NUL and over-long names are refused."""
    with pytest.raises(NameInvalid):
        validate_name(name)


@pytest.mark.parametrize("tag", [".hidden", "-x", "a" * 129, "a/b", "", "a b", "latest\n"])
def test_invalid_tags(tag: str) -> None:
    """Tags follow `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`."""
    with pytest.raises(TagInvalid):
        validate_tag(tag)


def test_accept_lines_are_merged_and_parameters_dropped() -> None:
    """Several header lines and comma lists count as one set."""
    accepted = accepted_types([f"{OCI_MANIFEST}; q=0.5", f"{DOCKER_MANIFEST}, {OCI_INDEX}"])
    assert accepted == frozenset({OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX})


def test_missing_accept_or_wildcard_accepts_everything() -> None:
    """No Accept, or containerd's `*/*`, means any media type."""
    assert accepted_types([]) is None
    assert accepted_types([f"{DOCKER_MANIFEST}, */*"]) is None
    assert is_acceptable(OCI_INDEX, None)


def test_index_types_need_to_be_accepted() -> None:
    """An index or OCI manifest is not served to a client that does not ask for it."""
    only_schema2 = frozenset({DOCKER_MANIFEST})
    assert not is_acceptable(OCI_INDEX, only_schema2)
    assert not is_acceptable(DOCKER_MANIFEST_LIST, only_schema2)
    assert not is_acceptable(OCI_MANIFEST, only_schema2)
    assert is_acceptable(DOCKER_MANIFEST, frozenset({OCI_MANIFEST}))
