"""An import reads a bundle's member headers one at a time, and refuses an archive past the
bounds on their count and size before it has read the rest."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from mirror.images import bundle
from mirror.images.bundle import BadBundle, Bundle


def archive(path: Path, members: int, pax: dict[str, str] | None = None) -> Path:
    """A gzip'd tar of empty members, cut off two thirds of the way through."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for n in range(members):
            member = tarfile.TarInfo(f"empty/{n}")
            member.pax_headers = dict(pax or {})
            tar.addfile(member)
    compressed = gzip.compress(raw.getvalue())
    path.write_bytes(compressed[: len(compressed) * 2 // 3])
    return path


def test_members_past_the_count_are_refused_before_the_rest_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The archive is cut short after the bound: the count, not the damage, is reported."""
    monkeypatch.setattr(bundle, "MAX_MEMBERS", 100)
    with pytest.raises(BadBundle, match="more than 100 members"):
        Bundle(archive(tmp_path / "many.tar.gz", 1000))
    with pytest.raises(BadBundle, match="truncated or damaged"):
        Bundle(archive(tmp_path / "few.tar.gz", 90))


def test_member_headers_past_their_size_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Names and pax records count, which a few bytes of gzip can make large."""
    monkeypatch.setattr(bundle, "MAX_HEADER_BYTES", 100_000)
    with pytest.raises(BadBundle, match="headers of more than 100000 bytes"):
        Bundle(archive(tmp_path / "wordy.tar.gz", 300, {"comment": "x" * 1000}))
