"""Settings precedence and validation, and the CLI's one-line refusals."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mirror.config import DOCKER_HUB, ConfigError, Settings, load_settings
from mirror.descriptors import max_connections
from tests.support.processes import free_port


def test_defaults_proxy_docker_hub_on_port_5000() -> None:
    """With nothing configured the mirror serves Docker Hub on 0.0.0.0:5000."""
    settings = load_settings(None, {}, environ={})
    assert settings.upstream.url == DOCKER_HUB
    assert (settings.host, settings.port, settings.tag_ttl) == ("0.0.0.0", 5000, 300.0)
    assert settings.redis_url is None


def test_flags_beat_env_beat_file(tmp_path: Path) -> None:
    """Precedence: flags > MIRROR_* environment > TOML file > defaults."""
    config = tmp_path / "mirror.toml"
    config.write_text(
        'listen = "127.0.0.1:7000"\ntag_ttl = 10\ncache_dir = "/from/file"\n'
        'upstream = "http://file.example"\n'
    )
    env = {"MIRROR_TAG_TTL": "20", "MIRROR_CACHE_DIR": "/from/env"}
    settings = load_settings(str(config), {"cache_dir": "/from/flag"}, environ=env)
    assert settings.listen == "127.0.0.1:7000"
    assert settings.tag_ttl == 20.0
    assert settings.cache_dir == Path("/from/flag")
    assert settings.upstream.url == "http://file.example"


def test_upstream_credentials_from_file_never_print(tmp_path: Path) -> None:
    """Credentials load from the upstream's table and stay out of reprs."""
    config = tmp_path / "mirror.toml"
    config.write_text(
        '[upstreams."docker.io"]\nurl = "https://registry-1.docker.io"\n'
        'username = "bot"\npassword = "s3cret"\n'
    )
    settings = load_settings(str(config), {}, environ={})
    assert (settings.upstream.username, settings.upstream.password) == ("bot", "s3cret")
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("flags", "option"),
    [
        ({"listen": "nope"}, "--listen"),
        ({"listen": "1.2.3.4:99999"}, "--listen"),
        ({"upstream": "ftp://x"}, "--upstream"),
        ({"tag_ttl": "soon"}, "--tag-ttl"),
        ({"tag_ttl": "-1"}, "--tag-ttl"),
        ({"redis_url": "http://x"}, "--redis-url"),
        ({"send_timeout": "0"}, "--send-timeout"),
        ({"send_timeout": "never"}, "--send-timeout"),
        ({"max_connections": "0"}, "--max-connections"),
        ({"max_connections": "lots"}, "--max-connections"),
    ],
)
def test_bad_values_name_the_option(flags: dict[str, str], option: str) -> None:
    """Each refusal names the option at fault."""
    with pytest.raises(ConfigError, match=f"^{option}"):
        load_settings(None, flags, environ={})


def test_unknown_file_option_is_refused(tmp_path: Path) -> None:
    """A typo in the file stops start-up instead of being silently ignored."""
    config = tmp_path / "mirror.toml"
    config.write_text("tag_tll = 5\n")
    with pytest.raises(ConfigError, match="tag_tll"):
        load_settings(str(config), {}, environ={})


def test_cli_refuses_a_bad_value_with_one_line() -> None:
    """`python -m mirror serve` with a bad flag exits 2 and prints a single line."""
    result = subprocess.run(
        [sys.executable, "-m", "mirror", "serve", "--tag-ttl", "abc"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "mirror: --tag-ttl: 'abc' is not a number of seconds"
    ]


def test_example_config_loads() -> None:
    """The shipped example file is valid as it stands."""
    example = Path(__file__).parents[2] / "deploy" / "mirror.toml"
    settings = load_settings(str(example), {}, environ={})
    assert settings.cache_dir == Path("/var/cache/mirror")
    assert settings.upstream.url == DOCKER_HUB


def test_cli_refuses_a_taken_port_with_one_line(tmp_path: Path) -> None:
    """A port another process holds stops start-up with one line naming --listen."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "mirror", "serve", "--listen", f"127.0.0.1:{port}",
             "--cache-dir", str(tmp_path / "cache")],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mirror: --listen: cannot listen on"), lines


def test_cli_refuses_an_unusable_cache_dir_with_one_line(tmp_path: Path) -> None:
    """A cache directory that cannot be created is one line naming --cache-dir."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = subprocess.run(
        [sys.executable, "-m", "mirror", "serve", "--listen", f"127.0.0.1:{free_port()}",
         "--cache-dir", str(blocker / "cache")],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mirror: --cache-dir: cannot create"), lines


def test_connection_limits_come_from_flags_env_or_file(tmp_path: Path) -> None:
    """`send_timeout` and `max_connections` are options like the others; both default sanely."""
    assert (Settings().send_timeout, Settings().max_connections) == (60.0, None)
    config = tmp_path / "mirror.toml"
    config.write_text("send_timeout = 15\nmax_connections = 300\n")
    settings = load_settings(str(config), {"send_timeout": "20"}, environ={})
    assert (settings.send_timeout, settings.max_connections) == (20.0, 300)
    settings = load_settings(None, {}, environ={"MIRROR_MAX_CONNECTIONS": "40"})
    assert settings.max_connections == 40


@pytest.mark.parametrize(
    ("open_files", "expected"),
    [(1_048_576, (1_048_576 - 128 - 1000) // 2), (65_536, 32_204), (2048, 460), (1024, 16)],
)
def test_default_connection_cap_leaves_room_for_two_descriptors_each(
    open_files: int, expected: int
) -> None:
    """By default half the descriptors left after the five built-in upstreams' two pools (100
    connections each) and a reserve of 128, and never fewer than 16."""
    assert max_connections(Settings(), open_files) == expected


def test_a_configured_connection_cap_is_used_as_given() -> None:
    """An explicit cap is the operator's choice, whatever the descriptor limit."""
    assert max_connections(Settings(max_connections=5000), 256) == 5000
