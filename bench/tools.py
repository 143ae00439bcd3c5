"""The programs the benchmark drives; a missing one stops the run with a message naming it."""

from __future__ import annotations

import shutil
from pathlib import Path

# program -> Debian package that provides it
REQUIRED = {
    "wrk": "wrk",
    "nginx": "nginx",
    "docker-registry": "docker-registry",
    "redis-server": "redis-server",
    "curl": "curl",
    "strace": "strace",
    "skopeo": "skopeo",
}
_SBIN = (Path("/usr/sbin"), Path("/usr/bin"), Path("/sbin"))


class MissingTool(RuntimeError):
    """A program the benchmark needs is not installed."""


def find_tool(name: str) -> str:
    """The path of `name`, looking in sbin too (nginx lives there and root's PATH may lack it)."""
    found = shutil.which(name)
    if found:
        return found
    for directory in _SBIN:
        candidate = directory / name
        if candidate.is_file():
            return str(candidate)
    raise MissingTool(name)


def check_tools() -> dict[str, str]:
    """Every required program's path, or one error listing all that are missing."""
    paths: dict[str, str] = {}
    missing: list[str] = []
    for name in REQUIRED:
        try:
            paths[name] = find_tool(name)
        except MissingTool:
            missing.append(name)
    if missing:
        packages = " ".join(REQUIRED[name] for name in missing)
        specs = " ".join(f"{REQUIRED[name]}:{name}" for name in missing)
        raise MissingTool(
            f"missing programs: {', '.join(missing)}. Install the Debian packages "
            f"({packages}), e.g. `bash tests/system-deps.sh {specs}`, or run `make bench`."
        )
    return paths
