"""A real browser for the status page: Debian's chromium, headless, with every background fetch
of its own turned off and every host name unresolvable, so it reaches loopback and nothing else."""

from __future__ import annotations

import asyncio
import tempfile
from html.parser import HTMLParser
from pathlib import Path

from tests.e2e.daemons import require_binary
from tests.support.processes import die_with_parent

FLAGS = (
    "--headless",
    "--no-sandbox",  # as root, chromium refuses to start with its sandbox
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-proxy-server",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)


async def _chromium(*args: str, within: float = 60.0) -> bytes:
    binary = require_binary("chromium")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        process = await asyncio.create_subprocess_exec(
            binary,
            *FLAGS,
            f"--user-data-dir={profile}",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=die_with_parent,
        )
        try:
            async with asyncio.timeout(within):
                out, err = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
    assert process.returncode == 0, (process.returncode, err.decode(errors="replace")[-2000:])
    return out


async def dump_dom(url: str) -> str:
    """The document as chromium built it from `url` (serialized after load)."""
    document = (await _chromium("--dump-dom", url)).decode()
    assert "<html" in document, f"chromium loaded nothing from {url}: {document[:500]!r}"
    return document


async def screenshot(url: str, path: Path, size: str = "1200,1600") -> None:
    """A PNG of the page as chromium renders it."""
    await _chromium(f"--screenshot={path}", f"--window-size={size}", url)


class Figures(HTMLParser):
    """The `data-value` of every element with an id, and of each upstream row's cells (by
    registry, then class), from a dumped document."""

    def __init__(self, document: str) -> None:
        super().__init__()
        self.by_id: dict[str, str] = {}
        self.upstreams: dict[str, dict[str, str]] = {}
        self._registry: str | None = None
        self.feed(document)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if tag == "tr":
            self._registry = found.get("data-registry")
            if self._registry is not None:
                self.upstreams[self._registry] = {}
        if "data-value" not in found:
            return
        if "id" in found:
            self.by_id[found["id"]] = found["data-value"]
        elif self._registry is not None and "class" in found:
            cell = found["class"].split()[-1]
            self.upstreams[self._registry][cell] = found["data-value"]
