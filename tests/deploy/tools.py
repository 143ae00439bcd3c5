"""The tools that check deploy/, found and run the same way by every test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.daemons import clients_required

# The venv this suite runs in: its `mirror` is the one under test, wherever a file says `mirror`,
# and its bin holds the tools from the `test` extra (hadolint, kubernetes-validate).
VENV_BIN = Path(sys.executable).parent


def require_tool(name: str) -> str:
    """The path of a checking tool, from this venv or Debian (.ci/run installs those). A missing
    one skips the test, except in CI, where it fails."""
    path = shutil.which(name, path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if path is None:
        message = f"`{name}` is not installed (see .ci/run)"
        if clients_required():
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_tool(name: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run a checking tool; the caller asserts on its exit status and output."""
    return subprocess.run(
        [require_tool(name), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )
