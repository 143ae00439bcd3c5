"""The real pull clients, each configured to reach docker.io through the mirror.

Every client gets its own state under the session's temp dir and an HTTPS proxy that refuses
connections, so a request meant for the real Docker Hub fails at once on loopback instead of
leaving the machine: a pull that succeeds can only have come through the mirror.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.daemons import Daemon, require_binary, require_root, unavailable

# Generous: the 200 MiB image is written twice (download, then vfs unpack) on a slow CI disk.
PULL_TIMEOUT = 300.0

# Accept any signature: the images are unsigned and built by the suite.
INSECURE_POLICY = {"default": [{"type": "insecureAcceptAnything"}]}


@dataclass(frozen=True)
class Outcome:
    """What a client command did: exit status and everything it printed."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def explain(self) -> str:
        return f"$ {' '.join(self.argv)}\nexit {self.returncode}\n{self.output}"


def run(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 120) -> Outcome:
    """Run a client command to completion and capture its output."""
    done = subprocess.run(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Outcome(argv, done.returncode, done.stdout, done.stderr)


# Port 1 (tcpmux) is privileged and never served here: connections are refused at once.
DEAD_PROXY = "http://127.0.0.1:1"


def offline_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment with a refusing proxy for everything but loopback."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(
        HTTPS_PROXY=DEAD_PROXY,
        HTTP_PROXY=DEAD_PROXY,
        https_proxy=DEAD_PROXY,
        http_proxy=DEAD_PROXY,
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    env.update(extra or {})
    return env


def write_json(path: Path, document: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def hosts_toml(mirror_url: str) -> str:
    """containerd's hosts.toml for docker.io that sends every pull to the mirror."""
    return (
        f'server = "{mirror_url}"\n\n[host."{mirror_url}"]\n  capabilities = ["pull", "resolve"]\n'
    )


def registries_conf(mirror_host: str) -> str:
    """podman's registries.conf: docker.io with the mirror (plain HTTP) in front of it."""
    return (
        'unqualified-search-registries = ["docker.io"]\n'
        "\n"
        "[[registry]]\n"
        'prefix = "docker.io"\n'
        'location = "docker.io"\n'
        "\n"
        "[[registry.mirror]]\n"
        f'location = "{mirror_host}"\n'
        "insecure = true\n"
    )


def daemon_json(mirror_url: str, mirror_host: str) -> dict[str, object]:
    """Docker's daemon.json: the mirror for docker.io, reachable over plain HTTP."""
    return {"registry-mirrors": [mirror_url], "insecure-registries": [mirror_host]}


def start_daemon(daemon: Daemon, answers: Callable[[], bool], *, timeout: float) -> None:
    """Start a daemon and wait until its client gets answers; skip (or fail) if it never does."""
    daemon.start()
    if not daemon.wait_until(answers, timeout=timeout):
        failure = daemon.describe_failure()
        daemon.stop()
        unavailable(failure)


class Containerd:
    """A containerd daemon with its own root, state and socket, driven by `ctr`."""

    def __init__(self, workdir: Path, mirror_url: str) -> None:
        require_root("containerd")
        self.binary = require_binary("containerd")
        self.ctr = require_binary("ctr")
        self.workdir = workdir
        self.socket = workdir / "containerd.sock"
        self.hosts_dir = workdir / "hosts"
        (self.hosts_dir / "docker.io").mkdir(parents=True, exist_ok=True)
        (self.hosts_dir / "docker.io" / "hosts.toml").write_text(hosts_toml(mirror_url))
        config = workdir / "config.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{workdir / "root"}"\n'
            f'state = "{workdir / "state"}"\n'
            # No Kubernetes here: the CRI plugin would only slow start-up and probe the network.
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            "[grpc]\n"
            f'  address = "{self.socket}"\n'
            "[ttrpc]\n"
            f'  address = "{self.socket}.ttrpc"\n'
            "[debug]\n"
            f'  address = "{workdir / "debug.sock"}"\n'
            "[metrics]\n"
            '  address = ""\n'
        )
        # ctr, not the daemon, does the HTTP of `ctr images pull`.
        self.env = offline_env()
        self.daemon = Daemon(
            "containerd", [self.binary, "--config", str(config)], workdir / "containerd.log"
        )

    def start(self) -> None:
        start_daemon(self.daemon, lambda: self.run("version", timeout=5).ok, timeout=30)

    def stop(self) -> None:
        self.daemon.stop()

    def run(self, *args: str, timeout: float = PULL_TIMEOUT) -> Outcome:
        argv = [self.ctr, "--address", str(self.socket), *args]
        return run(argv, env=self.env, timeout=timeout)

    def pull(self, ref: str, *, platform: str | None = None) -> Outcome:
        """`ctr images pull --hosts-dir DIR docker.io/REF` (native snapshotter: no overlayfs).

        With `--debug`, ctr prints every request URL it sends, `?ns=` included.
        """
        extra = ["--platform", platform] if platform else []
        return self.run(
            "--debug",
            "images",
            "pull",
            "--hosts-dir",
            str(self.hosts_dir),
            "--snapshotter",
            "native",
            *extra,
            f"docker.io/{ref}",
        )

    def image_digest(self, ref: str) -> str | None:
        """The manifest (or index) digest the image `docker.io/REF` points at, if present."""
        listing = self.run("images", "ls", f"name==docker.io/{ref}", timeout=30)
        for line in listing.stdout.splitlines()[1:]:
            columns = line.split()
            if len(columns) >= 3 and columns[0] == f"docker.io/{ref}":
                return columns[2]
        return None

    def content_digests(self) -> set[str]:
        """Every blob digest in containerd's content store."""
        listing = self.run("content", "ls", "--quiet", timeout=30)
        return set(listing.stdout.split())

    def remove(self, ref: str) -> None:
        """Delete the image and, synchronously, the content and snapshots only it used."""
        self.run("images", "rm", "--sync", f"docker.io/{ref}", timeout=60)


class Docker:
    """dockerd (vfs, no iptables, no bridge) on the suite's containerd, mirror in daemon.json."""

    def __init__(self, workdir: Path, containerd: Containerd, mirror_url: str, mirror_host: str):
        require_root("dockerd")
        self.dockerd = require_binary("dockerd")
        self.cli = require_binary("docker")
        self.workdir = workdir
        self.socket = workdir / "docker.sock"
        self.config = write_json(workdir / "daemon.json", daemon_json(mirror_url, mirror_host))
        self.daemon = Daemon(
            "dockerd",
            [
                self.dockerd,
                "--config-file",
                str(self.config),
                "--host",
                f"unix://{self.socket}",
                "--containerd",
                str(containerd.socket),
                "--data-root",
                str(workdir / "data"),
                "--exec-root",
                str(workdir / "exec"),
                "--pidfile",
                str(workdir / "dockerd.pid"),
                "--storage-driver",
                "vfs",
                "--iptables=false",
                "--bridge=none",
            ],
            workdir / "dockerd.log",
            env=offline_env(),
        )
        self.env = {**os.environ, "DOCKER_CONFIG": str(workdir / "cli")}

    def start(self) -> None:
        start_daemon(self.daemon, lambda: self.run("version", timeout=10).ok, timeout=60)

    def stop(self) -> None:
        self.daemon.stop()

    def run(self, *args: str, timeout: float = PULL_TIMEOUT) -> Outcome:
        argv = [self.cli, "--host", f"unix://{self.socket}", *args]
        return run(argv, env=self.env, timeout=timeout)

    def pull(self, ref: str, *, platform: str | None = None) -> Outcome:
        """`docker pull REF`: a docker.io name, so it goes to the registry mirror first."""
        extra = ["--platform", platform] if platform else []
        return self.run("pull", *extra, ref)

    def inspect(self, ref: str, field: str) -> str | None:
        found = self.run("image", "inspect", "--format", "{{." + field + "}}", ref, timeout=30)
        return found.stdout.strip() if found.ok else None

    def image_id(self, ref: str) -> str | None:
        return self.inspect(ref, "Id")

    def remove(self, ref: str) -> None:
        """Delete the image with all its tags and digests, and its layers."""
        image_id = self.image_id(ref)
        if image_id:
            self.run("image", "rm", "--force", image_id, timeout=60)

    def log_size(self) -> int:
        return self.daemon.log.stat().st_size

    def log_since(self, mark: int) -> str:
        with self.daemon.log.open("rb") as f:
            f.seek(mark)
            return f.read().decode(errors="replace")


class Skopeo:
    """skopeo with a permissive signature policy and no system registries configuration."""

    def __init__(self, workdir: Path) -> None:
        self.binary = require_binary("skopeo")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.policy = write_json(workdir / "policy.json", INSECURE_POLICY)
        empty_conf = workdir / "registries.conf"
        empty_conf.write_text("")
        (workdir / "tmp").mkdir(exist_ok=True)
        self.env = offline_env(
            {"CONTAINERS_REGISTRIES_CONF": str(empty_conf), "TMPDIR": str(workdir / "tmp")}
        )

    def run(self, *args: str, timeout: float = PULL_TIMEOUT) -> Outcome:
        argv = [self.binary, "--policy", str(self.policy), *args]
        return run(argv, env=self.env, timeout=timeout)

    def copy(self, source: str, destination: str) -> Outcome:
        """`skopeo copy docker://SOURCE DEST` over plain HTTP."""
        return self.run("copy", "--src-tls-verify=false", f"docker://{source}", destination)

    def inspect(self, source: str, *, raw: bool = False) -> Outcome:
        extra = ["--raw"] if raw else []
        return self.run("inspect", "--tls-verify=false", *extra, f"docker://{source}")


class Podman:
    """podman with vfs storage under the temp dir and registries.conf pointing at the mirror."""

    def __init__(self, workdir: Path, mirror_host: str) -> None:
        self.binary = require_binary("podman")
        self.workdir = workdir
        for sub in ("root", "runroot", "tmp", "libpod"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        self.registries = workdir / "registries.conf"
        self.registries.write_text(registries_conf(mirror_host))
        self.policy = write_json(workdir / "policy.json", INSECURE_POLICY)
        storage = workdir / "storage.conf"
        storage.write_text(
            "[storage]\n"
            'driver = "vfs"\n'
            f'graphroot = "{workdir / "root"}"\n'
            f'runroot = "{workdir / "runroot"}"\n'
        )
        containers = workdir / "containers.conf"
        containers.write_text(
            '[engine]\nevents_logger = "file"\ncgroup_manager = "cgroupfs"\n'
            f'tmp_dir = "{workdir / "libpod"}"\n'
        )
        self.env = offline_env(
            {
                "CONTAINERS_REGISTRIES_CONF": str(self.registries),
                "CONTAINERS_STORAGE_CONF": str(storage),
                "CONTAINERS_CONF": str(containers),
                "TMPDIR": str(workdir / "tmp"),
            }
        )

    def check_usable(self) -> None:
        """Skip/fail when podman cannot even read its (vfs) storage here."""
        info = self.run("info", timeout=60)
        if not info.ok:
            unavailable(f"podman cannot run here:\n{info.explain()}")

    def run(self, *args: str, timeout: float = PULL_TIMEOUT) -> Outcome:
        return run([self.binary, *args], env=self.env, timeout=timeout)

    def pull(self, ref: str) -> Outcome:
        """`podman pull docker.io/REF`: registries.conf sends it to the mirror first."""
        return self.run("pull", "--signature-policy", str(self.policy), f"docker.io/{ref}")

    def image_id(self, ref: str) -> str | None:
        found = self.run("image", "inspect", "--format", "{{.Id}}", f"docker.io/{ref}", timeout=30)
        return found.stdout.strip() if found.ok else None

    def remove(self, ref: str) -> None:
        image_id = self.image_id(ref)
        if image_id:
            self.run("rmi", "--force", image_id, timeout=60)
