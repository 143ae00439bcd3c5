"""The Redis URL forms `--redis-url` takes, and the one-line refusals of malformed ones."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mirror.config import ConfigError, load_settings
from mirror.meta.redis_url import RedisUrl


def test_a_sentinel_url_names_its_sentinels_service_database_and_passwords() -> None:
    """Every sentinel in the list, the master's service and db, the master's credentials
    (percent-decoded) and the sentinels' own password are read from the URL."""
    url = RedisUrl.parse(
        "redis+sentinel://app:p%40ss@10.0.0.1:26380,sentinel-b,[::1]:26381/cache/3"
        "?sentinel_password=s3"
    )
    assert url.nodes == (("10.0.0.1", 26380), ("sentinel-b", 26379), ("::1", 26381))
    assert (url.service, url.db) == ("cache", 3)
    assert (url.username, url.password, url.sentinel_password) == ("app", "p@ss", "s3")
    assert RedisUrl.parse("redis+sentinel://h/cache").db == 0


def test_a_cluster_url_names_its_seed_nodes() -> None:
    """A Cluster URL is a list of nodes to start from, 6379 where no port is given."""
    url = RedisUrl.parse("redis+cluster://:secret@node-a:7000,node-b")
    assert url.nodes == (("node-a", 7000), ("node-b", 6379))
    assert (url.username, url.password) == (None, "secret")


@pytest.mark.parametrize(
    "url", ["redis://cache:6379/0", "rediss://:pw@cache:6380/2", "unix:///run/redis.sock?db=1"]
)
def test_single_server_urls_are_taken_as_redis_py_reads_them(url: str) -> None:
    """The forms redis-py's own `from_url` reads are accepted unchanged."""
    assert load_settings(None, {"redis_url": url}, environ={}).redis_url == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://cache:6379", "not a Redis URL"),
        ("redis://cache:port/0", "Port could not be cast"),
        ("redis+sentinel://s1:26379,s2:26379", "/SERVICE"),
        ("redis+sentinel://s1:26379/cache/zero", "/SERVICE"),
        ("redis+sentinel://s1:26379/cache?db=1", "sentinel_password"),
        ("redis+sentinel://s1:99999/cache", "'s1:99999' is not host:port"),
        ("redis+sentinel://s1,,s2/cache", "'' is not host:port"),
        ("redis+cluster://n1:7000/1", "no db"),
    ],
)
def test_malformed_urls_are_refused_naming_the_option(url: str, why: str) -> None:
    """Each malformed URL stops start-up with a message naming --redis-url and the fault."""
    with pytest.raises(ConfigError, match=f"^--redis-url: .*{why}"):
        load_settings(None, {"redis_url": url}, environ={})


def test_a_refusal_hides_the_password() -> None:
    """The URL quoted in a refusal shows `***` where its password was."""
    with pytest.raises(ConfigError) as refused:
        load_settings(None, {"redis_url": "redis+sentinel://app:hunter2@s1"}, environ={})
    assert "hunter2" not in str(refused.value)
    assert "app:***@s1" in str(refused.value)


def test_cli_refuses_a_malformed_sentinel_url_with_one_line() -> None:
    """`mirror serve` with a Sentinel URL that names no service exits 2 with a single line."""
    result = subprocess.run(
        [sys.executable, "-m", "mirror", "serve", "--redis-url", "redis+sentinel://s1:26379"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "mirror: --redis-url: 'redis+sentinel://s1:26379': a Sentinel URL ends in /SERVICE or "
        "/SERVICE/DB, e.g. /mymaster/0"
    ]
