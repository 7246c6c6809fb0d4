"""A sweep whose disk fills: sweep.json stays valid JSON (replaced whole or not at all), the error
names the file, nothing half-written is left, and once space is freed the same command resumes.
The disk is a small tmpfs mounted for the test (root only; skipped where mounting is refused)."""

from __future__ import annotations

import errno
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedgossip.launcher.runs.claim import CLAIM
from tests.support import run_cli, set_args
from tests.support.disks import small_disk as mounted_disk

TINY = ("task.model=linear", "nodes.count=2", "experiment.rounds=2", "topology.kind=ring")


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 2 MiB tmpfs (tests/support/disks.py)."""
    with mounted_disk(tmp_path / "disk") as point:
        yield point


def fill(disk: Path) -> Path:
    """Write a file until the disk is full; returns it."""
    filler = disk / "filler"
    with open(filler, "wb") as stream:
        try:
            while True:
                stream.write(b"\0" * 65536)
                stream.flush()
        except OSError as err:
            assert err.errno == errno.ENOSPC
    return filler


@pytest.mark.timeout(300)
def test_a_sweep_on_a_disk_that_fills_keeps_sweep_json_whole_and_names_it(small_disk, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # messages checked on one line
    out = small_disk / "sweep"
    args = ("sweep", "--grid", "strategy.name=average", "--out", str(out), *set_args(TINY))
    first = run_cli(*args, timeout=180)
    assert first.returncode == 0, first.stdout + first.stderr
    before = json.loads((out / "sweep.json").read_text())
    assert [r["status"] for r in before["runs"]] == ["complete"]

    filler = fill(small_disk)
    # seed 0 done, seeds 1-17 meet the full disk: a record of 18 runs needs more pages than the
    # old one frees (a sweep.json truncated and rewritten in place would be cut, or left empty)
    full = run_cli(*args, "--seeds", "18", "--jobs", "2", timeout=240)
    output = full.stdout + full.stderr
    assert full.returncode == 2 and "Traceback" not in output, output
    assert f"error: {out / 'sweep.json'}: No space left on device" in full.stdout, output
    assert json.loads((out / "sweep.json").read_text()) == before  # whole: the last one written
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no temp file, no claim
    assert not (out / CLAIM).exists()

    filler.unlink()
    again = run_cli(*args, "--seeds", "2", timeout=180)  # the same folder resumes once space is freed
    assert again.returncode == 0, again.stdout + again.stderr
    after = json.loads((out / "sweep.json").read_text())
    assert [(r["status"], r["skipped"]) for r in after["runs"]] == [("complete", True), ("complete", False)]
