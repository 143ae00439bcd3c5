"""The README's client configuration is the configuration the suite pulls with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.clients import daemon_json, hosts_toml, registries_conf

pytestmark = pytest.mark.e2e

SNIPPETS = Path(__file__).parents[2] / "README.md"
MIRROR_HOST = "127.0.0.1:5000"


def test_documented_daemon_json_is_the_one_docker_uses() -> None:
    """The Docker daemon.json snippet equals the suite's daemon.json for the same mirror."""
    document = daemon_json(f"http://{MIRROR_HOST}", MIRROR_HOST)
    assert json.dumps(document, indent=2) in SNIPPETS.read_text()


def test_documented_hosts_toml_is_the_one_containerd_uses() -> None:
    """The containerd hosts.toml snippet equals the suite's hosts.toml for the same mirror."""
    assert hosts_toml(f"http://{MIRROR_HOST}") in SNIPPETS.read_text()


def test_documented_registries_conf_is_the_one_podman_uses() -> None:
    """The podman registries.conf snippet equals the suite's registries.conf for the same mirror."""
    assert registries_conf(MIRROR_HOST) in SNIPPETS.read_text()
