"""The status page in a real headless browser: it renders, its figures are those of `/metrics`
after known pulls, and neither holds a secret."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.conftest import MirrorFactory, RegistryFactory, Seeded
from tests.support.browser import Figures, dump_dom, screenshot
from tests.support.images import push_image
from tests.support.metrics import Scrape, scrape
from tests.support.oci import ACCEPT_ALL

USER = "mirror-bot"


@pytest.fixture
def password() -> str:
    """An upstream password no page may show (random, so no other text can hold it)."""
    return f"pw-{uuid.uuid4().hex}"


async def test_the_page_shows_what_metrics_counts_and_no_secret(
    make_mirror: MirrorFactory,
    make_registry: RegistryFactory,
    seeded: Seeded,
    password: str,
    cache_dir: Path,
    tmp_path: Path,
) -> None:
    """After three pulls of a manifest and two of a blob from an upstream that needs a login,
    the page (as chromium renders it) gives the hit ratio, bytes and upstream figures that
    /metrics gives, the image as most pulled, both misses, and neither shows the password,
    the upstream's address or the cache directory."""
    upstream = make_registry(htpasswd=(USER, password))
    repo, tag = "team/app", "v1"
    image = seeded.schema2
    layer = image.layers[0]
    push_image(upstream.url, repo, tag, image, auth=(USER, password))
    client = await make_mirror(upstream, username=USER, password=password)
    for _ in range(3):
        response = await client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT_ALL})
        assert await response.read() == image.manifest
    for _ in range(2):
        response = await client.get(f"/v2/{repo}/blobs/{layer.digest}")
        assert await response.read() == layer.data

    url = str(client.make_url("/"))
    document = await dump_dom(url)
    metrics_text = await (await client.get("/metrics")).text()
    found = Scrape.parse(metrics_text)
    page = Figures(document)

    # The same counts, by /metrics' samples: 2 hits of 3 manifest pulls, 1 of 2 blob pulls.
    assert found.get("mirror_requests_total", kind="manifest", status="200", cache="hit") == 2
    assert found.get("mirror_requests_total", kind="blob", status="200", cache="hit") == 1
    assert float(page.by_id["hit-ratio"]) == pytest.approx(3 / 5)
    assert int(page.by_id["served"]) == found.total("mirror_served_bytes_total")
    assert int(page.by_id["served"]) == 3 * len(image.manifest) + 2 * layer.size
    assert int(page.by_id["served-from-cache"]) == found.get(
        "mirror_served_bytes_total", cache="hit"
    )
    received = found.total("mirror_upstream_bytes_total")
    assert received == len(image.manifest) + layer.size
    assert int(page.by_id["received"]) == received
    assert int(page.by_id["saved"]) == found.total("mirror_served_bytes_total") - received
    hub = page.upstreams["docker.io"]
    assert int(hub["requests"]) == found.total(
        "mirror_upstream_requests_total", registry="docker.io"
    )
    assert hub["breaker"] == "0"
    assert int(hub["errors"]) == 0
    assert page.by_id["fills"] == "0"
    assert page.by_id["redis"] in ("", "1")  # not configured, or up

    assert f"docker.io/{repo}" in document
    images = document.split('id="images"', 1)[1].split("</section>", 1)[0]
    assert f"docker.io/{repo}" in images and 'data-value="3"' in images
    misses = document.split('id="misses"', 1)[1].split("</section>", 1)[0]
    assert layer.digest in misses and f">{tag}<" in misses

    for text in (document, metrics_text):
        assert password not in text
        assert upstream.url.split("//", 1)[1] not in text
        assert str(cache_dir) not in text

    picture = tmp_path / "status.png"
    await screenshot(url, picture)
    assert picture.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


async def test_an_empty_mirror_renders_a_page(make_mirror: MirrorFactory, seeded: Seeded) -> None:
    """Before any pull the page renders with no figure missing its place."""
    client = await make_mirror("http://127.0.0.1:9")
    document = await dump_dom(str(client.make_url("/")))
    page = Figures(document)
    assert page.by_id["hit-ratio"] == ""
    assert page.by_id["served"] == "0"
    assert "No manifest pulled yet." in document and "No miss yet." in document
    assert set(page.upstreams) == {"docker.io"}
    found = await scrape(client)
    assert found.total("mirror_requests_total") == 0
