"""A cold image pull as a user's client makes it: `skopeo copy` into a directory, which fetches
the manifest and the blobs, checks each digest and writes each blob to disk."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from bench.tools import find_tool


class PullFailed(RuntimeError):
    """skopeo did not copy the image."""


def skopeo_pull(base_url: str, repo: str, tag: str, dest: Path, timeout: float) -> float:
    """Seconds `skopeo copy` took to copy `repo:tag` from the registry at `base_url` (plain
    http) into `dest`, which is emptied first and removed after."""
    shutil.rmtree(dest, ignore_errors=True)
    source = f"docker://{base_url.removeprefix('http://')}/{repo}:{tag}"
    argv = [find_tool("skopeo"), "copy", "--insecure-policy", "--src-tls-verify=false"]
    argv += ["--retry-times", "0", source, f"dir:{dest}"]
    started = time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise PullFailed(f"skopeo did not finish within {timeout:.0f}s") from e
    finally:
        elapsed = time.monotonic() - started
        shutil.rmtree(dest, ignore_errors=True)
    if done.returncode != 0:
        raise PullFailed(f"skopeo exited with {done.returncode}: {done.stderr.strip()[-300:]}")
    return elapsed
