"""`mirror serve --workers 2`: every worker's counts add up on the admin listener, a worker that
dies leaves its counts and takes its live gauges with it, and the shared directory goes at exit."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.daemons import MirrorServer
from tests.faults import FakeFactory, Stall, content, slow_content
from tests.support.images import sha256_digest
from tests.support.metrics import Scrape
from tests.support.processes import free_port

BLOB = hashlib.sha256(b"workers").digest() * (1024 * 1024 // 32)  # 1 MiB
DIGEST = sha256_digest(BLOB)
BLOB_PATH = f"/v2/lib/app/blobs/{DIGEST}"
MANIFEST = b'{"schemaVersion":2}'
MANIFEST_PATH = f"/v2/lib/app/manifests/{sha256_digest(MANIFEST)}"


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary directory the mirror's own temporary files go to (TMPDIR), to be watched."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    yield temp


def _workers(supervisor: int) -> list[int]:
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return sorted(int(pid) for pid in children)


def _files(directory: Path, pattern: str = "*") -> list[Path]:
    return sorted(directory.glob(pattern))


def _pid_of(request_id: str) -> int:
    """The process a request id names: its prefix is the pid in hex and four hex digits."""
    return int(request_id.split("-", 1)[0][:-4], 16)


async def _scrape(session: aiohttp.ClientSession, admin: str) -> Scrape:
    async with session.get(f"{admin}/metrics") as response:
        assert response.status == 200
        return Scrape.parse(await response.text())


async def _until(
    session: aiohttp.ClientSession, admin: str, check: Callable[[Scrape], bool]
) -> Scrape:
    """Scrape until `check` holds (workers publish their gauges once a second; while they
    restart, nobody may be listening)."""
    found = None
    for _ in range(150):
        try:
            found = await _scrape(session, admin)
        except aiohttp.ClientConnectionError:
            found = None
        if found is not None and check(found):
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"never held; last scrape: {found}")


async def test_two_workers_add_up_and_forget_the_dead(
    make_fake_upstream: FakeFactory, tmp_path: Path, scratch: Path
) -> None:
    """Hits served by both workers are all counted, whichever worker answers the scrape; a
    stalled download shows in the gauges; once both workers are killed their live gauges are
    gone and their counts stay; at exit the shared directory is removed."""
    fake = await make_fake_upstream()
    fake.route(MANIFEST_PATH, content(MANIFEST, "application/vnd.oci.image.manifest.v1+json"))
    stall = Stall()
    fake.route(BLOB_PATH, slow_content(BLOB, stall, first=64 * 1024))
    admin_port = free_port()
    args = ["--workers", "2", "--admin-listen", f"127.0.0.1:{admin_port}"]
    server = await asyncio.to_thread(
        MirrorServer.start, tmp_path / "mirror", fake.url, tag_ttl=300, extra_args=args
    )
    admin = f"http://127.0.0.1:{admin_port}"
    try:
        shared = _files(scratch, "mirror-metrics-*")
        assert len(shared) == 1, shared
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            sent = 0
            served_by: set[int] = set()
            mark = server.log_size()
            while len(served_by) < 2 and sent < 400:  # new connections until both answered
                for _ in range(20):
                    async with s.get(server.url + MANIFEST_PATH) as response:
                        assert response.status == 200
                        assert await response.read() == MANIFEST
                        sent += 1
                lines = await asyncio.to_thread(server.entries, mark)
                served_by = {_pid_of(e["request_id"]) for e in lines if e.get("event") == "request"}
            assert len(served_by) == 2, f"{sent} requests all went to {served_by}"
            # Each worker adds its counts to the shared files within a second.
            await _until(s, admin, lambda f: f.total("mirror_requests_total") == sent)
            answered_by: set[int] = set()
            for _ in range(10):  # each scrape on a connection of its own: either worker
                found = await _scrape(s, admin)
                manifests = found.total("mirror_requests_total", kind="manifest")
                assert manifests == sent
                assert found.get("mirror_served_bytes_total", cache="hit") == (sent - 1) * len(
                    MANIFEST
                )
            for line in await asyncio.to_thread(server.entries, mark):
                if line.get("path") == "/metrics":
                    answered_by.add(_pid_of(line["request_id"]))
            assert answered_by <= set(_workers(server.daemon.pid))

            streaming = await s.get(server.url + BLOB_PATH)
            assert await streaming.content.readexactly(1024)
            await _until(
                s,
                admin,
                lambda f: (
                    f.get("mirror_fills_in_flight") == 1 and f.get("mirror_fill_readers") == 1
                ),
            )
            before = set(_workers(server.daemon.pid))
            for pid in before:
                os.kill(pid, signal.SIGKILL)  # the supervisor restarts them
            streaming.close()
            after = await _until(
                s,
                admin,
                lambda f: (
                    f.get("mirror_fills_in_flight") == 0 and f.get("mirror_fill_readers") == 0
                ),
            )
            assert after.total("mirror_requests_total", kind="manifest") == sent
            for _ in range(100):  # both replaced (a stop during a restart is another matter)
                if len(set(_workers(server.daemon.pid)) - before) == 2:
                    break
                await asyncio.sleep(0.1)
            assert not set(_workers(server.daemon.pid)) & before
            # The replacements take the dead workers' slots, and start their gauges afresh.
            left = {p.name for p in _files(shared[0], "gauge_live*")}
            assert left <= {f"gauge_{m}_{n}.db" for m in ("livesum", "livemax") for n in (0, 1)}
    finally:
        stall.resume.set()
        await asyncio.to_thread(server.stop)
    assert not _files(scratch), "the supervisor removes the shared directory when it stops"


async def _pull_from_each(
    session: aiohttp.ClientSession, server: MirrorServer, workers: set[int]
) -> int:
    """Pull the manifest, a connection each, until every one of `workers` has served some
    (so each has made its metrics); how many pulls that took."""
    sent, mark = 0, server.log_size()
    while sent < 400:
        for _ in range(10):
            async with session.get(server.url + MANIFEST_PATH) as response:
                assert response.status == 200
                assert await response.read() == MANIFEST
        sent += 10
        lines = await asyncio.to_thread(server.entries, mark)
        if workers <= {_pid_of(e["request_id"]) for e in lines if e.get("event") == "request"}:
            return sent
    raise AssertionError(f"{sent} pulls did not reach each of {workers}")


async def _published(shared: Path, pulls: int) -> None:
    """Wait until the workers' activity files hold `pulls` (each writes its own once a second;
    a scrape flushes the counters of the worker it reaches at once, not its file)."""
    for _ in range(50):
        found = 0
        for path in _files(shared, "activity_*.json"):
            with contextlib.suppress(OSError, ValueError):
                found += sum(count for _, count in json.loads(path.read_bytes())["pulls"])
        if found == pulls:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{found} pulls published, not {pulls}")


async def _replaced(supervisor: int, before: set[int]) -> set[int]:
    """The workers once as many as `before` have all been replaced."""
    for _ in range(150):
        now = set(_workers(supervisor))
        if len(now) == len(before) and not now & before:
            return now
        await asyncio.sleep(0.1)
    raise AssertionError(f"workers {before} were not replaced: {_workers(supervisor)}")


async def test_replaced_workers_count_on_in_their_slots(
    make_fake_upstream: FakeFactory, tmp_path: Path, scratch: Path
) -> None:
    """Workers killed and replaced again and again, then restarted one by one: the counts, the
    start time and the status page's pulls go on from where they were, and the shared directory
    holds the files of as many workers as ran at once, not of every worker that ever ran (each
    scrape reads them all)."""
    fake = await make_fake_upstream()
    fake.route(MANIFEST_PATH, content(MANIFEST, "application/vnd.oci.image.manifest.v1+json"))
    admin_port = free_port()
    args = ["--workers", "2", "--admin-listen", f"127.0.0.1:{admin_port}"]
    server = await asyncio.to_thread(
        MirrorServer.start, tmp_path / "mirror", fake.url, tag_ttl=300, extra_args=args
    )
    admin = f"http://127.0.0.1:{admin_port}"
    supervisor = server.daemon.pid
    try:
        (shared,) = _files(scratch, "mirror-metrics-*")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            workers = set(_workers(supervisor))
            sent = await _pull_from_each(s, server, workers)
            first = await _until(s, admin, lambda f: f.total("mirror_requests_total") == sent)
            started = first.get("mirror_start_time_seconds")
            files = {p.name for p in _files(shared, "*.db")}
            for _ in range(3):
                await _published(shared, sent)  # what a kill would lose is not the point
                for pid in workers:
                    os.kill(pid, signal.SIGKILL)
                workers = await _replaced(supervisor, workers)
                sent += await _pull_from_each(s, server, workers)
                await _until(s, admin, lambda f, n=sent: f.total("mirror_requests_total") == n)
            assert {p.name for p in _files(shared, "*.db")} == files
            mark = server.log_size()
            os.kill(supervisor, signal.SIGHUP)
            restarted: list[dict[str, Any]] = []
            while not restarted:
                lines = await asyncio.to_thread(server.entries, mark)
                restarted = [e for e in lines if e.get("event") == "workers restarted"]
            sent += await _pull_from_each(s, server, set(restarted[0]["pids"]))
            after = await _until(s, admin, lambda f: f.total("mirror_requests_total") == sent)
            assert after.get("mirror_start_time_seconds") == started
            # A rolling restart starts each new worker before its predecessor has gone.
            assert len(_files(shared, "counter_*.db")) <= 4, _files(shared)
            pulls = f'<td class="n" data-value="{sent}">'
            for _ in range(50):  # each worker's pulls reach the page within a second
                async with s.get(f"{admin}/") as response:
                    page = await response.text()
                if pulls in page:
                    break
                await asyncio.sleep(0.1)
            assert pulls in page, page
    finally:
        await asyncio.to_thread(server.stop)
