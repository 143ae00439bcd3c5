"""Reading `/metrics` as Prometheus would: the text format parsed by prometheus_client's parser."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Scrape:
    """One scrape's samples: (sample name, labels, value)."""

    samples: list[tuple[str, dict[str, str], float]]
    families: dict[str, str]  # family name -> type

    @classmethod
    def parse(cls, text: str) -> Scrape:
        samples, families = [], {}
        for family in text_string_to_metric_families(text):
            families[family.name] = family.type
            samples += [(s.name, dict(s.labels), s.value) for s in family.samples]
        return cls(samples, families)

    def total(self, name: str, **match: str) -> float:
        """The sum of the samples of `name` whose labels include `match` (0 if none)."""
        return sum(
            value
            for sample, labels, value in self.samples
            if sample == name and all(labels.get(k) == v for k, v in match.items())
        )

    def get(self, name: str, **labels: str) -> float | None:
        """The one sample with exactly these labels, or None."""
        found = [v for s, got, v in self.samples if s == name and got == labels]
        assert len(found) <= 1, (name, labels, found)
        return found[0] if found else None

    def names(self) -> set[str]:
        return {sample for sample, _, _ in self.samples}


async def scrape(client: TestClient[Any, Any]) -> Scrape:
    """GET /metrics through the test client; it must answer in the Prometheus text format."""
    response = await client.get("/metrics")
    text = await response.text()
    assert response.status == 200, (response.status, text[:500])
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4"), (
        response.headers
    )
    return Scrape.parse(text)
