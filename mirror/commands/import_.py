"""`mirror import BUNDLE.tar`: add the images of an OCI image layout archive (as `mirror
export` writes) to the cache; the mirror then serves them with no upstream at all."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from mirror import log
from mirror.commands import Command, CommandError
from mirror.commands.cachedir import count
from mirror.commands.progress import size
from mirror.config import Settings
from mirror.images.bundle import BadBundle
from mirror.images.importer import Imported, import_bundle
from mirror.services import open_services


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", metavar="BUNDLE.tar", help="an OCI image layout archive")


def _run(settings: Settings, args: argparse.Namespace) -> int:
    path = Path(args.bundle)
    if not path.is_file():
        raise CommandError(f"{path}: no such file")
    log.configure(level=logging.WARNING)
    try:
        result = asyncio.run(_import(settings, path))
    except BadBundle as e:
        raise CommandError(f"{path}: {e}; no image was imported") from None
    except OSError as e:
        raise CommandError(f"{path}: cannot import: {e.strerror or e}") from None
    for name in result.names:
        print(f"imported {name}")
    for digest in result.unnamed:
        print(f"imported {digest} (the bundle gives it no name: pull it by digest)")
    print(
        f"imported {len(result.names) + len(result.unnamed)} images from {path}: "
        f"{result.blobs_added} blobs, {size(result.bytes_added)} added, "
        f"{size(result.bytes_cached)} already cached"
    )
    evicted = result.evicted
    if evicted.bytes:
        images = f" ({count(evicted.images, 'image')})" if evicted.images else ""
        print(
            f"evicted {size(evicted.bytes)}{images}, the least recently used, to keep the cache "
            "within its cap"
        )
    if result.over_cap:
        print(
            f"mirror import: the cache is {size(result.over_cap)} over its cap (--max-size): "
            "what else it holds is pinned, in use, or used within --protect-window",
            file=sys.stderr,
        )
    return 0


async def _import(settings: Settings, path: Path) -> Imported:
    async with open_services(settings) as services:
        return await import_bundle(services, path)


COMMAND = Command("import", "add the images of an OCI image layout archive", _arguments, _run)
