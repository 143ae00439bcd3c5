"""Redis as replicated sites run it, from real redis-server processes on free loopback ports: a
master with a replica watched by a sentinel, and a three-node Cluster."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

from tests.support.processes import free_port
from tests.support.redis_server import RedisServer

SERVICE = "mymaster"


class SentinelServer(RedisServer):
    """`redis-server <conf> --sentinel`, watching one master (quorum 1: it alone decides)."""

    def __init__(self, workdir: Path, master_port: int, password: str | None) -> None:
        super().__init__(workdir)
        self.conf = workdir / "sentinel.conf"
        # Sentinel rewrites its file as it learns, so it is written once, before the start.
        lines = [
            f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 1",
            f"sentinel down-after-milliseconds {SERVICE} 1000",
            f"sentinel failover-timeout {SERVICE} 10000",
        ]
        if password:
            lines.append(f"sentinel auth-pass {SERVICE} {password}")
        self.conf.write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        return [binary, str(self.conf), "--sentinel", "--port", str(self.port),
                "--bind", "127.0.0.1", "--dir", str(self.workdir)]  # fmt: skip


class SentinelSet:
    """A master, one replica of it, and a sentinel that promotes the replica when the master
    dies. The master wants `password`; the sentinel wants none."""

    def __init__(self, workdir: Path, password: str = "sentinel-set-secret") -> None:
        self.password = password
        auth = ("--requirepass", password, "--masterauth", password)
        # No wait for more replicas before a full sync (5 s by default).
        self.master = RedisServer(workdir / "master", (*auth, "--repl-diskless-sync-delay", "0"))
        self.replica = RedisServer(
            workdir / "replica", (*auth, "--replicaof", "127.0.0.1", str(self.master.port))
        )
        self.sentinel = SentinelServer(workdir / "sentinel", self.master.port, password)
        self.url = f"redis+sentinel://:{password}@127.0.0.1:{self.sentinel.port}/{SERVICE}/0"

    def start(self) -> None:
        self.master.start()
        self.replica.start()
        _wait(lambda: self._info(self.replica.port).get("master_link_status") == "up", "sync")
        self.sentinel.start()
        # A failover needs a replica to promote: wait until the sentinel has found it.
        _wait(lambda: bool(self._ask_sentinel("SENTINEL", "REPLICAS", SERVICE)), "sentinel")

    def master_port(self) -> int:
        """The port of the master the sentinel names now."""
        _, port = self._ask_sentinel("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return int(port)

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password=self.password, socket_timeout=5)

    def flush(self) -> None:
        with self.client(self.master_port()) as master:
            master.flushall()

    def stop(self) -> None:
        for server in (self.sentinel, self.replica, self.master):
            server.stop()

    def _info(self, port: int) -> dict[str, object]:
        with self.client(port) as server:
            return dict(server.info("replication"))

    def _ask_sentinel(self, *command: str) -> list[bytes]:
        with redis.Redis(port=self.sentinel.port, socket_timeout=5) as sentinel:
            return list(sentinel.execute_command(*command))


class ClusterNodes:
    """Three Redis Cluster masters (no replicas), the slots spread over them by
    `redis-cli --cluster create`."""

    def __init__(self, workdir: Path) -> None:
        self.nodes = [RedisServer(workdir / f"node-{n}", _cluster_options()) for n in range(3)]
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        binary = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [binary, "--cluster", "create", *addresses, "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        _wait(lambda: all(self._state(node) == "ok" for node in self.nodes), "cluster")

    def client(self, node: RedisServer) -> redis.Redis:
        return redis.Redis(port=node.port, socket_timeout=5)

    def flush(self) -> None:
        for node in self.nodes:
            with self.client(node) as server:
                server.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def _state(self, node: RedisServer) -> object:
        with self.client(node) as server:
            return server.cluster("INFO").get("cluster_state")


def _cluster_options() -> tuple[str, ...]:
    # The bus port is given, not left at port + 10000, which may be taken.
    return ("--cluster-enabled", "yes", "--cluster-port", str(free_port()),
            "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000")  # fmt: skip


def _wait(ready: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout} s")
        time.sleep(0.1)
