"""The `[prefetch]` table: a running server keeps its images in the cache, refreshing them
cheaply and leaving a failing or rate-limited upstream alone."""

from __future__ import annotations

from pathlib import Path

from mirror.config import Settings, UpstreamSettings
from mirror.config.prefetch import PrefetchSettings
from mirror.images.prefetch import Prefetched
from mirror.images.schedule import Failed, PrefetchSchedule, Skipped
from mirror.oci.reference import parse_reference
from mirror.services import open_services
from tests.conftest import MirrorFromSettings, RegistryFactory
from tests.support.images import make_image, push_image
from tests.support.oci import cached_blob, wait_until


def settings(url: str, cache_dir: Path, *refs: str, interval: float = 3600.0) -> Settings:
    upstream = UpstreamSettings(default=True, url=url, connect_timeout=2.0, breaker_reset=600.0)
    prefetch = PrefetchSettings(tuple(parse_reference(r) for r in refs), interval)
    return Settings(cache_dir=cache_dir, upstreams=(upstream,), tag_ttl=0.0, prefetch=prefetch)


async def test_a_server_with_a_prefetch_table_fetches_its_images_by_itself(
    mirror_from: MirrorFromSettings, make_registry: RegistryFactory, cache_dir: Path
) -> None:
    """No client asks: the server's first round puts every blob of the image in the cache."""
    upstream = make_registry()
    image = make_image(layer_sizes=(4000, 2000), seed="schedule-start")
    push_image(upstream.url, "team/app", "v1", image)
    await mirror_from(settings(upstream.url, cache_dir, "team/app:v1"))
    assert await wait_until(
        lambda: all(cached_blob(cache_dir, b.digest).exists() for b in image.blobs), within=60
    ), "the server did not prefetch its [prefetch] images"
    assert (cache_dir / "prefetch.lock").exists()


async def test_a_round_revalidates_with_head_and_fetches_only_what_changed(
    make_registry: RegistryFactory, cache_dir: Path
) -> None:
    """An unchanged tag costs one HEAD; a moved tag fetches the new manifest and new blobs."""
    upstream = make_registry()
    first = make_image(layer_sizes=(3000,), seed="schedule-first")
    push_image(upstream.url, "team/app", "v1", first)
    async with open_services(settings(upstream.url, cache_dir, "team/app:v1")) as services:
        assert services.settings.prefetch is not None
        schedule = PrefetchSchedule(services, services.settings.prefetch)
        (outcome,) = await schedule.run_round()
        assert isinstance(outcome, Prefetched) and str(outcome.digest) == first.digest
        upstream.clear_requests()
        (outcome,) = await schedule.run_round()
        assert isinstance(outcome, Prefetched) and outcome.fetched == 0
        assert upstream.requests() == [("HEAD", "/v2/team/app/manifests/v1")]

        second = make_image(layer_sizes=(3000,), seed="schedule-second")
        push_image(upstream.url, "team/app", "v1", second)
        upstream.clear_requests()
        (outcome,) = await schedule.run_round()
        assert isinstance(outcome, Prefetched) and str(outcome.digest) == second.digest
        assert outcome.fetched == sum(b.size for b in second.blobs)
        gets = sorted(path for method, path in upstream.requests() if method == "GET")
        assert gets == sorted(
            ["/v2/team/app/manifests/v1"] + [f"/v2/team/app/blobs/{b.digest}" for b in second.blobs]
        )
        record = await services.tag_store.get("docker.io", "team/app", "v1")
        assert record is not None and record.digest == second.digest


async def test_a_round_leaves_a_sparing_or_failing_upstream_alone(
    make_registry: RegistryFactory, cache_dir: Path
) -> None:
    """While the pull limit is spared or the circuit is open, a round sends nothing upstream."""
    upstream = make_registry()
    push_image(upstream.url, "team/app", "v1", make_image(seed="schedule-spare"))
    config = settings(upstream.url, cache_dir, "team/app:v1", "elsewhere.example/app:1")
    async with open_services(config) as services:
        assert services.settings.prefetch is not None
        schedule = PrefetchSchedule(services, services.settings.prefetch)
        health = services.router.route("team/app", None).upstream.health
        upstream.clear_requests()
        await health.spare(60.0, "test")
        skipped, failed = await schedule.run_round()
        assert isinstance(skipped, Skipped) and "pull limit" in skipped.reason
        assert isinstance(failed, Failed) and "not mirrored" in failed.error
        for _ in range(services.settings.upstream.breaker_failures):
            await health.failed()
        skipped, _ = await schedule.run_round()
        assert isinstance(skipped, Skipped) and "failing" in skipped.reason
        assert upstream.requests() == []
