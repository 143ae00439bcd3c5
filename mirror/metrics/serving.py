"""What `mirror serve` prepares for the metrics before any worker starts, and tidies after.

With `--workers N`, prometheus_client's multiprocess mode adds the workers' values up: each
worker writes its own into files in one directory, named by `PROMETHEUS_MULTIPROC_DIR`, which
must be set before a worker first imports prometheus_client (the library picks its mode then).
The supervisor makes a fresh directory for it, hands it down in the environment with each
worker's slot, forgets each worker that exits (its live gauges go, its counters stay: they count
since the start) and removes the directory when it stops. The files are named by slot, not by
process: a worker started in a dead one's place takes its slot over and counts on in its files,
so the directory, and the work of every scrape, stays that of the workers running however often
they are replaced. The supervisor holds a lock on the directory while it runs, so one left
behind by a supervisor killed outright is known as such, and removed by the next to start. This
module imports no metrics library itself.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mirror.config import ConfigError, Settings

# prometheus_client's own variable.
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Set by the supervisor for each worker: a number no other running worker has.
SLOT_ENV = "MIRROR_METRICS_SLOT"
PREFIX = "mirror-metrics-"
LOCK = ".lock"


def shared_directory() -> Path | None:
    """The directory this process's values are added up in with other workers', if any."""
    found = os.environ.get(MULTIPROCESS_ENV)
    return Path(found) if found else None


def worker_slot() -> str:
    """What this process's files in the shared directory are named by: its slot as a worker
    (its pid outside a supervisor, where no other process takes its place)."""
    return os.environ.get(SLOT_ENV) or str(os.getpid())


@contextmanager
def workers_metrics(settings: Settings) -> Iterator[Path | None]:
    """For the supervisor of several workers: a fresh directory for their values while the
    block runs (None when there is nothing to add up)."""
    if not settings.metrics or settings.workers < 2:
        yield None
        return
    parent = Path(tempfile.gettempdir())
    _remove_abandoned(parent)
    directory = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
    before = os.environ.get(MULTIPROCESS_ENV)
    os.environ[MULTIPROCESS_ENV] = str(directory)
    try:
        with open(directory / LOCK, "wb") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released by the kernel if we die
            yield directory
    finally:
        if before is None:
            os.environ.pop(MULTIPROCESS_ENV, None)
        else:
            os.environ[MULTIPROCESS_ENV] = before
        shutil.rmtree(directory, ignore_errors=True)


def _remove_abandoned(parent: Path) -> None:
    """Remove the directories of supervisors that died without removing their own: those whose
    lock nobody holds (one without a lock file yet is being made, and is left alone)."""
    for directory in parent.glob(f"{PREFIX}*"):
        try:
            with open(directory / LOCK, "rb") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(directory)
        except OSError:
            continue  # no lock file yet (being made), or its supervisor holds the lock


def forget_worker(slot: int) -> None:
    """The worker of `slot` exited: its live gauges (downloads, slots, circuits) no longer
    count. Called before the slot is given to another, which would start from them."""
    directory = shared_directory()
    if directory is None:
        return
    from prometheus_client import multiprocess  # after the directory is set: see above

    multiprocess.mark_process_dead(slot, str(directory))  # type: ignore[no-untyped-call]


def check_admin_address(settings: Settings) -> None:
    """Stop start-up with one line naming the option when `--admin-listen` cannot be served.

    Each worker binds the address itself (with SO_REUSEPORT, so they share it); this trial
    bind, with the same option and without listening, finds a port another program holds."""
    if not settings.metrics or settings.admin_listen is None:
        return
    host, port = settings.admin_listen
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as trial:
            trial.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            trial.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            trial.bind((host, port))
    except OSError as e:
        raise ConfigError(
            f"--admin-listen: cannot listen on {host}:{port}: {e.strerror or e}"
        ) from e
