"""deploy/mirror.service: `systemd-analyze verify` passes, `systemd-analyze security` rates its
hardening OK, and its command line and environment start a real mirror."""

from __future__ import annotations

from pathlib import Path

from mirror.config import load_settings
from tests.deploy.conftest import StartMirror
from tests.deploy.files import DEPLOY, assert_known_variables, unit_keys
from tests.deploy.tools import VENV_BIN, run_tool

UNIT = DEPLOY / "mirror.service"
INSTALLED_BINARY = "/opt/mirror/bin/mirror"  # where the unit's comments install the package


def local_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with ExecStart pointing at this venv's `mirror`: verify checks that it exists."""
    text = UNIT.read_text() if text is None else text
    assert f"ExecStart={INSTALLED_BINARY} " in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(f"ExecStart={INSTALLED_BINARY} ", f"ExecStart={VENV_BIN}/mirror "))
    return copy


def verify(unit: Path) -> tuple[int, str]:
    result = run_tool("systemd-analyze", "verify", unit)
    return result.returncode, result.stdout + result.stderr


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """verify exits 0 and says nothing: no unknown key, no bad value, the binary exists."""
    assert verify(local_copy(tmp_path)) == (0, "")


def test_verify_as_run_here_reports_a_misspelt_key(tmp_path: Path) -> None:
    """verify only warns about an unknown key (exit 0): the check above fails on any output."""
    text = UNIT.read_text().replace("ProtectSystem=", "ProtectSytem=")
    status, output = verify(local_copy(tmp_path, text))
    assert "Unknown key" in output and "ProtectSytem" in output, (status, output)


def test_unit_is_hardened(tmp_path: Path) -> None:
    """systemd-analyze security rates its exposure OK (under 2.0 of 10); a high LimitNOFILE,
    no new privileges, a read-only system with the cache writable, its own user and /tmp."""
    result = run_tool(
        "systemd-analyze", "security", "--offline=yes", "--threshold=20", local_copy(tmp_path)
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr

    keys = unit_keys(UNIT)
    assert int(keys["LimitNOFILE"][-1]) >= 65536
    for key in ("NoNewPrivileges", "PrivateTmp", "DynamicUser"):
        assert keys[key] == ["yes"], key
    assert keys["ProtectSystem"] == ["strict"]
    environment = dict(value.split("=", 1) for value in keys["Environment"])
    cache_dir = environment["MIRROR_CACHE_DIR"]
    writable = [f"/var/cache/{d}" for d in keys.get("CacheDirectory", [])]
    assert cache_dir in writable + keys.get("ReadWritePaths", []), (cache_dir, writable)


def test_unit_command_line_starts_the_mirror(start_mirror: StartMirror) -> None:
    """ExecStart's arguments and Environment= are the mirror's own: with deploy/mirror.toml at
    /etc/mirror (ConfigurationDirectory=mirror) they load, put the cache where the unit may
    write, and serve."""
    keys = unit_keys(UNIT)
    environment = dict(value.split("=", 1) for value in keys["Environment"])
    assert_known_variables(environment)
    config_dir = "/etc/" + keys["ConfigurationDirectory"][0]
    binary, *args = keys["ExecStart"][0].split()
    assert binary == INSTALLED_BINARY
    local_args = [a.replace(config_dir, str(DEPLOY)) for a in args]
    assert local_args[-1] == str(DEPLOY / "mirror.toml")

    settings = load_settings(local_args[-1], {}, environ=environment)
    assert str(settings.cache_dir) == environment["MIRROR_CACHE_DIR"]
    # Here the cache and the port are moved to a temporary directory and a free loopback port.
    start_mirror([f"{VENV_BIN}/mirror", *local_args], environment)
