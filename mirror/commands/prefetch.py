"""`mirror prefetch REF...`: pull images into the cache ahead of need, beside a running server
or without one."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from mirror import log
from mirror.commands import Command, CommandError
from mirror.commands.progress import Display, size
from mirror.commands.references import read_references
from mirror.config import Settings
from mirror.images.prefetch import Prefetched, Prefetcher, PrefetchFailed
from mirror.oci.platform import InvalidPlatform, Platform, parse_platform
from mirror.oci.reference import ImageReference
from mirror.services import Services, open_services

IMAGES_AT_ONCE = 4


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("refs", nargs="*", metavar="REF", help="image references, as docker takes")
    parser.add_argument(
        "--file", metavar="LIST", help="more references, one a line (- for standard input)"
    )
    parser.add_argument(
        "--platform",
        default="all",
        metavar="OS/ARCH[/VARIANT]",
        help="which image of a multi-platform index to fetch, or all (the default)",
    )


def _platform(text: str) -> Platform | None:
    """None means every platform."""
    if text.strip().lower() == "all":
        return None
    try:
        return parse_platform(text)
    except InvalidPlatform as e:
        raise CommandError(f"--platform: {e}") from None


def _run(settings: Settings, args: argparse.Namespace) -> int:
    references = read_references(args.refs, args.file)
    platform = _platform(args.platform)
    log.configure(level=logging.WARNING)
    return asyncio.run(_prefetch_all(settings, references, platform))


async def _prefetch_all(
    settings: Settings, references: list[ImageReference], platform: Platform | None
) -> int:
    async with open_services(settings) as services:
        prefetcher = Prefetcher(services, platform)
        results, failures = await prefetch(services, prefetcher, references, "prefetch")
    print(
        f"prefetched {len(results)} of {len(references)} images: "
        f"{size(prefetcher.fetched)} fetched, {size(prefetcher.cached)} already cached, "
        f"{len(failures)} failed"
    )
    return 1 if failures else 0


async def prefetch(
    services: Services, prefetcher: Prefetcher, references: list[ImageReference], command: str
) -> tuple[list[Prefetched], list[str]]:
    """Prefetch every reference, a few at once, showing progress; (results, failure lines).
    Each failure is also printed as one line on standard error."""
    slots = asyncio.Semaphore(IMAGES_AT_ONCE)

    async def one(reference: ImageReference, display: Display) -> Prefetched | str:
        async with slots:
            progress = display.image(str(reference))
            try:
                result = await prefetcher.prefetch(reference, progress)
            except PrefetchFailed as e:
                progress.failed()
                return f"{reference}: {e}"
            progress.finished(result)
            return result

    with Display() as display:
        done = await asyncio.gather(*(one(reference, display) for reference in references))
    failures = [outcome for outcome in done if isinstance(outcome, str)]
    for failure in failures:
        print(f"mirror {command}: {failure}", file=sys.stderr)
    return [outcome for outcome in done if not isinstance(outcome, str)], failures


COMMAND = Command("prefetch", "pull images into the cache ahead of need", _arguments, _run)
