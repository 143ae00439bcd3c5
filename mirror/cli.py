"""The `mirror` command line: one subcommand per module under `mirror.commands`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mirror import __version__
from mirror.commands import Command, CommandError, du, gc, ls, rm, verify
from mirror.commands import export as export_command
from mirror.commands import health as health_command
from mirror.commands import import_ as import_command
from mirror.commands import prefetch as prefetch_command
from mirror.commands import serve as serve_command
from mirror.config import ConfigError, load_settings
from mirror.config.options import BY_KEY, add_flags

COMMANDS: tuple[Command, ...] = (
    serve_command.COMMAND,
    health_command.COMMAND,
    prefetch_command.COMMAND,
    export_command.COMMAND,
    import_command.COMMAND,
    ls.COMMAND,
    du.COMMAND,
    rm.COMMAND,
    gc.COMMAND,
    verify.COMMAND,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mirror", description="Pull-through registry mirror.")
    parser.add_argument("--version", action="version", version=f"mirror {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        sub = subparsers.add_parser(command.name, help=command.help)
        sub.add_argument("--config", metavar="FILE.toml", help="TOML settings file (MIRROR_CONFIG)")
        command.add_arguments(sub)
        add_flags(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = next(c for c in COMMANDS if c.name == args.command)
    flags = {k: v for k, v in vars(args).items() if k in BY_KEY}
    try:
        return command.run(load_settings(args.config, flags), args)
    except ConfigError as e:
        print(f"mirror: {e}", file=sys.stderr)
        return 2
    except CommandError as e:
        print(f"mirror {command.name}: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        # The file system refused (a read-only cache, a file where a directory should be):
        # the operator's to fix, said in one line.
        where = f": {e.filename}" if e.filename else ""
        print(f"mirror {command.name}: {e.strerror or e}{where}", file=sys.stderr)
        return 1
