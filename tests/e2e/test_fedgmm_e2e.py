"""FedGMM end to end on covariate-shifted data (the authors' synthetic mixture, 3 nodes): a Flower
run (the in-process engine: the ServerApp and ClientApp code over Flower's messages; a deployment
run of 2 x 15 rounds takes minutes on a loaded 2-core machine) and a gossip run of real peers over gRPC,
each against FedAvg of the same softmax regression (task.gmm_components = gmm_learners = 1) in
the same setting: FedGMM's mean local accuracy (task.eval = "both") is the higher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import run_cli

EXAMPLE = str(Path(__file__).parents[2] / "examples" / "fedgmm.toml")
FEDAVG = ["--set", "task.gmm_components=1", "--set", "task.gmm_learners=1"]
GOSSIP = ["--set", "experiment.mode=gossip", "--set", "strategy.name=average"]


def _summary(run: Path, *settings: str) -> dict:
    result = run_cli("run", EXAMPLE, "--out", str(run), *settings, timeout=170)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete", summary
    return summary


@pytest.mark.timeout(360)
def test_flower_fedgmm_beats_fedavg_in_mean_local_accuracy_and_measures_new_nodes(tmp_path):
    unseen = ["--set", "task.unseen_nodes=2"]  # two more nodes of the partition, held out
    summary = _summary(tmp_path / "fedgmm", *unseen)
    fedgmm = summary["final_mean_local_accuracy"]
    fedavg = _summary(tmp_path / "fedavg", *unseen, *FEDAVG)["final_mean_local_accuracy"]
    new = summary["fedgmm_unseen"]
    print(f"flower inprocess, mean local accuracy: fedgmm {fedgmm:.4f}, fedavg {fedavg:.4f}; new nodes {new}")
    assert fedgmm > fedavg
    assert new["nodes"] == 2 and set(new["by_node"]) == {"3", "4"}
    assert all(0 <= value <= 1 for figures in new["by_node"].values() for value in figures)


@pytest.mark.timeout(360)
def test_gossip_peers_fedgmm_beats_fedavg_in_mean_local_accuracy(tmp_path):
    fedgmm = _summary(tmp_path / "fedgmm", *GOSSIP)["final_mean_local_accuracy"]
    fedavg = _summary(tmp_path / "fedavg", *GOSSIP, *FEDAVG)["final_mean_local_accuracy"]
    print(f"gossip, mean local accuracy: fedgmm {fedgmm:.4f}, fedavg {fedavg:.4f}")
    assert fedgmm > fedavg
