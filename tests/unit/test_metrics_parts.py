"""The parts of the metrics that need no server: import order, bounded activity, the page's
figures and escaping."""

from __future__ import annotations

import subprocess
import sys

from prometheus_client import CollectorRegistry

from mirror.api import status
from mirror.metrics.activity import Activity, merge
from mirror.metrics.families import Families
from mirror.metrics.summary import summarize


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
