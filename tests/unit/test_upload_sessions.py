"""Upload sessions on disk: ownership, the hash kept by the process that wrote, expiry."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from mirror.errors import BlobUploadUnknown, RangeInvalid
from mirror.local.uploads import Owner, UploadSessions
from mirror.oci.digest import Digest

OWNER = Owner("registry.local", "team/app")


def _write(sessions: UploadSessions, id: str, data: bytes) -> None:
    with sessions.open(id, OWNER) as session:
        hasher = sessions.hasher(session)
        os.pwrite(session.fd, data, session.size)
        if hasher is not None:
            hasher.update(data)
        sessions.wrote(session, hasher)


def test_the_writing_process_knows_the_digest_without_reading_the_file(tmp_path: Path) -> None:
    """The process that wrote every byte answers from its hasher (the file is not read again:
    bytes changed behind its back do not show); another process hashes the file."""
    here = UploadSessions(tmp_path / "uploads")
    here.prepare()
    id = here.create(OWNER)
    _write(here, id, b"hello ")
    _write(here, id, b"world")
    expected = Digest("sha256", hashlib.sha256(b"hello world").hexdigest())
    data = tmp_path / "uploads" / id / "data"
    data.write_bytes(b"HELLO WORLD")  # same size, other bytes
    elsewhere = UploadSessions(tmp_path / "uploads")
    with elsewhere.open(id, OWNER) as session:
        assert elsewhere.digest_of(session, "sha256") == Digest.of(b"HELLO WORLD")
    with here.open(id, OWNER) as session:
        assert here.digest_of(session, "sha256") == expected


def test_a_chunk_through_another_process_drops_the_hasher(tmp_path: Path) -> None:
    """Once another process appended, the first one's hasher no longer covers the file and
    the digest comes from the file."""
    first, second = UploadSessions(tmp_path / "u"), UploadSessions(tmp_path / "u")
    first.prepare()
    id = first.create(OWNER)
    _write(first, id, b"abc")
    _write(second, id, b"def")
    with first.open(id, OWNER) as session:
        assert first.digest_of(session, "sha256") == Digest.of(b"abcdef")


def test_a_session_belongs_to_its_repository_and_is_written_by_one_request(
    tmp_path: Path,
) -> None:
    """Another repository, or an id that is no uuid, is unknown; a second writer is a 416."""
    sessions = UploadSessions(tmp_path / "u")
    sessions.prepare()
    id = sessions.create(OWNER)
    with pytest.raises(BlobUploadUnknown):
        sessions.size(id, Owner("registry.local", "team/other"))
    with pytest.raises(BlobUploadUnknown):
        sessions.size("../../etc", OWNER)
    with sessions.open(id, OWNER), pytest.raises(RangeInvalid), sessions.open(id, OWNER):
        pass


def test_only_idle_sessions_nobody_writes_to_expire(tmp_path: Path) -> None:
    """A session older than the cut-off goes, unless a request holds it; a recent one stays."""
    sessions = UploadSessions(tmp_path / "u")
    sessions.prepare()
    old, held, recent = (sessions.create(OWNER) for _ in range(3))
    long_ago = time.time() - 7200
    for id in (old, held):
        os.utime(tmp_path / "u" / id / "data", (long_ago, long_ago))
    with sessions.open(held, OWNER):
        assert sessions.expire(time.time() - 3600) == 1
    assert sorted(p.name for p in (tmp_path / "u").iterdir()) == sorted([held, recent])
