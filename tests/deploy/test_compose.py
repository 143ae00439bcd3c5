"""deploy/compose.yaml: validated by docker-compose, and the mirror it describes starts with
settings `mirror serve` accepts, on the volume and the port the image declares."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from yarl import URL

from tests.deploy.files import DEPLOY, Dockerfile, settings_in
from tests.deploy.tools import run_tool


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    """The file as docker-compose resolves it (defaults filled in, paths made absolute)."""
    result = run_tool("docker-compose", "-f", DEPLOY / "compose.yaml", "config")
    # No warning either: an unset ${VARIABLE}, for one, is only a warning.
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    document = yaml.safe_load(result.stdout)
    assert isinstance(document, dict)
    return document


def test_compose_file_is_valid_for_docker_compose(resolved: dict[str, Any]) -> None:
    """`docker-compose config` accepts it: the mirror, built from deploy/Dockerfile, and Redis."""
    services = resolved["services"]
    assert set(services) == {"mirror", "redis"}
    build = services["mirror"]["build"]
    assert (Path(build["context"]) / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"


def test_docker_compose_as_run_here_rejects_an_unknown_option(tmp_path: Path) -> None:
    """The same check refuses a copy with an option Compose does not have."""
    text = (DEPLOY / "compose.yaml").read_text()
    broken = text.replace("    restart: unless-stopped", "    restart_policy: always", 1)
    assert broken != text
    (tmp_path / "compose.yaml").write_text(broken)
    shutil.copy(DEPLOY / "mirror.toml", tmp_path)
    result = run_tool("docker-compose", "-f", tmp_path / "compose.yaml", "config")
    assert result.returncode != 0 and "restart_policy" in result.stderr, result.stderr


def test_the_mirror_service_starts_with_settings_mirror_serve_accepts(
    resolved: dict[str, Any],
) -> None:
    """Its variables are the mirror's own; with the image's environment and the mounted
    deploy/mirror.toml they load, and put the cache on the volume, the port where it is
    published and Redis at the redis service."""
    mirror = resolved["services"]["mirror"]
    env = {**Dockerfile().env, **mirror["environment"]}
    mounts = {}  # path in the container -> volume name or host path
    for volume in mirror["volumes"]:
        source, target = volume.split(":")[:2]
        mounts[target] = source
    config_file = Path(mounts[env["MIRROR_CONFIG"]])
    assert config_file == DEPLOY / "mirror.toml"

    settings = settings_in(env, {env["MIRROR_CONFIG"]: config_file})
    assert mounts[str(settings.cache_dir)] in resolved["volumes"]  # a named volume
    assert [port["target"] for port in mirror["ports"]] == [settings.port]
    assert settings.redis_url is not None
    redis = URL(settings.redis_url)
    assert redis.host in resolved["services"] and redis.port == 6379
    assert settings.workers == 2
