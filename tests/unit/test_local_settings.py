"""The `[local]` tables and push grants: validated at load, one line naming the option."""

from __future__ import annotations

from pathlib import Path

import pytest

from mirror.auth.access import DELETE, PULL, PUSH, AccessPolicy
from mirror.config import ConfigError, LocalSettings, load_settings

LOCAL = '[local."registry.example.internal"]\n'


def _load(tmp_path: Path, toml: str, **flags: str) -> object:
    config = tmp_path / "mirror.toml"
    config.write_text(toml)
    return load_settings(str(config), flags, environ={})


def test_local_namespaces_are_read_with_their_default(tmp_path: Path) -> None:
    """Each table is a namespace; `default = true` marks the one unprefixed names go to."""
    settings = _load(
        tmp_path,
        LOCAL + 'default = true\n[local."builds.local:5000"]\n',
        htpasswd=str(tmp_path / "users"),
    )
    assert settings.local == (  # type: ignore[attr-defined]
        LocalSettings("registry.example.internal", default=True),
        LocalSettings("builds.local:5000"),
    )


@pytest.mark.parametrize(
    ("toml", "flags", "message"),
    [
        (LOCAL, {}, "local.registry.example.internal: local namespaces take pushes"),
        ('[local."ghcr.io"]\n', {"htpasswd": "u"}, "local.ghcr.io: also configured as an upstream"),
        ('[local."docker.io"]\n', {"htpasswd": "u"}, "local.docker.io: docker.io names Docker Hub"),
        ('[local."Not A Host"]\n', {"htpasswd": "u"}, "local.Not A Host: the key must be"),
        (LOCAL + "colour = 1\n", {"htpasswd": "u"}, "local.registry.example.internal.colour"),
        (
            LOCAL + 'default = true\n[local."b.local"]\ndefault = true\n',
            {"htpasswd": "u"},
            "local.b.local.default: only one",
        ),
        (
            '[[access]]\nanonymous = true\nallow = ["*"]\nactions = ["pull", "push"]\n',
            {},
            "access[0].actions: clients that did not log in may only pull",
        ),
    ],
)
def test_bad_local_settings_stop_start_up_with_one_line(
    tmp_path: Path, toml: str, flags: dict[str, str], message: str
) -> None:
    """Each mistake is a ConfigError whose message names the table or option."""
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, toml, **flags)
    assert str(caught.value).startswith(message), str(caught.value)


def test_push_and_delete_need_a_grant_and_a_login(tmp_path: Path) -> None:
    """Without rules everyone pulls and nobody pushes; a grant of push is not one of delete;
    anonymous clients never push, whatever the rules say of pulls."""
    assert AccessPolicy(()).allows("ci", PULL, "docker.io/library/alpine")
    assert not AccessPolicy(()).allows("ci", PUSH, "registry.local/app")
    settings = _load(
        tmp_path,
        '[[access]]\nusers = ["ci"]\nallow = ["registry.local/*"]\nactions = ["pull", "push"]\n'
        '[[access]]\nanonymous = true\nallow = ["*"]\n',
        htpasswd=str(tmp_path / "users"),
    )
    policy = AccessPolicy(settings.access)  # type: ignore[attr-defined]
    assert policy.allows("ci", PUSH, "registry.local/app")
    assert not policy.allows("ci", DELETE, "registry.local/app")
    assert not policy.allows(None, PUSH, "registry.local/app")
    assert policy.allows(None, PULL, "registry.local/app")
