"""Flower's simulation engine (Ray) through `fedgossip run`: opt-in, since starting Ray on two cores
takes a while. Run it with FEDGOSSIP_TEST_SIMULATION=1 (and the `simulation` extra installed)."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from fedgossip.launcher.supervision.proctree import alive
from fedgossip.reports import read_records
from tests.support import run_cli

pytestmark = [
    pytest.mark.skipif(
        not os.environ.get("FEDGOSSIP_TEST_SIMULATION"), reason="set FEDGOSSIP_TEST_SIMULATION=1 to run"
    ),
    pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs fedgossip[simulation]"),
]


@pytest.mark.timeout(180)
def test_simulation_engine_runs_the_same_app(tmp_path):
    run = tmp_path / "sim"
    result = run_cli(
        "run", "--out", str(run),
        "--set", "experiment.mode=flower", "--set", "flower.engine=simulation",
        "--set", "nodes.count=4", "--set", "experiment.rounds=2", "--set", "strategy.name=vca",
        "--set", "flower.fraction_train=0.5", "--set", "flower.fraction_evaluate=0.0",
        timeout=170,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["flower"]["status"] == "finished:completed"
    nodes = [r for r in read_records(run) if isinstance(r["node"], int)]
    assert len(nodes) == 4 and {r["round"] for r in nodes} == {1, 2}  # 2 of 4 nodes per round
    pids = json.loads((run / "processes.json").read_text())
    assert {name: pid for name, pid in pids.items() if name != "flower_run_id" and alive(pid)} == {}
