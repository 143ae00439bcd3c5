"""The `offline` option and the `[prefetch]` table of the settings file."""

from __future__ import annotations

from pathlib import Path

from mirror.cli import _parser
from mirror.config import load_settings


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
