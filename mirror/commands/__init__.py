"""The `mirror` subcommands, one module each; `mirror.cli` lists them.

Every command takes the same settings as `serve` (flags, `MIRROR_*`, `--config`), so a command
run beside a server sees the same cache directory, upstreams and Redis.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from mirror.config import Settings


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    help: str
    # Adds the command's own arguments (the settings flags are added for every command).
    add_arguments: Callable[[argparse.ArgumentParser], None]
    # Runs with validated settings and the parsed arguments; returns the exit status.
    run: Callable[[Settings, argparse.Namespace], int]


class CommandError(Exception):
    """A command cannot go on; the message is printed as one line and the exit status is 1."""
