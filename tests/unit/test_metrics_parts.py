"""The parts of the metrics that need no server: import order, bounded activity, the page's
escaping, the admin options and their start-up checks."""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from mirror.api import status
from mirror.config import ConfigError, Settings, load_settings
from mirror.metrics.activity import Activity, merge
from mirror.metrics.families import Families
from mirror.metrics.serving import LOCK, MULTIPROCESS_ENV, PREFIX, workers_metrics
from mirror.metrics.summary import summarize
from tests.support.processes import free_port


def test_the_command_line_does_not_import_prometheus_client() -> None:
    """`mirror serve` sets the workers' shared directory before prometheus_client is first
    imported (it picks its multiprocess mode then), so nothing the CLI imports may import it."""
    code = "import sys, mirror.cli; print('prometheus_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_pull_counts_stay_bounded_and_keep_the_most_pulled() -> None:
    """Past its bound the activity forgets the less pulled names, never the most pulled."""
    activity = Activity(max_images=10, recent=3)
    for _ in range(50):
        activity.pulled("docker.io", "library/alpine")
    for n in range(100):
        activity.pulled("ghcr.io", f"org/app{n}")
    snapshot = activity.snapshot()
    assert len(snapshot["pulls"]) <= 10
    assert snapshot["pulls"][0] == ["docker.io/library/alpine", 50]
    for n in range(5):
        activity.missed("blob", "docker.io/library/alpine", f"sha256:{n}", 200, n)
    assert [m["reference"] for m in activity.snapshot()["misses"]] == [
        "sha256:2",
        "sha256:3",
        "sha256:4",
    ]


def test_snapshots_of_several_workers_add_up() -> None:
    """Pull counts are summed across workers, misses merged latest first; a damaged snapshot
    is skipped."""
    one = {"pulls": [["docker.io/a", 3], ["docker.io/b", 1]], "misses": []}
    miss = {"at": 2.0, "kind": "blob", "image": "docker.io/a", "reference": "x", "status": 200}
    two = {"pulls": [["docker.io/b", 5]], "misses": [{**miss, "size": 7}]}
    merged = merge([one, two, {"pulls": [["bad"]]}, {"misses": [{"at": "x"}]}])
    assert merged.pulls == [("docker.io/b", 6), ("docker.io/a", 3)]
    assert [m.size for m in merged.misses] == [7]


def test_the_page_escapes_what_clients_named() -> None:
    """An image name or reference with markup in it is shown as text, never as markup."""
    registry = CollectorRegistry()
    Families(registry, redis=False)
    activity = Activity()
    activity.pulled("docker.io", "<script>alert(1)</script>")
    activity.missed("manifest", "docker.io/x", '"><img src=x>', 404, 0)
    page = status.render(summarize(registry.collect(), ["docker.io"]), merge([activity.snapshot()]))
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;" in page and "&quot;&gt;&lt;img" in page


@pytest.mark.parametrize("holder", ["another program", "the mirror's own port"])
def test_serve_refuses_an_admin_address_in_use_with_one_line(tmp_path: Path, holder: str) -> None:
    """An --admin-listen address already listened on (by anything, the mirror's own --listen
    included) stops start-up with one line naming the option."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        if holder == "another program":
            listen, admin = free_port(), busy
        else:
            taken.close()
            listen = admin = busy
        result = subprocess.run(
            [sys.executable, "-m", "mirror", "serve", "--listen", f"0.0.0.0:{listen}",
             "--admin-listen", f"127.0.0.1:{admin}", "--cache-dir", str(tmp_path / "cache")],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mirror: --admin-listen: cannot listen"), lines


def test_admin_allow_takes_lists_and_comma_separated_ranges() -> None:
    """The file's list and a flag's commas give the same ranges; a bad one names the option."""
    from_file = load_settings(None, {"admin_allow": ["10.0.0.0/8", "::1"]}, environ={})
    from_env = load_settings(None, {}, environ={"MIRROR_ADMIN_ALLOW": "10.0.0.0/8, ::1"})
    assert from_file.admin_allow == from_env.admin_allow
    assert [str(r) for r in from_env.admin_allow] == ["10.0.0.0/8", "::1/128"]
    assert load_settings(None, {}, environ={"MIRROR_ADMIN_ALLOW": ""}).admin_allow == ()
    with pytest.raises(ConfigError, match=r"^--admin-allow: "):
        load_settings(None, {"admin_allow": "10.0.0.300/8"}, environ={})


def test_the_workers_directory_is_locked_while_used_and_abandoned_ones_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A supervisor's directory is locked while it runs and removed after; at start it removes
    the directories of supervisors that died (unlocked), never a live one's or one being made."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv(MULTIPROCESS_ENV, raising=False)
    dead, live, new = (tmp_path / f"{PREFIX}{name}" for name in ("dead", "live", "new"))
    for directory in (dead, live, new):
        directory.mkdir()
    (dead / LOCK).touch()
    (dead / "counter_1.db").touch()
    with open(live / LOCK, "wb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with workers_metrics(Settings(workers=2)) as directory:
            assert directory is not None and os.environ[MULTIPROCESS_ENV] == str(directory)
            assert not dead.exists() and live.exists() and new.exists()
            with open(directory / LOCK, "rb") as lock, pytest.raises(BlockingIOError):
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert not directory.exists() and MULTIPROCESS_ENV not in os.environ
    with workers_metrics(Settings(workers=1)) as none:
        assert none is None
