"""The cache's settings: sizes and percentages for the cap and free space, the protection
window, pins."""

from __future__ import annotations

from pathlib import Path

import pytest

from mirror.config import ConfigError, SizeLimit, load_settings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("300MiB", SizeLimit(bytes=300 * 2**20)),
        ("50GiB", SizeLimit(bytes=50 * 2**30)),
        ("1TB", SizeLimit(bytes=10**12)),
        ("1.5 GB", SizeLimit(bytes=1_500_000_000)),
        ("2tib", SizeLimit(bytes=2 * 2**40)),
        ("1000000", SizeLimit(bytes=1_000_000)),
        ("80%", SizeLimit(percent=80.0)),
        ("12.5 %", SizeLimit(percent=12.5)),
    ],
)
def test_sizes_in_every_documented_form(text: str, expected: SizeLimit) -> None:
    """Decimal and binary units, plain bytes and percentages of the file system."""
    assert load_settings(None, {"max_size": text}, environ={}).max_size == expected


@pytest.mark.parametrize("text", ["lots", "0", "-1MiB", "12XB", "0%", "150%", "1e3", "MiB"])
def test_bad_sizes_name_the_option(text: str) -> None:
    """A size that is not one stops start-up with one line naming the option."""
    with pytest.raises(ConfigError, match=r"^--min-free: "):
        load_settings(None, {"min_free": text}, environ={})


def test_a_percentage_resolves_against_the_file_system() -> None:
    """`80%` of a 1 TB file system is 800 GB."""
    assert SizeLimit(percent=80).resolve(10**12) == 8 * 10**11
    assert SizeLimit(bytes=5).resolve(10**12) == 5


def test_cache_settings_from_file_env_and_flags(tmp_path: Path) -> None:
    """max_size and min_free come from any layer; pins only from the file."""
    config = tmp_path / "mirror.toml"
    config.write_text(
        'max_size = "1TB"\nprotect_window = 60\npin = ["docker.io/library/alpine:*"]\n'
    )
    env = {"MIRROR_MAX_SIZE": "80%", "MIRROR_MIN_FREE": "10GiB", "MIRROR_PIN": "ignored"}
    settings = load_settings(str(config), {"min_free": "5%"}, environ=env)
    assert settings.max_size == SizeLimit(percent=80.0)
    assert settings.min_free == SizeLimit(percent=5.0)
    assert settings.protect_window == 60.0
    assert settings.pin == ("docker.io/library/alpine:*",)


def test_no_limits_by_default() -> None:
    """Unless told otherwise the cache may grow, and recent content is protected for an hour."""
    settings = load_settings(None, {}, environ={})
    assert (settings.max_size, settings.min_free, settings.pin) == (None, None, ())
    assert settings.protect_window == 3600.0


def test_pins_must_be_a_list_of_patterns(tmp_path: Path) -> None:
    """`pin = "alpine"` (not a list) is refused, naming the key."""
    config = tmp_path / "mirror.toml"
    config.write_text('pin = "docker.io/library/alpine:*"\n')
    with pytest.raises(ConfigError, match=r"^pin: "):
        load_settings(str(config), {}, environ={})
