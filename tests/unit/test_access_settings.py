"""The TLS, login and `[[access]]` settings: validated at load, one line naming the option."""

from __future__ import annotations

from pathlib import Path

import pytest

from mirror.auth.access import PULL, AccessPolicy
from mirror.config import ConfigError, load_settings


def _load(tmp_path: Path, toml: str, **flags: str) -> object:
    config = tmp_path / "mirror.toml"
    config.write_text(toml)
    return load_settings(str(config), flags, environ={})


def _policy(tmp_path: Path, toml: str) -> AccessPolicy:
    config = tmp_path / "mirror.toml"
    config.write_text(toml)
    settings = load_settings(str(config), {"htpasswd": str(tmp_path / "users")}, environ={})
    return AccessPolicy(settings.access)


def test_access_tables_grant_per_user_with_deny_inside_the_table(tmp_path: Path) -> None:
    """A table grants its allow patterns minus its deny patterns to the users it names."""
    policy = _policy(
        tmp_path,
        """
        [[access]]
        users = ["ci"]
        allow = ["docker.io/library/*", "ghcr.io/org/*"]
        deny = ["docker.io/library/secret*"]

        [[access]]
        users = ["*"]
        allow = ["quay.io/public/*"]

        [[access]]
        anonymous = true
        allow = ["docker.io/library/alpine"]
        """,
    )
    assert policy.allows("ci", PULL, "docker.io/library/alpine")
    assert policy.allows("ci", PULL, "ghcr.io/org/team/app")  # `*` spans `/`
    assert not policy.allows("ci", PULL, "docker.io/library/secret-app")
    assert not policy.allows("ci", PULL, "ghcr.io/other/app")
    assert policy.allows("bob", PULL, "quay.io/public/x")
    assert not policy.allows("bob", PULL, "docker.io/library/busybox")
    assert policy.allows(None, PULL, "docker.io/library/alpine")
    assert not policy.allows(None, PULL, "quay.io/public/x")  # "*" is logged-in users only
    assert not policy.allows("ci", "push", "docker.io/library/alpine")
    assert policy.lets_anonymous_in


def test_no_access_tables_let_everyone_pull_everything() -> None:
    """Without [[access]] every client that got in may pull anything."""
    policy = AccessPolicy(load_settings(None, {}, environ={}).access)
    assert policy.allows(None, PULL, "docker.io/library/alpine")
    assert policy.allows("anyone", PULL, "ghcr.io/x/y")
    assert not policy.lets_anonymous_in


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('allow = ["docker.io/*"]', "access[0]: names no one"),
        ('users = ["ci"]', "access[0].allow: required"),
        ('users = ["ci"]\nallow = []', "access[0].allow: must name at least one"),
        ('users = ["ci"]\nallow = ["*"]\nactions = ["tag"]', "'tag' is not an action"),
        ('users = ["ci"]\nallow = ["*"]\nrepos = ["x"]', "access[0].repos: unknown key"),
        ('users = ["a:b"]\nallow = ["*"]', "access[0].users: must be a list of user names"),
        ('users = "ci"\nallow = ["*"]', "access[0].users: must be a list"),
        ('anonymous = "maybe"\nallow = ["*"]', "access[0].anonymous"),
        ('users = ["ci"]\nallow = ["*"]\ndeny = "x"', "access[0].deny: must be a list"),
    ],
)
def test_bad_access_tables_are_refused_naming_the_key(
    tmp_path: Path, table: str, message: str
) -> None:
    """Each malformed [[access]] table stops start-up with a message naming its key."""
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _load(tmp_path, f"[[access]]\n{table}\n", htpasswd=str(tmp_path / "users"))


def test_access_for_users_needs_a_user_file(tmp_path: Path) -> None:
    """Rules naming users are refused when no --htpasswd can log anyone in."""
    with pytest.raises(ConfigError, match=r"access\[0\]\.users: no --htpasswd"):
        _load(tmp_path, '[[access]]\nusers = ["ci"]\nallow = ["*"]\n')


def test_tls_cert_and_key_go_together() -> None:
    """--tls-cert without --tls-key (or the reverse) is one line naming the missing option."""
    with pytest.raises(ConfigError, match=r"^--tls-key: required with --tls-cert$"):
        load_settings(None, {"tls_cert": "cert.pem"}, environ={})
    with pytest.raises(ConfigError, match=r"^--tls-cert: required with --tls-key$"):
        load_settings(None, {}, environ={"MIRROR_TLS_KEY": "key.pem"})


def test_security_options_come_from_flags_environment_and_file(tmp_path: Path) -> None:
    """The new options have a flag, a MIRROR_* variable and a file key, like every option."""
    config = tmp_path / "mirror.toml"
    config.write_text('tls_cert = "a.crt"\ntls_key = "a.key"\nshutdown_grace = 5\n')
    settings = load_settings(
        str(config), {"htpasswd": "users"}, environ={"MIRROR_SHUTDOWN_GRACE": "7"}
    )
    assert (settings.tls_cert, settings.tls_key) == (Path("a.crt"), Path("a.key"))
    assert settings.htpasswd == Path("users")
    assert settings.shutdown_grace == 7.0
    with pytest.raises(ConfigError, match="--shutdown-grace"):
        load_settings(None, {"shutdown_grace": "0"}, environ={})
