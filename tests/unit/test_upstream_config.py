"""The [upstreams] tables: built-ins, the default, credentials, TTL rules, refusals by name."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from mirror.config import ConfigError, Settings, TtlRule, UpstreamSettings, load_settings

BUILT_INS = {
    "docker.io": "https://registry-1.docker.io",
    "ghcr.io": "https://ghcr.io",
    "quay.io": "https://quay.io",
    "registry.k8s.io": "https://registry.k8s.io",
    "gcr.io": "https://gcr.io",
}


def by_name(settings: Settings) -> dict[str, UpstreamSettings]:
    return {u.name: u for u in settings.upstreams}


def load(tmp_path: Path, text: str, flags: dict[str, str] | None = None, **env: str) -> Settings:
    config = tmp_path / "mirror.toml"
    config.write_text(text)
    return load_settings(str(config), flags or {}, environ=env)


def test_without_tables_the_well_known_registries_are_built_in() -> None:
    """No file: docker.io (the default), ghcr.io, quay.io, registry.k8s.io and gcr.io."""
    settings = load_settings(None, {}, environ={})
    upstreams = by_name(settings)
    assert set(BUILT_INS) <= set(upstreams)
    for name, url in BUILT_INS.items():
        assert upstreams[name].url == url, name
    assert [u.name for u in settings.upstreams if u.default] == ["docker.io"]
    assert settings.upstream.name == "docker.io"
    assert settings.upstream.url == "https://registry-1.docker.io"


def test_with_tables_exactly_those_upstreams_are_configured(tmp_path: Path) -> None:
    """Tables replace the built-ins; names are the registry hosts, ports included."""
    settings = load(
        tmp_path,
        '[upstreams."docker.io"]\nurl = "https://registry-1.docker.io"\ndefault = true\n'
        '[upstreams."127.0.0.1:5001"]\nurl = "http://127.0.0.1:5001"\n',
    )
    upstreams = by_name(settings)
    assert set(upstreams) == {"docker.io", "127.0.0.1:5001"}
    assert upstreams["127.0.0.1:5001"].url == "http://127.0.0.1:5001"
    assert not upstreams["127.0.0.1:5001"].default
    assert settings.upstream.name == "docker.io"


def test_a_single_upstream_is_the_default_by_itself(tmp_path: Path) -> None:
    """One table needs no `default = true`."""
    settings = load(tmp_path, '[upstreams."ghcr.io"]\nurl = "https://ghcr.io"\n')
    assert [u.name for u in settings.upstreams] == ["ghcr.io"]
    assert settings.upstream.name == "ghcr.io"
    assert settings.upstream.default


@pytest.mark.parametrize(
    "text",
    [
        # Two defaults.
        '[upstreams."a.test"]\nurl = "https://a.test"\ndefault = true\n'
        '[upstreams."b.test"]\nurl = "https://b.test"\ndefault = true\n',
        # No default among several.
        '[upstreams."a.test"]\nurl = "https://a.test"\n[upstreams."b.test"]\nurl = "https://b.test"\n',
    ],
    ids=["two-defaults", "no-default"],
)
def test_exactly_one_default_upstream_is_required(tmp_path: Path, text: str) -> None:
    """Two defaults, or none among several, stop start-up naming `upstreams`."""
    with pytest.raises(ConfigError, match="upstreams"):
        load(tmp_path, text)


def test_an_upstream_built_in_code_is_not_the_default_unless_it_says_so() -> None:
    """`UpstreamSettings(name, url)` is a plain upstream; `default=True` makes the default."""
    plain = UpstreamSettings(name="ghcr.io", url="https://ghcr.io")
    assert plain.default is False
    chosen = UpstreamSettings(name="quay.io", url="https://quay.io", default=True)
    assert Settings(upstreams=(plain, chosen)).upstream.name == "quay.io"


def test_upstream_flag_env_and_top_level_key_set_the_default_url(tmp_path: Path) -> None:
    """`--upstream URL` keeps working: it moves the default upstream, the others stay put."""
    assert (
        load_settings(None, {"upstream": "http://127.0.0.1:5999"}, environ={}).upstream.url
        == "http://127.0.0.1:5999"
    )
    from_env = load_settings(None, {}, environ={"MIRROR_UPSTREAM": "http://127.0.0.1:6000"})
    assert from_env.upstream.url == "http://127.0.0.1:6000"
    assert from_env.upstream.name == "docker.io"
    assert by_name(from_env)["ghcr.io"].url == "https://ghcr.io"
    tables = (
        '[upstreams."a.test"]\nurl = "https://a.test"\n'
        '[upstreams."b.test"]\nurl = "https://b.test"\ndefault = true\n'
    )
    settings = load(tmp_path, f'upstream = "http://127.0.0.1:6001"\n{tables}')
    assert by_name(settings)["b.test"].url == "http://127.0.0.1:6001"
    assert by_name(settings)["a.test"].url == "https://a.test"
    flagged = load(tmp_path, tables, flags={"upstream": "http://127.0.0.1:6002/"})
    assert by_name(flagged)["b.test"].url == "http://127.0.0.1:6002"
    assert flagged.upstream.name == "b.test"


def test_every_per_upstream_option_is_read(tmp_path: Path) -> None:
    """Timeouts, connections, TTLs and rules, allow/deny, rate-limit reserve and breaker knobs."""
    settings = load(
        tmp_path,
        "tag_ttl = 120\n"
        '[upstreams."docker.io"]\n'
        'url = "https://registry-1.docker.io"\n'
        "default = true\n"
        "tag_ttl = 600\n"
        'ttl = [{ tags = "latest", seconds = 60 }, { tags = "v*", seconds = 86400 }]\n'
        "connect_timeout = 5\n"
        "read_timeout = 20\n"
        "api_timeout = 25\n"
        "max_connections = 50\n"
        'allow = ["library/*"]\n'
        'deny = ["library/secret*"]\n'
        "rate_limit_reserve = 7\n"
        "breaker_failures = 4\n"
        "breaker_reset = 2.5\n"
        '[upstreams."ghcr.io"]\n'
        'url = "https://ghcr.io"\n',
    )
    assert settings.tag_ttl == 120.0
    hub = by_name(settings)["docker.io"]
    assert hub.tag_ttl == 600.0
    assert hub.ttl_rules == (
        TtlRule(pattern="latest", seconds=60.0),
        TtlRule(pattern="v*", seconds=86400.0),
    )
    assert (hub.connect_timeout, hub.read_timeout, hub.max_connections) == (5.0, 20.0, 50)
    assert hub.api_deadline == 25.0
    assert hub.allow == ("library/*",)
    assert hub.deny == ("library/secret*",)
    assert (hub.rate_limit_reserve, hub.breaker_failures, hub.breaker_reset) == (7, 4, 2.5)


def test_an_upstream_without_options_gets_the_documented_defaults(tmp_path: Path) -> None:
    """Only a URL: 10 s connect, 30 s read, 100 connections, global TTL, no rules, no creds."""
    ghcr = load(tmp_path, '[upstreams."ghcr.io"]\nurl = "https://ghcr.io"\n').upstream
    assert (ghcr.connect_timeout, ghcr.read_timeout, ghcr.max_connections) == (10.0, 30.0, 100)
    assert ghcr.api_timeout is None and ghcr.api_deadline == 60.0  # twice the read timeout
    assert ghcr.tag_ttl == 300.0 and ghcr.ttl_rules == ()  # the global TTL, resolved once
    assert ghcr.allow == () and ghcr.deny == ()
    assert (ghcr.rate_limit_reserve, ghcr.breaker_failures, ghcr.breaker_reset) == (10, 3, 5.0)
    assert ghcr.username is None and ghcr.password is None


def test_api_timeout_follows_the_read_timeout_unless_set(tmp_path: Path) -> None:
    """Unset, the deadline is two read timeouts, wherever the read timeout came from; set in
    the environment, it applies to every upstream under their own tables."""
    text = '[upstreams."a.test"]\nurl = "https://a.test"\n[upstreams."b.test"]\n'
    text += 'url = "https://b.test"\ndefault = true\nread_timeout = 4\napi_timeout = 3\n'
    upstreams = by_name(load(tmp_path, text, MIRROR_READ_TIMEOUT="7"))
    assert (upstreams["a.test"].api_deadline, upstreams["b.test"].api_deadline) == (14.0, 3.0)
    upstreams = by_name(load(tmp_path, text, MIRROR_API_TIMEOUT="9"))
    assert (upstreams["a.test"].api_deadline, upstreams["b.test"].api_deadline) == (9.0, 3.0)


def test_passwords_come_from_the_file_or_the_named_variable_and_never_print(
    tmp_path: Path,
) -> None:
    """`password` or `password_env` (read from the environment given), hidden from repr."""
    settings = load(
        tmp_path,
        '[upstreams."docker.io"]\nurl = "https://registry-1.docker.io"\ndefault = true\n'
        'username = "bot"\npassword_env = "HUB_TOKEN_FOR_TEST"\n'
        '[upstreams."ghcr.io"]\nurl = "https://ghcr.io"\n'
        'username = "gh-bot"\npassword = "ghcr-Secret-1"\n',
        HUB_TOKEN_FOR_TEST="hub-Secret-2",
    )
    upstreams = by_name(settings)
    assert (upstreams["docker.io"].username, upstreams["docker.io"].password) == (
        "bot",
        "hub-Secret-2",
    )
    assert (upstreams["ghcr.io"].username, upstreams["ghcr.io"].password) == (
        "gh-bot",
        "ghcr-Secret-1",
    )
    for text in (repr(settings), str(settings), repr(upstreams["ghcr.io"])):
        assert "hub-Secret-2" not in text and "ghcr-Secret-1" not in text


def test_a_missing_password_variable_names_password_env(tmp_path: Path) -> None:
    """A variable that is not set is a start-up error, not an anonymous upstream."""
    with pytest.raises(ConfigError, match="password_env"):
        load(
            tmp_path,
            '[upstreams."ghcr.io"]\nurl = "https://ghcr.io"\n'
            'username = "bot"\npassword_env = "SURELY_NOT_SET_3F1A"\n',
        )


def test_credentials_file_entries_are_found_by_registry_host(tmp_path: Path) -> None:
    """config.json `auths`: Docker Hub under its index URL, others by host; auth or user+pass."""
    docker_config = tmp_path / "config.json"
    docker_config.write_text(
        json.dumps(
            {
                "auths": {
                    "https://index.docker.io/v1/": {
                        "auth": base64.b64encode(b"hub-user:hub-Pass:with-colon").decode()
                    },
                    "ghcr.io": {"username": "gh-user", "password": "gh-Pass"},
                    "quay.io": {"auth": base64.b64encode(b"quay-user:quay-Pass").decode()},
                }
            }
        )
    )
    settings = load(
        tmp_path,
        "".join(
            f'[upstreams."{name}"]\nurl = "{url}"\ncredentials_file = "{docker_config}"\n'
            + ("default = true\n" if name == "docker.io" else "")
            for name, url in [
                ("docker.io", "https://registry-1.docker.io"),
                ("ghcr.io", "https://ghcr.io"),
                ("quay.io", "https://quay.io"),
            ]
        ),
    )
    upstreams = by_name(settings)
    creds = {name: (u.username, u.password) for name, u in upstreams.items()}
    assert creds["docker.io"] == ("hub-user", "hub-Pass:with-colon")
    assert creds["ghcr.io"] == ("gh-user", "gh-Pass")
    assert creds["quay.io"] == ("quay-user", "quay-Pass")
    for secret in ("hub-Pass", "gh-Pass", "quay-Pass"):
        assert secret not in repr(settings)


def test_an_unreadable_credentials_file_names_credentials_file(tmp_path: Path) -> None:
    """A missing or malformed config.json stops start-up naming the option."""
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    for path in (tmp_path / "absent.json", broken):
        with pytest.raises(ConfigError, match="credentials_file"):
            load(
                tmp_path,
                f'[upstreams."ghcr.io"]\nurl = "https://ghcr.io"\ncredentials_file = "{path}"\n',
            )


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ('url = "https://ghcr.io"\nurll = "x"\n', "urll"),
        ('url = "https://ghcr.io"\npasword = "x"\n', "pasword"),
        ('url = "https://ghcr.io"\nttl = [{ tag = "latest", seconds = 5 }]\n', r"\btag\b"),
        ('url = "https://ghcr.io"\nttl = [{ tags = "latest", secs = 5 }]\n', "secs"),
    ],
)
def test_unknown_keys_are_refused_by_name(tmp_path: Path, table: str, key: str) -> None:
    """A typo in an upstream table (or a TTL rule) is an error naming the key."""
    with pytest.raises(ConfigError, match=key):
        load(tmp_path, f'[upstreams."ghcr.io"]\n{table}')


@pytest.mark.parametrize(
    ("line", "option"),
    [
        ('url = "ftp://ghcr.io"', "url"),
        ('url = "not a url"', "url"),
        ('connect_timeout = "soon"', "connect_timeout"),
        ("read_timeout = -1", "read_timeout"),
        ("api_timeout = 0", "api_timeout"),
        ("max_connections = 0", "max_connections"),
        ('max_connections = "many"', "max_connections"),
        ("tag_ttl = -5", "tag_ttl"),
        ('ttl = [{ tags = "latest", seconds = -1 }]', "ttl"),
        ('ttl = [{ tags = "latest", seconds = "soon" }]', "ttl"),
        ('ttl = "latest=60"', "ttl"),
        ('allow = "library/*"', "allow"),
        ("deny = [1, 2]", "deny"),
        ("rate_limit_reserve = -1", "rate_limit_reserve"),
        ("breaker_failures = 0", "breaker_failures"),
        ('breaker_reset = "later"', "breaker_reset"),
        ('default = "false"', "default"),
    ],
)
def test_bad_values_name_the_option(tmp_path: Path, line: str, option: str) -> None:
    """Each refusal names the option at fault."""
    body = line if line.startswith("url") else f'url = "https://ghcr.io"\n{line}'
    with pytest.raises(ConfigError, match=option):
        load(tmp_path, f'[upstreams."ghcr.io"]\n{body}\n')


def test_a_password_without_a_username_is_refused(tmp_path: Path) -> None:
    """Half a credential is a mistake worth stopping for."""
    with pytest.raises(ConfigError, match="username"):
        load(tmp_path, '[upstreams."ghcr.io"]\nurl = "https://ghcr.io"\npassword = "x"\n')


@pytest.mark.parametrize("host", ["ghcr.io\n", "-ghcr.io", "ghcr..io", "GHCR.io", "ghcr.io:port"])
def test_an_upstream_key_must_be_a_whole_registry_host(tmp_path: Path, host: str) -> None:
    """A key that is not a host name (a trailing newline included) names the table at fault."""
    table = json.dumps(host)
    with pytest.raises(ConfigError, match="the key must be a registry host"):
        load(tmp_path, f'[upstreams.{table}]\nurl = "https://ghcr.io"\n')
