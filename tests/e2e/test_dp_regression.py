"""DP Bayesian linear regression end to end: a gossip run of peer processes over real gRPC, in
which releases spread hop by hop on a ring and every peer ends with each party's single release
(none re-noised) and the estimate computed directly from them; a Flower run whose server holds
the union of the parties' releases; bad privacy parameters exit 2 naming the key."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedgossip.config import load_config
from fedgossip.strategies.dp_regression import table
from fedgossip.strategies.dp_regression.estimators import fast_estimate
from fedgossip.strategies.dp_regression.release import Bounds
from fedgossip.tasks import build_learner
from fedgossip.tasks.dp_regression import evaluation
from tests.support import metrics, run_cli

SETTINGS = [
    "task.dataset=dp-regression-simulated",
    "task.model=dp-bayesian-regression",
    "task.synthetic_samples=4000",
    "task.synthetic_features=2",
    "strategy.name=dp-bayesian-regression",
    "strategy.params.bound_x=10",
    "strategy.params.bound_y=10",
    "nodes.count=6",
    "topology.kind=ring",
    "experiment.rounds=3",
]


def sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def direct_prediction_mse(out) -> float:
    """The test MSE of the one-step estimate from every party's release, each party's release
    recomputed here from its own learner (what it released once)."""
    config = load_config(out / "config.toml")
    seed, count = config.experiment.seed, config.nodes.count
    params = config.strategy.params
    bounds = Bounds(params["bound_x"], params["bound_y"])
    rows = table.empty(2)
    for node in range(count):
        learner = build_learner(config.task, node, count, seed)
        learner.assign(table.with_privacy(learner.get_weights(), params["epsilon"], params["delta"], bounds))
        s, z = learner.own_release()
        rows = table.with_row(rows, node, s, z, learner.num_examples)
    known = table.released(table.with_privacy(rows, params["epsilon"], params["delta"], bounds), 2)
    theta = fast_estimate(known.s, known.z, known.levels, known.bounds).mean
    reference = evaluation(config.task, seed)
    return float(np.mean((reference.y_test - reference.x_test @ theta) ** 2))


@pytest.mark.timeout(120)
def test_gossip_spreads_each_release_once_and_every_peer_estimates_from_all(tmp_path):
    out = tmp_path / "gossip"
    result = run_cli("run", "--out", str(out), *sets(*SETTINGS, "experiment.mode=gossip"), timeout=100)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = metrics(out)
    by = {(r["node"], r["round"]): r for r in rows}
    for node in range(6):  # a ring: each round the releases known grow by one hop each way
        assert [by[node, t]["dp_parties_known"] for t in range(1, 4)] == [3, 5, 6]
    expected = direct_prediction_mse(out)
    for node in range(6):
        assert by[node, 3]["dp_prediction_mse"] == pytest.approx(expected, rel=1e-9)
        assert by[node, 3]["test_loss"] == pytest.approx(expected, rel=1e-4)  # the peer's own evaluation
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dp-bayesian-regression"]["dp_parties_known"] == 6


@pytest.mark.timeout(120)
def test_flower_server_holds_every_release_and_estimates_from_them(tmp_path):
    out = tmp_path / "flower"
    settings = (*SETTINGS, "experiment.mode=flower", "flower.engine=inprocess", "experiment.rounds=2")
    result = run_cli("run", "--out", str(out), *sets(*settings), timeout=100)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [r for r in metrics(out) if isinstance(r.get("node"), int)]
    assert {r["dp_parties_known"] for r in rows} == {6}
    expected = direct_prediction_mse(out)
    assert all(r["dp_prediction_mse"] == pytest.approx(expected, rel=1e-9) for r in rows)


@pytest.mark.timeout(60)
def test_bad_privacy_parameters_exit_2_naming_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # (the unit tests check every bad value's message)
    result = run_cli(
        "run", "--out", str(tmp_path / "bad"), *sets(*SETTINGS, "strategy.params.epsilon=0"), timeout=50
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert (
        "strategy.params.epsilon" in result.stdout + result.stderr
        and "Traceback" not in result.stdout + result.stderr
    )
