"""The servers under test: the mirror and the CNCF registry in proxy mode (nginx: nginx.py)."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import Service
from tests.support.processes import free_port
from tests.support.registry import Registry


class MirrorServer(Service):
    """`python -m mirror serve` on a free loopback port, its JSON log lines in a file."""

    def __init__(
        self,
        workdir: Path,
        *,
        upstream_url: str,
        cache_dir: Path,
        tag_ttl: int,
        workers: int = 1,
        redis_url: str | None = None,
        source: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        """`source`: a directory holding the `mirror` package to run instead of the installed
        one (`python -m` looks in the working directory first), e.g. an exported commit;
        `extra_args`: more options for `mirror serve`."""
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cache_dir = cache_dir
        argv = [
            sys.executable,
            "-m",
            "mirror",
            "serve",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--upstream",
            upstream_url,
            "--cache-dir",
            str(cache_dir),
            "--tag-ttl",
            str(tag_ttl),
            "--workers",
            str(workers),
        ]
        if redis_url:
            argv += ["--redis-url", redis_url]
        argv += extra_args
        super().__init__(f"mirror (workers={workers})", argv, workdir / "mirror.log", source)
        self.workers = workers

    def start(self) -> None:
        super().start()
        try:
            self.wait_http(f"{self.url}/v2/")
            if self.workers > 1:
                self._wait_workers_ready()
        except BaseException:
            self.stop()  # also ends workers a supervisor forked, which nothing else would
            raise

    def _wait_workers_ready(self) -> None:
        """The first worker answers while the others may still be starting (a core's worth
        of imports for a tenth of a second or more), which a figure measured at once would
        count: wait for the supervisor's word that every worker accepts."""

        def ready() -> bool:
            lines = self.log_path.read_text(errors="replace").splitlines()
            return any(
                line.startswith("{") and json.loads(line).get("event") == "workers ready"
                for line in lines
            )

        self.wait_until(ready, "have all its workers ready")

    def problems(self) -> LogProblems:
        """What in the mirror's log suggests something went wrong."""
        return scan_mirror_log(self.log_path)


@dataclass
class LogProblems:
    """Warnings, errors, 5xx answers and cut-short responses found in a mirror log."""

    lines: int = 0
    warnings: int = 0
    errors: int = 0
    status_5xx: int = 0
    incomplete: int = 0
    samples: list[str] = field(default_factory=list)  # warnings, errors, 5xx
    incomplete_samples: list[str] = field(default_factory=list)

    def any(self, *, count_incomplete: bool = True) -> bool:
        bad = self.warnings or self.errors or self.status_5xx
        return bool(bad or (count_incomplete and self.incomplete))


def scan_mirror_log(path: Path, max_samples: int = 5) -> LogProblems:
    found = LogProblems()
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return found
    for line in text.splitlines():
        found.lines += 1
        try:
            record = json.loads(line)
        except ValueError:
            record = {"level": "error" if "Traceback" in line or "ERROR" in line else "other"}
        if not isinstance(record, dict):
            continue
        level = str(record.get("level", "")).lower()
        status = record.get("status")
        bad = False
        if level == "warning":
            found.warnings += 1
            bad = True
        elif level in ("error", "critical", "exception"):
            found.errors += 1
            bad = True
        if isinstance(status, int) and status >= 500:
            found.status_5xx += 1
            bad = True
        if bad and len(found.samples) < max_samples:
            found.samples.append(line[:400])
        if record.get("complete") is False:
            found.incomplete += 1
            if len(found.incomplete_samples) < max_samples:
                found.incomplete_samples.append(line[:400])
    return found


def start_proxy_registry(workdir: Path, upstream_url: str) -> Registry:
    """Debian's docker-registry (CNCF distribution) in pull-through proxy mode: the reference."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = "\n".join(
        [
            "version: 0.1",
            "log:",
            "  level: warn",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {workdir / 'storage'}",
            "http:",
            f"  addr: 127.0.0.1:{port}",
            f"  secret: {uuid.uuid4().hex}",
            "proxy:",
            f"  remoteurl: {upstream_url}",
            "",
        ]
    )
    registry = Registry(workdir, config, port)
    registry.start()
    return registry
