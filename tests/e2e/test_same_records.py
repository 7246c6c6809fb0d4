"""The quickstart gives the same metrics records as before the restructure of issue 18: the records
in tests/data/quickstart-metrics.jsonl were written by `fedgossip run` on the code before the move
(commit 7dc4c75); every field but the timing ones must be equal, bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import REPO, run_cli

pytestmark = pytest.mark.timeout(120)

TIMING = {"time_s", "rejoin_s", "train_s", "evaluate_s", "delayed_s"}
BEFORE = REPO / "tests" / "data" / "quickstart-metrics.jsonl"


def untimed(path: Path) -> list[dict]:
    """The records of a metrics.jsonl without their timing fields, in (node, round) order."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    stripped = [{key: value for key, value in record.items() if key not in TIMING} for record in records]
    return sorted(stripped, key=lambda r: (str(r["node"]), r["round"]))


def test_the_quickstart_gives_the_records_committed_before_the_restructure(tmp_path: Path) -> None:
    out = tmp_path / "quickstart"
    done = run_cli("run", "--out", str(out), timeout=100)
    assert done.returncode == 0, done.stderr[-2000:]
    before, now = untimed(BEFORE), untimed(out / "metrics.jsonl")
    assert len(now) == len(before) == 240
    for old, new in zip(before, now, strict=True):
        assert new == old, f"node {old['node']} round {old['round']} differs"
