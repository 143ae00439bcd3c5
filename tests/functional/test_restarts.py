"""Stopping and restarting a real `mirror serve` without breaking pulls: SIGTERM drains the
responses in flight, SIGHUP under --workers N replaces every worker with no refused connection."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.daemons import MirrorServer
from tests.faults import FakeUpstream, Stall, content, slow_content
from tests.support.certs import CertificateAuthority
from tests.support.images import sha256_digest
from tests.support.oci import cached_blob
from tests.support.oci import wait_until as wait_until_true
from tests.support.processes import direct
from tests.support.registry import Registry

SLOW_BLOB = os.urandom(3 << 20)
SLOW_DIGEST = sha256_digest(SLOW_BLOB)
SLOW_PATH = f"/v2/library/slow/blobs/{SLOW_DIGEST}"
GRACE = 60


def children(pid: int) -> set[int]:
    return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


async def test_sigterm_lets_a_pull_in_flight_finish_and_commit(
    tmp_path: Path, make_fake_upstream: Callable[[], Awaitable[FakeUpstream]]
) -> None:
    """SIGTERM during a cold blob pull: the mirror stops accepting at once, the client still
    gets the whole blob (its digest checks), the blob is committed to the cache, and the
    process exits 0 well within --shutdown-grace."""
    fake = await make_fake_upstream()
    stall = Stall()
    fake.route(SLOW_PATH, slow_content(SLOW_BLOB, stall, first=256 << 10))
    cache = tmp_path / "cache"
    server = MirrorServer.start(
        tmp_path,
        fake.url,
        tag_ttl=300,
        cache_dir=cache,
        extra_args=["--shutdown-grace", str(GRACE)],
    )
    process = server.daemon.process
    assert process is not None
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{server.url}{SLOW_PATH}") as response,
        ):
            assert response.status == 200
            first = await response.content.readexactly(64 << 10)
            await stall.first_sent.wait()
            stopped_at = time.monotonic()
            process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(wait_until, lambda: refuses_connections(server.port))
            assert process.poll() is None, "it exited with a response in flight"
            stall.resume.set()
            rest = await response.read()
        assert hashlib.sha256(first + rest).hexdigest() == SLOW_DIGEST.removeprefix("sha256:")
        status = await asyncio.to_thread(process.wait, GRACE)
        assert status == 0
        assert time.monotonic() - stopped_at < GRACE
        hexdigest = SLOW_DIGEST.removeprefix("sha256:")
        assert (cache / "blobs" / "sha256" / hexdigest[:2] / hexdigest).read_bytes() == SLOW_BLOB
        assert "Traceback" not in server.log_text()
    finally:
        stall.resume.set()
        server.stop()


async def test_a_cold_pull_that_outlasts_the_grace_is_cut_and_logged(
    tmp_path: Path, make_fake_upstream: Callable[[], Awaitable[FakeUpstream]]
) -> None:
    """SIGTERM while a cold blob's upstream stalls past --shutdown-grace: the client's body
    breaks off (never a clean short one), the request still has its log line, marked
    incomplete, no spool file is left, and the process exits 0."""
    fake = await make_fake_upstream()
    stall = Stall()
    fake.route(SLOW_PATH, slow_content(SLOW_BLOB, stall, first=256 << 10))
    cache = tmp_path / "cache"
    server = MirrorServer.start(
        tmp_path, fake.url, tag_ttl=300, cache_dir=cache, extra_args=["--shutdown-grace", "1"]
    )
    process = server.daemon.process
    assert process is not None
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{server.url}{SLOW_PATH}") as response,
        ):
            assert response.status == 200
            await response.content.readexactly(64 << 10)
            await stall.first_sent.wait()
            process.send_signal(signal.SIGTERM)
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
        assert await asyncio.to_thread(process.wait, GRACE) == 0
        lines = [e for e in server.entries() if e.get("path") == SLOW_PATH]
        assert [(e["status"], e["complete"]) for e in lines] == [(200, False)]
        assert list((cache / "spool").glob("*.part")) == []
        assert "Traceback" not in server.log_text()
    finally:
        stall.resume.set()
        server.stop()


async def test_a_cached_blob_to_a_stalled_client_is_cut_at_the_grace(
    tmp_path: Path, make_fake_upstream: Callable[[], Awaitable[FakeUpstream]]
) -> None:
    """SIGTERM while a cached blob goes out by sendfile to a client that stopped reading:
    once --shutdown-grace is over the send is cut as if the client had gone, logged as
    incomplete, without an error from the event loop, and the process exits 0."""
    blob = os.urandom(16 << 20)
    path = f"/v2/library/big/blobs/{sha256_digest(blob)}"
    fake = await make_fake_upstream()
    fake.route(path, content(blob))
    server = MirrorServer.start(
        tmp_path, fake.url, tag_ttl=300, extra_args=["--shutdown-grace", "1"]
    )
    process = server.daemon.process
    assert process is not None
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{server.url}{path}") as got:
            assert await got.read() == blob
        assert await wait_until_true(cached_blob(server.cache_dir, sha256_digest(blob)).exists)
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        with client:
            client.connect(("127.0.0.1", server.port))
            client.sendall(f"GET {path} HTTP/1.1\r\nHost: {server.host}\r\n\r\n".encode())
            assert client.recv(4096).startswith(b"HTTP/1.1 200")
            process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(process.wait, GRACE) == 0
        lines = [e for e in server.entries() if e.get("path") == path]
        assert [(e["cache"], e["complete"]) for e in lines][-1] == ("hit", False)
        assert "Traceback" not in server.log_text()
    finally:
        server.stop()


async def test_a_pull_in_flight_survives_a_rolling_restart(
    tmp_path: Path, make_fake_upstream: Callable[[], Awaitable[FakeUpstream]]
) -> None:
    """SIGHUP under --workers 2 while a cold blob streams: both workers are replaced, and the
    old one serving the blob finishes it before it exits."""
    fake = await make_fake_upstream()
    stall = Stall()
    fake.route(SLOW_PATH, slow_content(SLOW_BLOB, stall, first=256 << 10))
    server = MirrorServer.start(tmp_path, fake.url, tag_ttl=300, extra_args=["--workers", "2"])
    try:
        await asyncio.to_thread(wait_until, lambda: "workers ready" in server.log_text())
        before = children(server.pid)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{server.url}{SLOW_PATH}") as response,
        ):
            assert response.status == 200
            first = await response.content.readexactly(64 << 10)
            await stall.first_sent.wait()
            os.kill(server.pid, signal.SIGHUP)
            await asyncio.to_thread(wait_until, lambda: "workers restarted" in server.log_text())
            assert len(children(server.pid) - before) == 2  # the new ones, beside the old
            stall.resume.set()
            rest = await response.read()
        assert hashlib.sha256(first + rest).hexdigest() == SLOW_DIGEST.removeprefix("sha256:")
        await asyncio.to_thread(wait_until, lambda: not children(server.pid) & before)
    finally:
        stall.resume.set()
        server.stop()


class Hammer:
    """GET /v2/ on a new connection each time, from a thread, until stopped; counts what came
    back and keeps every failure."""

    def __init__(self, url: str, context: ssl.SSLContext | None) -> None:
        self.url = url
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Hammer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self._opener.open(self.url, timeout=10) as response:
                    response.read()
                    self.ok += 1
            except (urllib.error.URLError, OSError) as e:
                self.failures.append(repr(e))

    def wait_for(self, count: int, timeout: float = 60.0) -> None:
        """Until `count` more answers came back."""
        target = self.ok + count
        deadline = time.monotonic() + timeout
        while self.ok < target and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.ok >= target, f"only {self.ok} answers; failures: {self.failures[:5]}"


@pytest.fixture
def tls_workers(tmp_path: Path, registry: Registry) -> Iterator[tuple[MirrorServer, Path, Path]]:
    """`mirror serve --workers 2` over HTTPS: (server, live cert, a renewed cert's path)."""
    ca = CertificateAuthority(tmp_path / "ca")
    live = ca.issue("live")
    server = MirrorServer.start(
        tmp_path,
        registry.url,
        tag_ttl=300,
        extra_args=["--workers", "2", "--tls-cert", str(live.cert), "--tls-key", str(live.key)],
        ca_file=ca.ca_file,
    )
    try:
        yield server, live.cert, ca.issue("renewed").cert
    finally:
        server.stop()


def test_sighup_replaces_every_worker_without_refusing_a_connection(
    tls_workers: tuple[MirrorServer, Path, Path],
) -> None:
    """While a client opens connection after connection, SIGHUP restarts both workers one by
    one: every request is answered, the worker pids all change, the new workers serve the
    certificate now on disk, and SIGTERM then stops everything with status 0."""
    server, live_cert, renewed_cert = tls_workers
    wait_until(lambda: "workers ready" in server.log_text())
    before = children(server.pid)
    with Hammer(f"{server.url}/v2/", server.ssl_context()) as hammer:
        hammer.wait_for(20)
        renewed_key = renewed_cert.with_suffix(".key")
        live_cert.write_bytes(renewed_cert.read_bytes())
        live_cert.with_suffix(".key").write_bytes(renewed_key.read_bytes())
        os.kill(server.pid, signal.SIGHUP)
        wait_until(
            lambda: (
                "workers restarted" in server.log_text()
                and len(children(server.pid) - before) == 2
                and not children(server.pid) & before
            ),
            timeout=120,
        )
        hammer.wait_for(20)
    assert hammer.failures == []
    assert not children(server.pid) & before
    assert server.daemon.process is not None
    server.daemon.process.send_signal(signal.SIGTERM)
    assert server.daemon.process.wait(GRACE) == 0


def test_a_worker_that_cannot_start_ends_the_rolling_restart(
    tmp_path: Path, registry: Registry
) -> None:
    """A settings file broken before SIGHUP: the new worker exits, the rolling restart stops,
    and the old workers go on serving."""
    config = tmp_path / "mirror.toml"
    config.write_text("tag_ttl = 300\n")
    server = MirrorServer.start(
        tmp_path, registry.url, tag_ttl=300, extra_args=["--workers", "2", "--config", str(config)]
    )
    try:
        wait_until(lambda: "workers ready" in server.log_text())
        before = children(server.pid)
        config.write_text("tag_ttl = \n")  # not TOML
        os.kill(server.pid, signal.SIGHUP)
        wait_until(lambda: "a new worker did not start" in server.log_text())
        assert children(server.pid) == before
        with direct.open(f"{server.url}/v2/", timeout=10) as response:
            assert response.status == 200
    finally:
        server.stop()


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.1)
