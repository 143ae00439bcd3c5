"""What the figures were measured on: they mean little without the machine next to them."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Machine:
    cpus: int
    cpu_model: str
    kernel: str
    memory_mb: int
    python: str


def _first_field(path: Path, key: str) -> str:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    except OSError:
        pass
    return "unknown"


def describe_machine() -> Machine:
    mem_kb = _first_field(Path("/proc/meminfo"), "MemTotal").split()[0]
    return Machine(
        cpus=os.cpu_count() or 0,
        cpu_model=_first_field(Path("/proc/cpuinfo"), "model name"),
        kernel=platform.release(),
        memory_mb=int(mem_kb) // 1024 if mem_kb.isdigit() else 0,
        python=platform.python_version(),
    )
