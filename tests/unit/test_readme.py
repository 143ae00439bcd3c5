"""The README documents every option the mirror accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from mirror.config.options import OPTIONS, Option

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.key)
def test_every_option_has_a_row_in_the_options_table(option: Option) -> None:
    """Each option's environment variable (or, for a file-only one, its key) and flag, when it
    has one, are in a row of the README's tables."""
    name = option.env_var if option.env else f"`{option.key}`"
    rows = [line for line in README.splitlines() if line.startswith("|") and name in line]
    assert rows, f"{name} is not documented in README.md"
    if option.flag:
        assert option.flag_name in rows[0], f"{option.flag_name} is missing from its README row"
