"""The `offline` option and the `[prefetch]` table of the settings file."""

from __future__ import annotations

from pathlib import Path

import pytest

from mirror.cli import _parser
from mirror.config import ConfigError, load_settings
from mirror.images.schedule import BUSY_RETRY, Round, RoundLock


def test_offline_is_a_flag_an_environment_variable_and_a_file_key(tmp_path: Path) -> None:
    """--offline, MIRROR_OFFLINE=1 and `offline = true` each put every upstream offline."""
    assert not any(u.offline for u in load_settings(None, {}, environ={}).upstreams)
    flags = vars(_parser().parse_args(["serve", "--offline"]))
    assert flags["offline"] is True
    assert all(u.offline for u in load_settings(None, {"offline": True}, environ={}).upstreams)
    from_env = load_settings(None, {}, environ={"MIRROR_OFFLINE": "1"})
    assert all(u.offline for u in from_env.upstreams)
    config = tmp_path / "mirror.toml"
    config.write_text(
        'offline = true\n[upstreams."docker.io"]\nurl = "https://registry-1.docker.io"\n'
        "default = true\n"
        '[upstreams."ghcr.io"]\nurl = "https://ghcr.io"\n'
    )
    from_file = load_settings(str(config), {}, environ={})
    assert [u.offline for u in from_file.upstreams] == [True, True]


def write(tmp_path: Path, text: str) -> str:
    config = tmp_path / "mirror.toml"
    config.write_text(text)
    return str(config)


def test_prefetch_table_is_read_and_normalised(tmp_path: Path) -> None:
    """refs are parsed like docker's, interval in seconds, platform optional (all by default)."""
    config = write(
        tmp_path,
        '[prefetch]\nrefs = ["alpine:3.20", "ghcr.io/org/app:1"]\ninterval = 600\n'
        'platform = "linux/arm64"\n',
    )
    prefetch = load_settings(config, {}, environ={}).prefetch
    assert prefetch is not None
    assert [str(r) for r in prefetch.refs] == [
        "docker.io/library/alpine:3.20",
        "ghcr.io/org/app:1",
    ]
    assert (prefetch.interval, str(prefetch.platform)) == (600.0, "linux/arm64")
    everything = load_settings(write(tmp_path, '[prefetch]\nrefs = ["alpine"]\n'), {}, environ={})
    assert everything.prefetch is not None
    assert (everything.prefetch.interval, everything.prefetch.platform) == (3600.0, None)
    assert load_settings(None, {}, environ={}).prefetch is None


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('refs = ["alpine"]\nevery = 5', "prefetch.every: unknown option"),
        ('refs = "alpine"', "prefetch.refs: expected a list"),
        ("refs = []", "prefetch.refs: expected a list"),
        ('refs = ["alpine", "Bad Ref"]', r"prefetch.refs\[1\]: 'Bad Ref': invalid repository name"),
        ('refs = ["nope.example/app:1"]', r"prefetch.refs\[0\]: nope.example is not a registry"),
        ('refs = ["alpine"]\ninterval = "soon"', "prefetch.interval: 'soon' is not a number"),
        ('refs = ["alpine"]\ninterval = 0', "prefetch.interval"),
        ('refs = ["alpine"]\ninterval = 0.001', "prefetch.interval: 0.001 s is less than 60"),
        ('refs = ["alpine"]\ninterval = true', "prefetch.interval: True is not a number"),
        ('refs = ["alpine"]\nplatform = "amd64"', "prefetch.platform: 'amd64' is not a platform"),
    ],
)
def test_a_bad_prefetch_table_names_the_key(tmp_path: Path, table: str, message: str) -> None:
    """Each mistake in [prefetch] stops start-up with one line naming the key."""
    with pytest.raises(ConfigError, match=f"^{message}"):
        load_settings(write(tmp_path, f"[prefetch]\n{table}\n"), {}, environ={})


def test_one_process_runs_a_round_and_the_next_waits_for_the_interval(tmp_path: Path) -> None:
    """The round lock: held means busy; a round begun less than `interval` ago is not due."""
    now = [1000.0]
    lock = RoundLock(tmp_path / "prefetch.lock", 60.0, clock=lambda: now[0])
    other = RoundLock(tmp_path / "prefetch.lock", 60.0, clock=lambda: now[0])
    first = lock.try_begin()
    assert isinstance(first, Round)
    assert other.try_begin() == BUSY_RETRY  # another worker is running the round
    first.release()
    now[0] += 20
    assert other.try_begin() == pytest.approx(40.0)
    now[0] += 40
    second = other.try_begin()
    assert isinstance(second, Round)
    second.release()
    now[0] -= 500  # a clock set back does not stop the schedule for good
    third = lock.try_begin()
    assert isinstance(third, Round)
    third.release()
