"""Reading JSON that others wrote (an upstream's answers, a bundle, a manifest)."""

from __future__ import annotations

import json
from typing import Any


def parse(data: bytes | str) -> Any:
    """`json.loads`, with a document nested deeper than the parser goes (`[` a thousand times
    over, a kilobyte) refused as ValueError, as any other malformed one is, rather than
    raising RecursionError, which no caller expects of bad input."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
