"""Parsing upstream auth challenges."""

from __future__ import annotations

from mirror.upstream.auth import parse_challenge


def test_bearer_challenge_with_commas_in_quotes() -> None:
    """Quoted values may contain commas (a scope listing several actions)."""
    challenge = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/alpine:pull,push"'
    )
    assert challenge is not None
    assert challenge.scheme == "bearer"
    assert challenge.params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/alpine:pull,push",
    }


def test_basic_challenge_and_unquoted_values() -> None:
    """Basic challenges and token-form values parse too; unknown schemes are ignored."""
    challenge = parse_challenge("Basic realm=private")
    assert challenge is not None
    assert (challenge.scheme, challenge.params) == ("basic", {"realm": "private"})
    assert parse_challenge("Negotiate abc") is None
    assert parse_challenge("") is None
