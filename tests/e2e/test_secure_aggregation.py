"""SecAgg+ for real: a SuperLink and three SuperNodes run two rounds of `average` through Flower's
SecAgg+ (the protocol's four exchanges a round over the SuperLink, the mod in the ClientApp
processes). The global model is the in-process SecAgg+ run's bit for bit (the masks cancel
exactly, the rounding is seeded) and the plain run's within SecAgg+'s quantization."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedgossip.base.flower_protocol import load_model
from fedgossip.reports import read_records
from tests.support import FLOWER, processes_gone, run_cli

SECURE = [
    "--set",
    "nodes.count=3",
    "--set",
    "experiment.rounds=2",
    "--set",
    "strategy.name=average",
    "--set",
    "task.hidden=8",
    "--set",
    "flower.fraction_evaluate=0.0",  # the server evaluates: one ClientApp process less a round
    "--set",
    'flower.secure_aggregation="secagg+"',
]
INPROCESS = ["--set", "flower.engine=inprocess"]


@pytest.mark.timeout(600)
def test_secagg_on_a_superlink_gives_the_plain_average_within_quantization(tmp_path):
    run, same, plain = tmp_path / "deploy", tmp_path / "same", tmp_path / "plain"
    result = run_cli("run", "--out", str(run), *FLOWER, *SECURE, timeout=420)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["flower"]["status"] == "finished:completed"
    records = read_records(run)
    assert {r["node"] for r in records} == {0, 1, 2, "server"}
    nodes = [r for r in records if r["node"] != "server" and r["round"] >= 1]
    assert len(nodes) == 6 and all(r["train_loss"] > 0 and not r.get("errors") for r in nodes)
    server = [r for r in records if r["node"] == "server" and r["round"] >= 1]
    assert all("consensus_distance" not in r for r in server)  # no client model reached the server
    assert processes_gone(run) == {}

    for folder, settings in ((same, SECURE), (plain, [*SECURE, "--set", 'flower.secure_aggregation="none"'])):
        result = run_cli("run", "--out", str(folder), *FLOWER, *settings, *INPROCESS, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
    deployed, local, reference = (load_model(f / "flower" / "final-model.npz") for f in (run, same, plain))
    assert list(deployed) == list(local) == list(reference)
    assert all((deployed[k] == local[k]).all() for k in deployed)
    keys = ("node", "round", "train_loss", "test_accuracy", "evaluated_by", "bytes_sent", "bytes_received")
    assert sorted(str([r.get(k) for k in keys]) for r in read_records(same)) == sorted(
        str([r.get(k) for k in keys]) for r in records
    )
    for name in deployed:
        np.testing.assert_allclose(deployed[name], reference[name], rtol=0, atol=1e-4)
    assert max(float(np.abs(deployed[k] - reference[k]).max()) for k in deployed) > 0
