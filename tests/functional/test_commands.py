"""The upkeep commands as an operator runs them (the real CLI in a subprocess) on a cache a real
mirror filled from a real registry, some while that mirror keeps serving."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from mirror.api.keys import UPKEEP
from mirror.commands.cachedir import human_size
from tests.conftest import MirrorFactory, Seeded
from tests.support.cache import HOUR, cache_usage, cached_tags, pull_image
from tests.support.cli import mirror_cli
from tests.support.htpasswd import write_htpasswd
from tests.support.images import Image, make_image, push_image
from tests.support.oci import ACCEPT_ALL, cached_blob, cached_manifest, wait_until
from tests.support.registry import Registry

pytestmark = pytest.mark.directory_only(
    reason="these check what a cache directory alone keeps (pull counts, blobs marked for the "
    "next gc, quarantine, du's table); the commands on a bucket are tested in test_s3_commands"
)


async def _pulled(
    client: TestClient[Any, Any], cache_dir: Path, *pulls: tuple[tuple[str, str], Image]
) -> None:
    """Pull whole images by tag, then wait until they are committed and their pulls counted."""
    for ref, image in pulls:
        repo, tag = ref
        await pull_image(client, repo, tag, image)
    assert await wait_until(
        lambda: all(cached_blob(cache_dir, b.digest).exists() for _, i in pulls for b in i.blobs)
    )
    await client.app[UPKEEP].access.flush()


def _files(cache_dir: Path) -> set[str]:
    return {
        str(p.relative_to(cache_dir))
        for part in ("blobs", "manifests", "tags", "spool")
        for p in (cache_dir / part).rglob("*")
        if p.is_file()
    }


def _flipped(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def _age(cache_dir: Path, *digests: str, hours: float = 2) -> None:
    """Date the last use of these blobs and manifests `hours` back, as if time had passed."""
    at = time.time() - hours * HOUR
    for digest in digests:
        for path in (cached_blob(cache_dir, digest), cached_manifest(cache_dir, digest)):
            if path.exists():
                os.utime(path, (at, at))


async def test_ls_lists_tags_with_digests_sizes_and_pulls(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded, cache_dir: Path
) -> None:
    """Each cached tag with its digest, its image's size (an index's children included), its
    last pull and pull count; the text form has the same rows."""
    client = await make_mirror(registry)
    amd64 = seeded.index.images[0]
    await _pulled(client, cache_dir, (seeded.schema2_ref, seeded.schema2))
    await _pulled(client, cache_dir, (seeded.schema2_ref, seeded.schema2))
    repo, tag = seeded.index_ref
    response = await client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT_ALL})
    assert await response.read() == seeded.index.manifest
    await _pulled(client, cache_dir, ((repo, amd64.digest), amd64))

    result = await mirror_cli("ls", "--json", "--cache-dir", cache_dir)
    assert result.returncode == 0, result.explain()
    rows = {f"{r['repository']}:{r['tag']}": r for r in json.loads(result.stdout)}
    schema2 = rows["seed/schema2:v1"]
    assert schema2["registry"] == "docker.io"
    assert schema2["digest"] == seeded.schema2.digest
    assert schema2["size"] == len(seeded.schema2.manifest) + sum(
        b.size for b in seeded.schema2.blobs
    )
    assert schema2["pulls"] == 2
    assert schema2["last_pull"].endswith("Z")
    multi = rows["seed/multi:v1"]
    assert multi["digest"] == seeded.index.digest
    assert multi["size"] == len(seeded.index.manifest) + len(amd64.manifest) + sum(
        b.size for b in amd64.blobs
    )
    assert multi["pulls"] == 1

    text = await mirror_cli("ls", "--cache-dir", cache_dir)
    assert text.returncode == 0, text.explain()
    header, *lines = text.stdout.splitlines()
    assert header.split() == ["REGISTRY", "REPOSITORY", "TAG", "DIGEST", "SIZE", "LAST", "PULL",
                              "PULLS"]  # fmt: skip
    line = next(line for line in lines if "seed/schema2" in line)
    assert line.split()[:4] == ["docker.io", "seed/schema2", "v1", seeded.schema2.digest[:19]]
    assert line.split()[-1] == "2"


async def test_ls_reads_a_pull_count_out_of_range_as_none(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded, cache_dir: Path
) -> None:
    """A pull count whose numbers no count or clock can have (an infinite count, a last pull
    past year 9999) is damaged: it reads as no pulls, as other damage does, and ls goes on."""
    client = await make_mirror(registry)
    await _pulled(client, cache_dir, (seeded.schema2_ref, seeded.schema2))
    repo, tag = seeded.schema2_ref
    counts = cache_dir / "tags" / "docker.io" / repo / "_pulls" / tag
    assert counts.is_file()
    for damaged in (b'{"count": 1e400, "last": 1}', b'{"count": 1, "last": 1e300}'):
        counts.write_bytes(damaged)
        result = await mirror_cli("ls", "--json", "--cache-dir", cache_dir)
        assert result.returncode == 0, result.explain()
        rows = {f"{r['repository']}:{r['tag']}": r for r in json.loads(result.stdout)}
        assert (rows[f"{repo}:{tag}"]["pulls"], rows[f"{repo}:{tag}"]["last_pull"]) == (0, None)


async def test_du_totals_by_registry_against_the_cap(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded, cache_dir: Path
) -> None:
    """Per registry: tags, images and bytes; then the total against the cap and the disk."""
    client = await make_mirror(registry)
    await _pulled(client, cache_dir, (seeded.schema2_ref, seeded.schema2))
    result = await mirror_cli("du", "--cache-dir", cache_dir, "--max-size", "1GiB")
    assert result.returncode == 0, result.explain()
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["REGISTRY", "TAGS", "IMAGES", "SIZE"]
    assert lines[1].split()[:3] == ["docker.io", "1", "1"]
    total = next(line for line in lines if line.startswith("total "))
    assert "of a 1.0 GiB cap" in total and "free of" in total, total


async def test_rm_removes_tags_and_images_and_gc_takes_their_blobs(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded, cache_dir: Path
) -> None:
    """`rm` by tag and by digest takes the tags and images; `gc` then frees the blobs they
    alone used and nothing else; the next pull fetches the image again."""
    client = await make_mirror(registry)
    await _pulled(
        client, cache_dir, (seeded.schema2_ref, seeded.schema2), (seeded.oci_ref, seeded.oci)
    )
    oci_repo, _ = seeded.oci_ref
    result = await mirror_cli(
        "rm",
        "--cache-dir",
        cache_dir,
        "docker.io/seed/schema2:v1",
        f"docker.io/{oci_repo}@{seeded.oci.digest}",
    )
    assert result.returncode == 0, result.explain()
    assert "untagged docker.io/seed/schema2:v1" in result.stdout
    assert f"deleted {seeded.oci.digest}" in result.stdout
    assert cached_tags(cache_dir) == set()
    assert not cached_manifest(cache_dir, seeded.schema2.digest).exists()
    assert all(cached_blob(cache_dir, b.digest).exists() for b in seeded.schema2.blobs)

    result = await mirror_cli("gc", "--cache-dir", cache_dir)
    assert result.returncode == 0, result.explain()
    freed = sum(b.size for b in [*seeded.schema2.blobs, *seeded.oci.blobs])
    assert f"{len(seeded.schema2.blobs) + len(seeded.oci.blobs)} blobs" in result.stdout
    assert cache_usage(cache_dir) == 0, freed
    await pull_image(client, *seeded.schema2_ref, seeded.schema2)


async def test_rm_refuses_a_bad_or_unknown_reference_and_removes_nothing(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded, cache_dir: Path
) -> None:
    """A reference that does not parse, or names nothing cached: one line, exit 1, and the
    valid references beside it are not acted on either."""
    client = await make_mirror(registry)
    await _pulled(client, cache_dir, (seeded.schema2_ref, seeded.schema2))
    before = _files(cache_dir)
    for bad in ("Not A Ref!", "docker.io/seed/nothing:v1", "sha256:1234"):
        result = await mirror_cli("rm", "--cache-dir", cache_dir, "docker.io/seed/schema2:v1", bad)
        assert result.returncode == 1, result.explain()
        assert len(result.error_lines) == 1 and result.error_lines[0].startswith("mirror rm: ")
        assert "Traceback" not in result.stderr
        assert _files(cache_dir) == before


async def test_gc_dry_run_removes_nothing(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded, cache_dir: Path
) -> None:
    """`gc --dry-run` prints what would go and leaves every file; `gc` then frees the same."""
    client = await make_mirror(registry)
    await _pulled(client, cache_dir, (seeded.schema2_ref, seeded.schema2))
    repo, _ = seeded.oci_ref
    await _pulled(client, cache_dir, ((repo, seeded.oci.digest), seeded.oci))  # by digest
    _age(cache_dir, seeded.oci.digest, *(b.digest for b in seeded.oci.blobs))
    (cache_dir / "spool" / "debris.part").write_bytes(b"left by a crash")
    os.utime(cache_dir / "spool" / "debris.part", (0, 0))
    before = _files(cache_dir)

    dry = await mirror_cli("gc", "--dry-run", "--cache-dir", cache_dir)
    assert dry.returncode == 0, dry.explain()
    assert _files(cache_dir) == before
    expected = f"1 manifest, {len(seeded.oci.blobs)} blobs, 1 spool file"
    assert f"unreferenced: would remove {expected}" in dry.stdout, dry.stdout

    real = await mirror_cli("gc", "--cache-dir", cache_dir)
    assert real.returncode == 0, real.explain()
    assert f"unreferenced: removed {expected}" in real.stdout, real.stdout
    assert (
        dry.stdout.splitlines()[-1].replace("would free", "freed") == real.stdout.splitlines()[-1]
    )
    assert not cached_manifest(cache_dir, seeded.oci.digest).exists()
    assert all(cached_blob(cache_dir, b.digest).exists() for b in seeded.schema2.blobs)


async def test_gc_spares_a_recent_pull_by_digest(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded, cache_dir: Path
) -> None:
    """Content no tag leads to stays through the protection window: a pull by digest whose
    blobs may still be coming is not harmed."""
    client = await make_mirror(registry)
    repo, _ = seeded.oci_ref
    await _pulled(client, cache_dir, ((repo, seeded.oci.digest), seeded.oci))
    result = await mirror_cli("gc", "--cache-dir", cache_dir)
    assert result.returncode == 0, result.explain()
    assert "unreferenced: removed nothing" in result.stdout, result.stdout
    assert cached_manifest(cache_dir, seeded.oci.digest).exists()
    assert all(cached_blob(cache_dir, b.digest).exists() for b in seeded.oci.blobs)


async def test_gc_evicts_down_to_the_cap(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded, cache_dir: Path
) -> None:
    """Past the cap, `gc` evicts the least recently pulled image whole, and no more."""
    client = await make_mirror(registry)
    recent = make_image(layer_sizes=(5000,), seed="gc-recent")
    push_image(registry.url, "gc/recent", "v1", recent)
    await _pulled(client, cache_dir, (seeded.schema2_ref, seeded.schema2))
    await _pulled(client, cache_dir, (("gc/recent", "v1"), recent))
    cap = cache_usage(cache_dir) - 1
    result = await mirror_cli(
        "gc", "--cache-dir", cache_dir, "--max-size", str(cap), "--protect-window", "0"
    )
    assert result.returncode == 0, result.explain()
    assert "over the limits: removed 1 image, 1 tag, 1 manifest" in result.stdout, result.stdout
    assert cached_tags(cache_dir) == {"gc/recent:v1"}
    assert not any(cached_blob(cache_dir, b.digest).exists() for b in seeded.schema2.blobs)
    assert cache_usage(cache_dir) <= cap


async def test_verify_quarantines_a_flipped_byte_and_the_next_pull_refetches(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded, cache_dir: Path
) -> None:
    """A blob with one byte changed is found, moved to quarantine/ and reported (exit 1); the
    next pull fetches a good copy from upstream, and verify is then clean."""
    client = await make_mirror(registry)
    await _pulled(client, cache_dir, (seeded.schema2_ref, seeded.schema2))
    layer = seeded.schema2.layers[1]
    path = cached_blob(cache_dir, layer.digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    result = await mirror_cli("verify", "--cache-dir", cache_dir)
    assert result.returncode == 1, result.explain()
    assert f"bad blob {layer.digest}" in result.stdout
    assert "1 bad" in result.stdout.splitlines()[-1]
    quarantined = cache_dir / "quarantine" / "blobs" / "sha256" / layer.digest.split(":")[1]
    assert quarantined.read_bytes() == bytes(data)
    assert not path.exists()

    registry.clear_requests()
    repo, _ = seeded.schema2_ref
    response = await client.get(f"/v2/{repo}/blobs/{layer.digest}")
    assert await response.read() == layer.data
    assert ("GET", f"/v2/{repo}/blobs/{layer.digest}") in registry.requests()
    assert await wait_until(path.exists)
    result = await mirror_cli("verify", "--cache-dir", cache_dir)
    assert result.returncode == 0, result.explain()


@pytest.mark.parametrize("damaged", [b'{"mediaType": 7', b'{"mediaType": ["a", "list"]}'])
async def test_verify_finds_a_manifest_whose_sidecar_is_damaged(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded, cache_dir: Path, damaged: bytes
) -> None:
    """A manifest whose bytes are intact but whose recorded media type is lost cannot be
    served (offline it is missing): verify reports it and sets it aside with its sidecar, and
    the next pull fetches it again."""
    client = await make_mirror(registry)
    await _pulled(client, cache_dir, (seeded.schema2_ref, seeded.schema2))
    path = cached_manifest(cache_dir, seeded.schema2.digest)
    sidecar = path.with_name(path.name + ".json")
    sidecar.write_bytes(damaged)

    result = await mirror_cli("verify", "--cache-dir", cache_dir)
    assert result.returncode == 1, result.explain()
    assert f"bad manifest {seeded.schema2.digest}" in result.stdout
    assert "1 bad" in result.stdout.splitlines()[-1]
    assert not path.exists() and not sidecar.exists()

    await client.close()
    client = await make_mirror(registry)  # a new process: nothing in memory
    repo, _ = seeded.schema2_ref
    response = await client.get(
        f"/v2/{repo}/manifests/{seeded.schema2.digest}", headers={"Accept": ACCEPT_ALL}
    )
    assert await response.read() == seeded.schema2.manifest
    assert await wait_until(path.exists)
    result = await mirror_cli("verify", "--cache-dir", cache_dir)
    assert result.returncode == 0, result.explain()


async def test_du_shows_the_quarantine_and_gc_clears_it_once_old_enough(
    make_mirror: MirrorFactory, registry: Registry, seeded: Seeded, cache_dir: Path
) -> None:
    """What verify sets aside is on a line of its own in du, outside the total; gc keeps it
    for --keep-quarantined after it was set aside (not after the file was first stored), then
    removes it; 0 removes it all."""
    client = await make_mirror(registry)
    await _pulled(client, cache_dir, (seeded.schema2_ref, seeded.schema2))
    layer = seeded.schema2.layers[1]
    path = cached_blob(cache_dir, layer.digest)
    path.write_bytes(_flipped(path.read_bytes()))
    _age(cache_dir, layer.digest, hours=30 * 24)
    one_file = f"1 file ({human_size(layer.size)})"
    assert (await mirror_cli("verify", "--cache-dir", cache_dir)).returncode == 1
    quarantined = cache_dir / "quarantine" / "blobs" / "sha256" / layer.digest.split(":")[1]
    assert quarantined.exists()

    du = await mirror_cli("du", "--cache-dir", cache_dir)
    assert du.returncode == 0, du.explain()
    line = next((line for line in du.stdout.splitlines() if line.startswith("quarantine:")), "")
    assert line.startswith(f"quarantine: {one_file} set aside by verify"), du.stdout
    total = next(line for line in du.stdout.splitlines() if line.startswith("total "))
    assert total.startswith(f"total {human_size(cache_usage(cache_dir))};"), du.stdout

    kept = await mirror_cli("gc", "--cache-dir", cache_dir)
    assert kept.returncode == 0, kept.explain()
    assert "quarantine:" not in kept.stdout and quarantined.exists(), kept.stdout
    week_ago = time.time() - 7 * 24 * HOUR - 60
    os.utime(quarantined, (week_ago, week_ago))
    dry = await mirror_cli("gc", "--dry-run", "--cache-dir", cache_dir)
    assert f"quarantine: would remove {one_file}" in dry.stdout, dry.explain()
    assert quarantined.exists()
    gone = await mirror_cli("gc", "--cache-dir", cache_dir)
    assert f"quarantine: removed {one_file}" in gone.stdout, gone.explain()
    assert not quarantined.exists()

    manifest = cached_manifest(cache_dir, seeded.schema2.digest)
    manifest.with_name(manifest.name + ".json").write_bytes(b"{}")
    assert (await mirror_cli("verify", "--cache-dir", cache_dir)).returncode == 1
    assert (cache_dir / "quarantine" / "manifests").exists()
    cleared = await mirror_cli("gc", "--keep-quarantined", "0", "--cache-dir", cache_dir)
    assert "quarantine: removed 2 files" in cleared.stdout, cleared.explain()
    assert not [p for p in (cache_dir / "quarantine").rglob("*") if p.is_file()]
    du = await mirror_cli("du", "--cache-dir", cache_dir)
    assert "quarantine:" not in du.stdout, du.explain()


async def test_gc_and_verify_run_beside_a_serving_mirror(
    make_mirror: MirrorFactory, registry: Registry, cache_dir: Path
) -> None:
    """Pulls that run while gc and verify work on the same cache directory all complete, and
    neither command takes anything a tag leads to."""
    images = {
        f"beside/app{n}": make_image(layer_sizes=(200_000,), seed=f"beside{n}") for n in range(6)
    }
    for repo, image in images.items():
        push_image(registry.url, repo, "v1", image)
    client = await make_mirror(registry)
    done = asyncio.Event()

    async def keep_pulling() -> int:
        rounds = 0
        while rounds == 0 or not done.is_set():
            await asyncio.gather(
                *(pull_image(client, repo, "v1", image) for repo, image in images.items())
            )
            rounds += 1
        return rounds

    puller = asyncio.create_task(keep_pulling())
    gc, verify = await asyncio.gather(
        mirror_cli("gc", "--cache-dir", cache_dir), mirror_cli("verify", "--cache-dir", cache_dir)
    )
    done.set()
    assert await puller > 1
    assert gc.returncode == 0, gc.explain()
    assert verify.returncode == 0, verify.explain()
    assert await wait_until(
        lambda: all(cached_blob(cache_dir, i.layers[0].digest).exists() for i in images.values())
    )


async def test_commands_refuse_a_missing_cache(tmp_path: Path) -> None:
    """Pointed at a directory with no cache, each command says so in one line (exit 1)."""
    for command in ("ls", "du", "gc", "verify"):
        result = await mirror_cli(command, "--cache-dir", tmp_path / "nowhere")
        assert result.returncode == 1, result.explain()
        assert result.error_lines == [f"mirror {command}: no cache at {tmp_path / 'nowhere'} "
                                      "(--cache-dir, MIRROR_CACHE_DIR)"]  # fmt: skip
        assert not (tmp_path / "nowhere").exists()


async def test_export_refuses_a_missing_cache_and_creates_none(tmp_path: Path) -> None:
    """Without --pull an export reads the cache alone: pointed at a directory with no cache,
    it says so in one line (exit 1), creates no cache there and writes no archive."""
    nowhere, output = tmp_path / "nowhere", tmp_path / "bundle.tar"
    result = await mirror_cli("export", "--cache-dir", nowhere, "-o", output, "alpine:3.20")
    assert result.returncode == 1, result.explain()
    assert result.error_lines == [
        f"mirror export: no cache at {nowhere} (--cache-dir, MIRROR_CACHE_DIR)"
    ], result.explain()
    assert not nowhere.exists()
    assert not output.exists()


async def test_rm_refuses_a_local_namespace(tmp_path: Path, cache_dir: Path) -> None:
    """Pushed images are not cache: `mirror rm` names the registry API instead of removing."""
    users = write_htpasswd(tmp_path / "users", {"admin": "secret"})
    config = tmp_path / "mirror.toml"
    config.write_text(f'htpasswd = "{users}"\n[local."registry.local"]\n')
    result = await mirror_cli(
        "rm", "--config", config, "--cache-dir", cache_dir, "registry.local/team/app:v1"
    )
    assert result.returncode == 1, result.explain()
    assert "local namespace" in result.stderr and "DELETE" in result.stderr


async def test_commands_say_what_the_file_system_refused_in_one_line(tmp_path: Path) -> None:
    """A file where the cache directory should be, a config file that is not UTF-8 and an
    empty output name: one line each, no traceback."""
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    not_utf8 = tmp_path / "bad.toml"
    not_utf8.write_bytes(b"\xff\xfe\x00")
    cases = [
        (("prefetch", "--cache-dir", a_file, "library/alpine:3.20"), 1, "mirror prefetch: "),
        (("export", "--cache-dir", a_file, "-o", tmp_path / "x.tar", "alpine:3.20"), 1,
         "mirror export: "),
        (("ls", "--config", not_utf8), 2, f"mirror: --config: {not_utf8} is not valid TOML"),
        (("export", "--cache-dir", tmp_path, "-o", "", "alpine:3.20"), 1,
         "mirror export: --output: '' names no file"),
    ]  # fmt: skip
    for args, code, expected in cases:
        result = await mirror_cli(*args)
        assert result.returncode == code, result.explain()
        assert len(result.error_lines) == 1, result.explain()
        assert result.error_lines[0].startswith(expected), result.explain()
        assert "Traceback" not in result.explain()
