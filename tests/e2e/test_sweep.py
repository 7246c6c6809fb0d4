"""`fedgossip sweep`: the grid x seeds plan, bad grids refused before anything runs, and a real sweep
interrupted with SIGINT and restarted, which runs only what is missing (tracked in TensorBoard) and
compares at the end."""

from __future__ import annotations

import json

import psutil
import pytest

from fedgossip.launcher.supervision.proctree import alive, descendants, stop
from tests.support import (
    assert_row_matches,
    interrupt,
    interrupt_in_second_run,
    run_cli,
    run_status,
    start_cli,
)
from tests.support.trackers import assert_holds, expected_metrics, tensorboard_metrics

TINY = ["experiment.rounds=2", "nodes.count=3", "topology.kind=ring"]


def test_a_bad_grid_exits_2_before_anything_runs(tmp_path):
    out = tmp_path / "sweep"
    result = run_cli("sweep", "--grid", "strategy.name=average,nosuch", "--out", str(out), timeout=60)
    assert result.returncode == 2 and "error:" in result.stdout and "nosuch" in result.stdout
    assert not out.exists()


def test_a_grid_point_whose_topology_cannot_be_built_is_refused_before_the_first_run(tmp_path):
    """No 3-regular graph on 5 nodes: the degree-3 point is refused before the degree-2 one runs."""
    out = tmp_path / "sweep"
    settings = ("--set", "nodes.count=5", "--set", "topology.kind=regular")
    result = run_cli("sweep", *settings, "--grid", "topology.degree=2,3", "--out", str(out), timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "error: run topology.degree=3_seed=0: topology.degree = 3" in result.stdout
    assert not out.exists()


@pytest.mark.timeout(240)
def test_an_interrupted_sweep_restarted_runs_only_what_is_missing(tmp_path):
    out = tmp_path / "sweep"
    args = ("sweep", "--grid", "strategy.name=average", "--seeds", "2", "--jobs", "1", "--out", str(out))
    first, second = out / "strategy.name=average_seed=0", out / "strategy.name=average_seed=1"
    sweep = start_cli(*args, settings=TINY)
    tree: dict[int, psutil.Process] = {}
    try:
        output, pids, first_metrics = interrupt_in_second_run(sweep, first, second, tree)
        assert sweep.returncode == 130, output
        assert "interrupted" in output
        assert not [pid for pid in pids if alive(pid)]  # the running run stopped its nodes
        assert not [p.pid for p in tree.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert run_status(second) == "interrupted"
        record = json.loads((out / "sweep.json").read_text())
        assert [r["status"] for r in record["runs"]] == ["complete", "interrupted"]

        tracked = ("--track", "tensorboard")  # the run run now is tracked; the skipped one is not
        again = run_cli(*args, *tracked, *(a for item in TINY for a in ("--set", item)), timeout=180)
        assert again.returncode == 0, again.stdout + again.stderr
        record = json.loads((out / "sweep.json").read_text())
        assert [(r["name"], r["skipped"], r["status"]) for r in record["runs"]] == [
            (first.name, True, "complete"),
            (second.name, False, "complete"),
        ]
        assert (first / "metrics.jsonl").read_bytes() == first_metrics  # not run again
        (row,) = json.loads((out / "compare.json").read_text())["groups"]
        assert row["label"] == "strategy.name=average" and [r["seed"] for r in row["runs"]] == [0, 1]
        assert_row_matches(row, [first, second], target=0.9)
        assert "strategy.name=average" in again.stdout and "…" not in again.stdout
        assert sorted(p.name for p in (out / "tensorboard").iterdir()) == [second.name]
        held = tensorboard_metrics(out / "tensorboard" / second.name)
        records = {k: v for k, v in held.items() if not k.startswith("summary/")}
        assert_holds(records, expected_metrics(second, 3))
    finally:
        tree.update((proc.pid, proc) for proc in descendants([sweep.pid]))
        interrupt(sweep)
        stop(tree.values(), grace=5)
