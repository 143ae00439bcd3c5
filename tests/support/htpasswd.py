"""htpasswd files written by the real `htpasswd` tool (Debian's apache2-utils)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def htpasswd_entry(user: str, password: str, *, kind: str = "-B", cost: int = 4) -> str:
    """One `user:hash` line as `htpasswd -n` prints it; `kind` is -B (bcrypt), -m (MD5), -s."""
    binary = shutil.which("htpasswd")
    assert binary is not None, (
        "htpasswd is needed (Debian: apache2-utils; see tests/system-deps.sh)"
    )
    # Cost 4 for bcrypt unless asked, the least: each login pays for it and the hash guards
    # nothing here.
    costs = ["-C", str(cost)] if kind == "-B" else []
    done = subprocess.run(
        [binary, "-n", "-b", kind, *costs, user, password],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def write_htpasswd(path: Path, users: dict[str, str]) -> Path:
    """Write (replace) an htpasswd file with a bcrypt entry per user."""
    path.write_text("".join(f"{htpasswd_entry(u, p)}\n" for u, p in users.items()))
    return path
