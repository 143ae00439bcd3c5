"""`mirror export -o BUNDLE.tar REF...`: cached images as an OCI image layout archive, to carry
across an air gap and load with `mirror import`, `skopeo copy oci-archive:` or `ctr import`.
With `--storage s3://…`, what the cache directory lacks is read from the bucket."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mirror import log
from mirror.commands import Command, CommandError
from mirror.commands.cachedir import open_cache
from mirror.commands.prefetch import prefetch
from mirror.commands.progress import size
from mirror.commands.references import read_references
from mirror.config import Settings
from mirror.errors import StorageUnavailable
from mirror.images.archive import DamagedBlob, VanishedBlob, write_archive
from mirror.images.cached import CachedImage, NotCached, read_cached_image
from mirror.images.prefetch import Prefetcher
from mirror.oci.reference import ImageReference
from mirror.services import open_services
from mirror.storage.s3.staging import StagedBlobs


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("refs", nargs="*", metavar="REF", help="image references, as docker takes")
    parser.add_argument("-o", "--output", required=True, metavar="BUNDLE.tar", help="the archive")
    parser.add_argument(
        "--file", metavar="LIST", help="more references, one a line (- for standard input)"
    )
    parser.add_argument(
        "--pull",
        action="store_true",
        help="first fetch what the cache lacks (every platform), as prefetch does",
    )


def _run(settings: Settings, args: argparse.Namespace) -> int:
    references = read_references(args.refs, args.file)
    output = Path(args.output)
    if not output.name:
        raise CommandError(f"--output: {args.output!r} names no file")
    if not output.parent.is_dir():
        raise CommandError(f"--output: {output.parent} is not a directory")
    if settings.storage is None and not args.pull:
        open_cache(settings)  # read alone, never created: a mistyped --cache-dir says so
    log.configure(level=logging.WARNING)
    with _staging(settings, output) as staging:
        try:
            images = asyncio.run(_read_images(settings, references, args.pull, staging))
        except StorageUnavailable as e:
            raise CommandError(f"{e.message}; nothing was written") from None
        if images is None:
            return 1
        try:
            written = write_archive(output, images)
        except DamagedBlob as e:
            raise CommandError(
                f"{e} (mirror verify finds such blobs); nothing was written"
            ) from None
        except VanishedBlob as e:
            raise CommandError(f"{e}; nothing was written, export again") from None
        except OSError as e:
            raise CommandError(f"cannot write {output}: {e.strerror or e}") from None
    print(f"exported {len(images)} images to {output} ({size(written)})")
    return 0


@contextlib.contextmanager
def _staging(settings: Settings, output: Path) -> Iterator[Path | None]:
    """With a bucket behind the cache directory, a directory beside the archive for the
    bucket's blobs this host has no copy of, removed once the archive is written."""
    if settings.storage is None:
        yield None
        return
    try:
        directory = tempfile.TemporaryDirectory(prefix=f".{output.name}.", dir=output.parent)
    except OSError as e:
        raise CommandError(f"cannot write in {output.parent}: {e.strerror or e}") from None
    with directory as path:
        yield Path(path)


async def _read_images(
    settings: Settings, references: list[ImageReference], pull: bool, staging: Path | None
) -> list[CachedImage] | None:
    """Every image whole from the cache, or None after one line per reference that is not."""
    async with open_services(settings) as services:
        shared = services.upkeep.shared_blobs
        blobs = None
        if staging is not None and shared is not None:
            blobs = StagedBlobs(services.blob_store, shared, staging)
        if pull:
            _, failures = await prefetch(services, Prefetcher(services, None), references, "export")
            if failures:
                return None
        images, failures = [], []
        for reference in references:
            try:
                images.append(await read_cached_image(services, reference, blobs))
            except NotCached as e:
                failures.append(f"{reference}: {e}")
    for failure in failures:
        print(f"mirror export: {failure}", file=sys.stderr)
    return None if failures else images


COMMAND = Command("export", "write cached images to an OCI image layout archive", _arguments, _run)
