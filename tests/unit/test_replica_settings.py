"""Replica mode's settings: the peer URL, the shared secret (or its file), and what they need."""

from __future__ import annotations

from pathlib import Path

import pytest

from mirror.config import ConfigError, load_settings

SECRET = "0123456789abcdef-secret"
REDIS = "redis://127.0.0.1:6379/0"


def test_a_replica_takes_its_peer_url_and_the_secret_from_the_environment() -> None:
    """`--peer-url` with Redis and MIRROR_PEER_SECRET is replica mode; the secret stays out of
    the settings' repr, so it is never logged."""
    settings = load_settings(
        None,
        {"peer_url": "http://10.0.0.5:5000/", "redis_url": REDIS},
        environ={"MIRROR_PEER_SECRET": SECRET},
    )
    assert (settings.peer_url, settings.peer_secret) == ("http://10.0.0.5:5000", SECRET)
    assert SECRET not in repr(settings)


def test_the_secret_may_come_from_a_file(tmp_path: Path) -> None:
    """`--peer-secret-file` is read at start-up, its surrounding white space ignored."""
    secret_file = tmp_path / "peer-secret"
    secret_file.write_text(f"  {SECRET}\n")
    settings = load_settings(
        None,
        {"peer_url": "http://m1:5000", "redis_url": REDIS, "peer_secret_file": str(secret_file)},
        environ={},
    )
    assert settings.peer_secret == SECRET


@pytest.mark.parametrize(
    ("flags", "environ", "message"),
    [
        ({"peer_url": "http://m1:5000"}, {"MIRROR_PEER_SECRET": SECRET}, "^--peer-url: .*redis"),
        ({"peer_url": "http://m1:5000", "redis_url": REDIS}, {}, "^--peer-url: .*secret"),
        ({"peer_url": "ftp://m1", "redis_url": REDIS}, {}, "^--peer-url: "),
        ({"peer_url": "http://u:p@m1", "redis_url": REDIS}, {}, "^--peer-url: "),
        ({}, {"MIRROR_PEER_SECRET": "short"}, "^peer_secret: "),
        ({}, {"MIRROR_PEER_SECRET": "has a space in the middle"}, "^peer_secret: "),
        ({"peer_secret_file": "/nonexistent/secret"}, {}, "^--peer-secret-file: cannot read"),
        (
            {"peer_secret_file": "/nonexistent/secret"},
            {"MIRROR_PEER_SECRET": SECRET},
            "^--peer-secret-file: .*not both",
        ),
    ],
)
def test_replica_settings_that_cannot_work_stop_start_up(
    flags: dict[str, str], environ: dict[str, str], message: str
) -> None:
    """A peer URL without Redis or a secret, a URL that is not http(s) or carries credentials,
    a weak secret, an unreadable secret file, or a secret given twice: refused, naming the
    option."""
    with pytest.raises(ConfigError, match=message):
        load_settings(None, flags, environ=environ)
