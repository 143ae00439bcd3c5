"""Medians and ratios: noisy machines need several runs and same-run comparisons."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def median(values: Sequence[float]) -> float | None:
    """The median, or None when no run produced a value."""
    return statistics.median(values) if values else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def fmt(value: float | None, spec: str = ".0f", suffix: str = "") -> str:
    """A number for the table; a dash when it could not be measured."""
    return "-" if value is None else f"{value:{spec}}{suffix}"
