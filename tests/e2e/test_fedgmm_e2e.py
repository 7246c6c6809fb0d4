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


def _local_accuracy(run: Path, *settings: str) -> float:
    result = run_cli("run", EXAMPLE, "--out", str(run), *settings, timeout=170)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete", summary
    return summary["final_mean_local_accuracy"]


@pytest.mark.timeout(360)
def test_flower_fedgmm_beats_fedavg_in_mean_local_accuracy(tmp_path):
    fedgmm = _local_accuracy(tmp_path / "fedgmm")
    fedavg = _local_accuracy(tmp_path / "fedavg", *FEDAVG)
    print(f"flower inprocess, mean local accuracy: fedgmm {fedgmm:.4f}, fedavg {fedavg:.4f}")
    assert fedgmm > fedavg


@pytest.mark.timeout(360)
def test_gossip_peers_fedgmm_beats_fedavg_in_mean_local_accuracy(tmp_path):
    fedgmm = _local_accuracy(tmp_path / "fedgmm", *GOSSIP)
    fedavg = _local_accuracy(tmp_path / "fedavg", *GOSSIP, *FEDAVG)
    print(f"gossip, mean local accuracy: fedgmm {fedgmm:.4f}, fedavg {fedavg:.4f}")
    assert fedgmm > fedavg
