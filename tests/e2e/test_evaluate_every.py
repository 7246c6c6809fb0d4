"""`experiment.evaluate_every = k` in real runs: the records of the rounds in between carry no test
figures and the last round is always evaluated, in synchronous and asynchronous gossip (real peer
processes, real gRPC) and in Flower mode (in-process engine: the server's evaluation and the
nodes'); a bad value exits 2 naming the key. The synchronous run is also the compute floor's
equivalence test: `benchmarks/floor.py`, one sequential loop over the same learners and rule,
gives exactly the accuracies of the real peers' records."""

from __future__ import annotations

import importlib.util
import json
import sys
import time

import pytest

from fedgossip.config import load_config
from tests.support import REPO, metrics, run_cli, set_args


def load_floor():
    path = REPO / "benchmarks" / "floor.py"
    spec = importlib.util.spec_from_file_location("bench_floor_loop", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


def accuracy_by_node(records: list[dict]) -> dict[int, dict[int, float | None]]:
    found: dict[int, dict[int, float | None]] = {}
    for r in records:
        if isinstance(r["node"], int):
            found.setdefault(r["node"], {})[r["round"]] = r["test_accuracy"]
    return found


def assert_evaluated_only(records: list[dict], rounds: set[int], nodes: int) -> None:
    """Exactly `rounds` carry test figures, for every one of `nodes` nodes."""
    for r in records:
        tested = r["round"] in rounds
        assert (r["test_accuracy"] is not None) == tested, r
        assert (r["test_loss"] is not None) == tested, r
    assert len({r["node"] for r in records if isinstance(r["node"], int)}) == nodes


@pytest.mark.timeout(120)
def test_sync_gossip_skips_rounds_between_and_equals_the_floor_loop(tmp_path):
    settings = ["nodes.count=4", "experiment.rounds=5", "experiment.evaluate_every=2"]
    out = tmp_path / "sync"
    result = run_cli("run", "--out", str(out), *set_args(settings), timeout=100)
    assert result.returncode in (0, 3), result.stderr[-2000:]
    records = metrics(out)
    assert len(records) == 20
    assert_evaluated_only(records, {2, 4, 5}, 4)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["evaluate_every"] == 2 and summary["rounds_completed"] == 5
    assert summary["rounds_to_target"] in (2, 4, 5, None)
    floor = load_floor()
    config = load_config(None, settings)
    run = floor.floor_run(config, time.monotonic)
    assert run.accuracy == accuracy_by_node(records)  # exactly: the same work, in one loop


@pytest.mark.timeout(120)
def test_async_gossip_evaluates_every_kth_unit_and_the_last(tmp_path):
    settings = [
        "gossip.schedule=async",
        "gossip.async_interval=[0.0, 0.05]",
        "task.model=linear",
        "topology.kind=ring",
        "nodes.count=4",
        "experiment.rounds=4",
        "experiment.evaluate_every=3",
    ]
    out = tmp_path / "async"
    result = run_cli("run", "--out", str(out), *set_args(settings), timeout=100)
    assert result.returncode in (0, 3), result.stderr[-2000:]
    records = metrics(out)
    assert len(records) == 16
    assert_evaluated_only(records, {3, 4}, 4)


@pytest.mark.timeout(150)
def test_flower_skips_the_server_and_node_evaluations_between(tmp_path):
    settings = [
        "experiment.mode=flower",
        "flower.engine=inprocess",
        "strategy.name=average",
        "task.model=linear",
        "nodes.count=4",
        "experiment.rounds=3",
        "experiment.evaluate_every=2",
    ]
    out = tmp_path / "flower"
    result = run_cli("run", "--out", str(out), *set_args(settings), timeout=140)
    assert result.returncode in (0, 3), result.stderr[-2000:]
    records = metrics(out)
    nodes = [r for r in records if isinstance(r["node"], int)]
    server = {r["round"]: r for r in records if r["node"] == "server"}
    assert len(nodes) == 12 and sorted(server) == [0, 1, 2, 3]
    assert_evaluated_only(nodes, {2, 3}, 4)
    assert {r["evaluated_by"] for r in nodes if r["round"] == 1} == {None}
    assert {r["evaluated_by"] for r in nodes if r["round"] > 1} == {"node"}  # fraction_evaluate 1
    assert [server[r]["test_accuracy"] is not None for r in range(4)] == [True, False, True, True]
    assert server[1]["train_loss"] is not None  # trained, only not evaluated


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("value", "says"),
    [("0", "must be an integer >= 1; got 0"), ("31", "must be at most experiment.rounds (30); got 31")],
)
def test_a_bad_evaluate_every_exits_2_naming_the_key(tmp_path, value, says):
    out = tmp_path / "run"
    result = run_cli("run", "--out", str(out), "--set", f"experiment.evaluate_every={value}", timeout=50)
    assert result.returncode == 2
    assert f"error: experiment.evaluate_every {says}" in result.stderr + result.stdout
    assert not out.exists()
