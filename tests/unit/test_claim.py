"""The folder claim in one process: a second claim is refused naming the owner, a release removes
the file, a claim file nobody holds is taken over and reported as stale, and a wait for a folder
still held ends naming its holder."""

from __future__ import annotations

import json
import os

import pytest

from fedgossip.launcher.runs.claim import (
    CLAIM,
    FolderClaim,
    FolderInUse,
    Owner,
    check_free,
    left_by,
    wait_free,
)


def test_a_second_claim_is_refused_naming_the_owner_until_the_first_is_released(tmp_path):
    with FolderClaim(tmp_path) as claim:
        assert claim.stale is None
        owner = Owner.parse((tmp_path / CLAIM).read_text())
        assert owner is not None and owner.pid == os.getpid()
        with pytest.raises(
            FolderInUse,
            match=rf"{tmp_path} is in use by another fedgossip command \(pid {os.getpid()}, started ",
        ):
            FolderClaim(tmp_path)
        with pytest.raises(FolderInUse):
            check_free(tmp_path)
        assert left_by(tmp_path) is None  # held: not stale
    assert not (tmp_path / CLAIM).exists()
    check_free(tmp_path)
    with FolderClaim(tmp_path) as again:
        assert again.stale is None
    again.release()  # twice: nothing


def test_a_claim_file_nobody_holds_is_stale_and_taken_over(tmp_path):
    dead = Owner(pid=999_999, started="2026-01-01 00:00:00", command="fedgossip run --out x")
    (tmp_path / CLAIM).write_text(json.dumps(dead.__dict__))
    check_free(tmp_path)
    assert left_by(tmp_path) == dead
    with FolderClaim(tmp_path) as claim:
        assert claim.stale == dead
        assert Owner.parse((tmp_path / CLAIM).read_text()).pid == os.getpid()


def test_a_claim_file_without_an_owner_line_is_taken_over_quietly(tmp_path):
    (tmp_path / CLAIM).write_bytes(b"")  # its owner died before writing it (a full disk)
    with FolderClaim(tmp_path) as claim:
        assert claim.stale is None


def test_waiting_for_a_folder_still_held_ends_naming_the_holder(tmp_path):
    with FolderClaim(tmp_path), pytest.raises(FolderInUse, match=f"pid {os.getpid()}"):
        wait_free(tmp_path, 0.3)
    wait_free(tmp_path, 0.3)  # released: at once
    wait_free(tmp_path / "missing", 0.3)


def test_a_folder_that_cannot_hold_the_claim_file_names_it(tmp_path):
    with pytest.raises(OSError) as raised:
        FolderClaim(tmp_path / "missing")
    assert raised.value.filename == str(tmp_path / "missing" / CLAIM)
