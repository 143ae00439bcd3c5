"""How big and how long: the full run and the `--quick` one differ only in these numbers."""

from __future__ import annotations

from dataclasses import dataclass, replace

MIB = 1024 * 1024


@dataclass(frozen=True)
class Plan:
    """Sizes, durations and repetitions shared by every phase."""

    quick: bool
    runs: int  # each figure is the median of this many measurements
    blob_bytes: int  # the big layer used by the warm-blob and cold phases
    wrk_seconds: int
    wrk_connections: int = 64
    wrk_threads: int = 2
    warm_clients: int = 8
    # Each warm-blob client reads about this much per run (its GET repeated).
    warm_bytes_per_client: int = 512 * MIB
    cold_clients: tuple[int, ...] = (1, 10, 50)
    # Cold blobs asked of each fresh server per run, each right after the same blob direct.
    first_byte_blobs: int = 20
    # skopeo pulls of the cold image per server and run, each paired with a direct one: a pull
    # moves by a tenth from one to the next on a shared machine, more than the target's margin.
    skopeo_pairs: int = 3
    # The cold phase repeats N=1 and N=max behind an upstream link of this speed (bytes/s).
    slow_link: float = 64 * MIB
    tag_ttl: int = 3600
    # Upper bound on any single client transfer, so a stuck server cannot hang the run.
    transfer_timeout: float = 300.0


def full_plan() -> Plan:
    return Plan(quick=False, runs=3, blob_bytes=256 * MIB, wrk_seconds=10)


def quick_plan() -> Plan:
    return Plan(
        quick=True,
        runs=1,
        blob_bytes=64 * MIB,
        wrk_seconds=2,
        warm_bytes_per_client=128 * MIB,
        first_byte_blobs=10,
        skopeo_pairs=1,
        transfer_timeout=120.0,
    )


def with_overrides(plan: Plan, *, runs: int | None, blob_mib: int | None) -> Plan:
    """The plan with the command line's explicit numbers applied."""
    if runs is not None:
        plan = replace(plan, runs=runs)
    if blob_mib is not None:
        plan = replace(plan, blob_bytes=blob_mib * MIB)
    return plan
