"""deploy/Dockerfile: linted by hadolint, read by dockerfile-parse, and its entrypoint and health
check run here against a real mirror (no image can be built here: base images are out of reach)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from mirror.config import load_settings
from tests.deploy.conftest import StartMirror
from tests.deploy.files import DEPLOY, REPOSITORY, Dockerfile, assert_known_variables
from tests.deploy.tools import run_tool


def hadolint(path: Path) -> tuple[int, str]:
    # Every finding fails, down to style; inline ignore pragmas are not honoured.
    result = run_tool(
        "hadolint", "--failure-threshold", "style", "--disable-ignore-pragma", "--no-color", path
    )
    return result.returncode, result.stdout + result.stderr


def test_dockerfile_passes_hadolint() -> None:
    """hadolint finds nothing in deploy/Dockerfile, at any severity."""
    status, output = hadolint(DEPLOY / "Dockerfile")
    assert (status, output) == (0, "")


def test_hadolint_as_run_here_fails_an_image_that_runs_as_root(tmp_path: Path) -> None:
    """The same hadolint run refuses a copy whose last USER is root (DL3002)."""
    text = (DEPLOY / "Dockerfile").read_text().replace("USER 10001:10001", "USER root")
    (tmp_path / "Dockerfile").write_text(text)
    status, output = hadolint(tmp_path / "Dockerfile")
    assert status != 0 and "DL3002" in output, output


def test_image_is_slim_non_root_with_the_cache_as_a_volume() -> None:
    """Slim Python base; a numeric non-root USER created in the image; the cache directory of
    its settings is the VOLUME and the listen port is the EXPOSEd one; every COPY source exists
    and is sent with the build context."""
    dockerfile = Dockerfile()
    base = dockerfile.parser.baseimage
    assert base.startswith("python:") and base.endswith("-slim"), base
    user = dockerfile.last("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid != "0", user
    assert any(f"--uid {uid}" in run for run in dockerfile.all("RUN")), "USER is never created"

    assert_known_variables(dockerfile.env)
    settings = load_settings(None, {}, environ=dockerfile.env)
    assert json.loads(dockerfile.last("VOLUME")) == [str(settings.cache_dir)]
    assert dockerfile.all("EXPOSE") == [str(settings.port)]
    assert settings.host == "0.0.0.0"  # reachable through the published port

    # The build context is the repository root, cut down by Dockerfile.dockerignore.
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    for copy in dockerfile.all("COPY"):
        *sources, _destination = copy.split()
        for source in sources:
            assert (REPOSITORY / source).exists(), f"COPY {source}: not in the repository"
            assert f"!{source.rstrip('/')}" in {line.rstrip("/") for line in ignore}, source


def test_entrypoint_serves_and_healthcheck_tells_healthy_from_not(
    start_mirror: StartMirror,
) -> None:
    """The ENTRYPOINT, run with the image's environment, serves; the HEALTHCHECK command exits 0
    against it (its body on stdout), 1 once it is gone; `--ready` reports an unwritable cache."""
    dockerfile = Dockerfile()
    entrypoint = dockerfile.exec_form("ENTRYPOINT")
    options, healthcheck = dockerfile.healthcheck()
    assert {"interval", "timeout", "retries"} <= set(options), options
    mirror = start_mirror(entrypoint, dockerfile.env)

    healthy = mirror.run(healthcheck)
    assert healthy.returncode == 0, healthy.stderr
    assert json.loads(healthy.stdout) == {"status": "ok"}
    ready = mirror.run([*healthcheck, "--ready"])
    assert ready.returncode == 0, ready.stdout + ready.stderr
    assert json.loads(ready.stdout)["status"] == "ready"

    spool = Path(mirror.env["MIRROR_CACHE_DIR"]) / "spool"
    shutil.rmtree(spool)
    spool.write_text("not a directory")
    not_ready = mirror.run([*healthcheck, "--ready"])
    assert not_ready.returncode == 1, not_ready.stdout + not_ready.stderr
    assert json.loads(not_ready.stdout)["status"] == "not ready"

    mirror.daemon.stop()
    gone = mirror.run(healthcheck)
    assert gone.returncode == 1
    assert gone.stderr.startswith("mirror health: http://127.0.0.1:"), gone.stderr
