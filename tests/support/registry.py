"""A real upstream: Debian's `docker-registry` (CNCF distribution 2.8) on a free loopback port.

The registry's access log (one line per request, written to its stdout) is captured to a file and
parsed, so tests can count exactly which requests the mirror sent upstream.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from tests.support.processes import die_with_parent, direct, free_port, running

if TYPE_CHECKING:
    from tests.support.tokens import TokenService

REGISTRY_BINARY = "docker-registry"
_SENTINEL = "__requests_sentinel"
# gorilla/handlers combined log format: `HOST - USER [DATE] "METHOD URI PROTO" STATUS SIZE ...`
_ACCESS_LINE = re.compile(r'"([A-Z]+) (\S+) HTTP/[0-9.]+" (\d{3}) (\d+|-)')


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash (the only kind distribution's htpasswd accepts), via the system libcrypt."""
    name = ctypes.util.find_library("crypt")
    if name is None:
        raise RuntimeError("libcrypt is needed to write an htpasswd file")
    lib = ctypes.CDLL(name)
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    # Cost 4, the minimum: the hash guards nothing, and each login pays for it.
    salt = lib.crypt_gensalt(b"$2b$", 4, None, 0)
    hashed = lib.crypt(password.encode(), salt)
    if not hashed or not hashed.startswith(b"$2"):
        raise RuntimeError("libcrypt cannot make bcrypt hashes")
    return str(hashed.decode())


class Registry:
    """One docker-registry process; `stop()` and `start()` keep its port and its storage."""

    def __init__(self, workdir: Path, config_text: str, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.host = f"127.0.0.1:{port}"
        self.url = f"http://{self.host}"
        self.config_path = workdir / "config.yml"
        self.config_path.write_text(config_text)
        self.access_log = workdir / "access.log"
        self.server_log = workdir / "registry.log"
        self.access_log.touch()
        self._offset = 0
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> None:
        """Start (or restart) the registry and wait until it answers."""
        if self._process is not None:
            return
        binary = shutil.which(REGISTRY_BINARY) or f"/usr/bin/{REGISTRY_BINARY}"
        in_main_thread = threading.current_thread() is threading.main_thread()
        with self.access_log.open("ab") as out, self.server_log.open("ab") as err:
            self._process = subprocess.Popen(
                [binary, "serve", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                # The death signal follows the forking thread, so only ask for it from the main one.
                preexec_fn=die_with_parent if in_main_thread else None,
            )
        running.add(self._process)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                log = self.server_log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"docker-registry exited with {self._process.returncode}: {log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"docker-registry did not listen on {self.host} within {timeout}s")

    def stop(self) -> None:
        """Stop the registry by its PID and wait for it to exit."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        finally:
            running.discard(process)

    def _flush(self) -> None:
        """Make sure every request answered so far is in the access log.

        The registry writes a line after it answers; a request of our own, once logged, shows
        that the lines of earlier requests are there too.
        """
        if self._process is None:
            return
        marker = f"{_SENTINEL}={uuid.uuid4().hex}"
        try:
            direct.open(f"{self.url}/v2/?{marker}", timeout=5).close()
        except urllib.error.HTTPError:
            pass  # 401 from an authenticating registry is logged all the same
        except OSError:
            return
        deadline = time.monotonic() + 5
        while marker not in self.access_log.read_text(errors="replace"):
            if time.monotonic() > deadline:
                raise RuntimeError("docker-registry did not log a request within 5s")
            time.sleep(0.01)

    def requests(self) -> list[tuple[str, str]]:
        """(METHOD, path with query) of each request served since the last `clear_requests()`."""
        self._flush()
        with self.access_log.open("rb") as f:
            f.seek(self._offset)
            text = f.read().decode(errors="replace")
        seen = []
        for line in text.splitlines():
            match = _ACCESS_LINE.search(line)
            if match and _SENTINEL not in match.group(2):
                seen.append((match.group(1), match.group(2)))
        return seen

    def body_bytes(self, path: str) -> int:
        """Body bytes the registry sent for GETs of `path` since the last `clear_requests()`:
        what it logged, so a transfer cut off short counts what went out."""
        self._flush()
        with self.access_log.open("rb") as f:
            f.seek(self._offset)
            text = f.read().decode(errors="replace")
        sent = 0
        for match in _ACCESS_LINE.finditer(text):
            method, seen, _status, size = match.groups()
            if method == "GET" and seen == path and size.isdigit():
                sent += int(size)
        return sent

    def clear_requests(self) -> None:
        """Forget the requests seen so far, so a test can count from now."""
        self._flush()
        self._offset = self.access_log.stat().st_size


def _config(
    storage: Path,
    port: int,
    token_auth: TokenService | None,
    htpasswd_file: Path | None,
    foreign_layers: bool = False,
) -> str:
    lines = [
        "version: 0.1",
        "log:",
        "  level: info",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {storage}",
        "  delete:",
        "    enabled: true",
        "  maintenance:",
        "    uploadpurging:",
        "      enabled: false",
        "http:",
        f"  addr: 127.0.0.1:{port}",
        f"  secret: {uuid.uuid4().hex}",
    ]
    if foreign_layers:
        # As Docker Hub takes Windows images: a foreign layer's bytes are at its `urls`, so
        # the repository need not hold it.
        lines += [
            "validation:",
            "  manifests:",
            "    urls:",
            "      allow:",
            "        - ^https?://",
        ]
    if token_auth is not None:
        lines += [
            "auth:",
            "  token:",
            f"    realm: {token_auth.url}",
            f"    service: {token_auth.service}",
            f"    issuer: {token_auth.issuer}",
            f"    rootcertbundle: {token_auth.cert_path}",
        ]
    elif htpasswd_file is not None:
        lines += [
            "auth:",
            "  htpasswd:",
            "    realm: test-registry",
            f"    path: {htpasswd_file}",
        ]
    return "\n".join(lines) + "\n"


def start_registry(
    workdir: Path,
    *,
    token_auth: TokenService | None = None,
    htpasswd: tuple[str, str] | None = None,
    foreign_layers: bool = False,
) -> Registry:
    """Start a docker-registry storing under `workdir`: anonymous, token or htpasswd auth;
    `foreign_layers`: manifests may name foreign layers at any http(s) URL."""
    if token_auth is not None and htpasswd is not None:
        raise ValueError("choose token_auth or htpasswd, not both")
    workdir.mkdir(parents=True, exist_ok=True)
    htpasswd_file = None
    if htpasswd is not None:
        user, password = htpasswd
        htpasswd_file = workdir / "htpasswd"
        htpasswd_file.write_text(f"{user}:{bcrypt_hash(password)}\n")
    port = free_port()
    config = _config(workdir / "storage", port, token_auth, htpasswd_file, foreign_layers)
    registry = Registry(workdir, config, port)
    registry.start()
    return registry


__all__ = ["Registry", "bcrypt_hash", "free_port", "start_registry"]
