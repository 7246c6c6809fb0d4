"""FedGMM end to end on covariate-shifted data (the authors' synthetic mixture, 3 nodes, 15 rounds),
each run against FedAvg of the same softmax regression (task.gmm_components = gmm_learners = 1) in
the same setting: FedGMM's mean local accuracy (task.eval = "both") is the higher.

Flower: one deployment run (a real SuperLink, 3 SuperNodes, a ClientApp process per message) that
evaluates at the last round only (each Flower message starts a ClientApp process: about 1.6 s of
Flower's imports each, and a SuperNode sleeps up to 3 s between pulls, so the phases are the cost);
its records are those of the in-process engine for the same seed, and FedAvg runs in process.
Gossip: real peers over gRPC."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedgossip.reports import read_records
from tests.support import processes_gone, run_cli

EXAMPLE = str(Path(__file__).parents[2] / "examples" / "fedgmm.toml")
FEDAVG = ["--set", "task.gmm_components=1", "--set", "task.gmm_learners=1"]
GOSSIP = ["--set", "experiment.mode=gossip", "--set", "strategy.name=average"]
ONCE = ["--set", "experiment.evaluate_every=15", "--set", "task.unseen_nodes=2"]  # 2 held-out nodes
DEPLOYMENT = ["--set", "flower.engine=deployment", "--set", "flower.round_timeout=120"]


def _summary(run: Path, *settings: str, timeout: float = 170) -> dict:
    result = run_cli("run", EXAMPLE, "--out", str(run), *settings, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete", summary
    return summary


def _local_accuracies(run: Path) -> dict[tuple[int, int], float]:
    return {
        (r["node"], r["round"]): r.get("local_accuracy")
        for r in read_records(run)
        if isinstance(r["node"], int) and r.get("local_accuracy") is not None
    }


@pytest.mark.timeout(900)
def test_flower_deployment_fedgmm_beats_fedavg_in_mean_local_accuracy_and_measures_new_nodes(tmp_path):
    deployed = _summary(tmp_path / "deployed", *ONCE, *DEPLOYMENT, timeout=840)
    assert processes_gone(tmp_path / "deployed") == {}
    in_process = _summary(tmp_path / "inprocess", *ONCE)
    assert _local_accuracies(tmp_path / "deployed") == _local_accuracies(tmp_path / "inprocess")
    assert {node for node, _ in _local_accuracies(tmp_path / "deployed")} == {0, 1, 2}
    assert deployed["fedgmm_unseen"] == in_process["fedgmm_unseen"]
    fedgmm = deployed["final_mean_local_accuracy"]
    fedavg = _summary(tmp_path / "fedavg", *ONCE, *FEDAVG)["final_mean_local_accuracy"]
    new = deployed["fedgmm_unseen"]
    print(f"flower deployment, mean local accuracy: fedgmm {fedgmm:.4f}, fedavg {fedavg:.4f}; new {new}")
    assert fedgmm > fedavg
    assert new["nodes"] == 2 and set(new["by_node"]) == {"3", "4"}
    assert all(0 <= value <= 1 for figures in new["by_node"].values() for value in figures)


@pytest.mark.timeout(360)
def test_gossip_peers_fedgmm_beats_fedavg_in_mean_local_accuracy(tmp_path):
    fedgmm = _summary(tmp_path / "fedgmm", *GOSSIP)["final_mean_local_accuracy"]
    fedavg = _summary(tmp_path / "fedavg", *GOSSIP, *FEDAVG)["final_mean_local_accuracy"]
    print(f"gossip, mean local accuracy: fedgmm {fedgmm:.4f}, fedavg {fedavg:.4f}")
    assert fedgmm > fedavg
