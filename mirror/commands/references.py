"""Image references given on a command line or in a list file, parsed before any work starts."""

from __future__ import annotations

import sys

from mirror.commands import CommandError
from mirror.oci.reference import ImageReference, InvalidReference, parse_reference


def read_references(texts: list[str], list_file: str | None = None) -> list[ImageReference]:
    """Every reference, in order and without repeats; the first that does not parse stops the
    command. A list file has one reference a line; blank lines and `#` comments are skipped."""
    texts = list(texts)
    if list_file is not None:
        texts += _read_list(list_file)
    references: dict[str, ImageReference] = {}
    for text in texts:
        try:
            reference = parse_reference(text)
        except InvalidReference as e:
            raise CommandError(str(e)) from None
        references.setdefault(str(reference), reference)
    if not references:
        raise CommandError("no image references given")
    return list(references.values())


def _read_list(path: str) -> list[str]:
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise CommandError(f"--file: cannot read {path}: {e}") from None
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]
