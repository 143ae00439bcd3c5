"""The `mirror` command line run as a real subprocess, as an operator runs it."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support import storage
from tests.support.processes import die_with_parent


@dataclass(frozen=True)
class CliResult:
    """What one `mirror ...` run did."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def explain(self) -> str:
        return f"$ mirror {' '.join(self.args)}\nexit {self.returncode}\n{self.stdout}{self.stderr}"

    @property
    def error_lines(self) -> list[str]:
        return self.stderr.strip().splitlines()


async def mirror_cli(*args: str | Path, within: float = 300.0) -> CliResult:
    """Run `python -m mirror ARGS...` with no MIRROR_* variables from the test's environment,
    on the run's store (`tests.support.storage`) unless ARGS name one."""
    argv = tuple(str(arg) for arg in args)
    env = storage.current().environ(storage.command_cache_dir(argv))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mirror",
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        preexec_fn=die_with_parent,
    )
    try:
        async with asyncio.timeout(within):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return CliResult(argv, process.returncode, out.decode(), err.decode())


def upstream_config(path: Path, url: str, name: str = "docker.io") -> Path:
    """A settings file naming one registry (so no built-in registry is ever contacted)."""
    path.write_text(f'[upstreams."{name}"]\nurl = "{url}"\n')
    return path
