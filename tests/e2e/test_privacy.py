"""Privacy for real: Flower's central DP with client-side clipping on a SuperLink and two
SuperNodes (the clients' clipping mod in their ClientApp processes, the server's wrapper and its
seeded noise) gives the records and the global model of the same config in process."""

from __future__ import annotations

import json

import pytest

from fedgossip.base.flower_protocol import load_model
from fedgossip.config import PrivacySection
from fedgossip.reports import read_records
from fedgossip.server.flower_privacy import central_epsilon
from tests.support import FLOWER, processes_gone, run_cli, run_inprocess

CENTRAL = [
    "--set",
    "experiment.rounds=1",
    "--set",
    "strategy.name=average",
    "--set",
    "task.hidden=16",
    "--set",
    'privacy.mechanism="central-fixed-client"',
    "--set",
    "privacy.noise_multiplier=0.05",
]


@pytest.mark.timeout(240)
def test_central_dp_with_client_clipping_on_a_superlink_equals_the_in_process_run(tmp_path):
    run, same = tmp_path / "deploy", tmp_path / "same"
    result = run_cli("run", "--out", str(run), *FLOWER, *CENTRAL, timeout=170)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["flower"]["status"] == "finished:completed"
    records = read_records(run)
    assert {r["node"] for r in records} == {0, 1, "server"}
    assert all(r["privacy"] == "central-fixed-client" for r in records)
    privacy = PrivacySection(mechanism="central-fixed-client", noise_multiplier=0.05)
    server = {r["round"]: r for r in records if r["node"] == "server"}
    assert server[1]["epsilon"] == pytest.approx(central_epsilon(privacy, 1))
    assert processes_gone(run) == {}
    run_inprocess(same, [*FLOWER, *CENTRAL])
    deployed, local = (load_model(folder / "flower" / "final-model.npz") for folder in (run, same))
    assert list(deployed) == list(local) and all((deployed[k] == local[k]).all() for k in deployed)
    keys = ("node", "round", "train_loss", "test_accuracy", "epsilon")
    assert sorted(str([r.get(k) for k in keys]) for r in read_records(same)) == sorted(
        str([r.get(k) for k in keys]) for r in records
    )
