"""SecAgg+ for real: a SuperLink and three SuperNodes run a round of `average` through Flower's
SecAgg+ (the protocol's four exchanges over the SuperLink, the mod in a ClientApp process per
message, its state kept by the SuperNodes between them). The global model is the in-process SecAgg+
run's bit for bit (the masks cancel exactly, the rounding is seeded) and the plain run's within
SecAgg+'s quantization. One round: each secure round costs a SuperNode four ClientApp processes
(67 s for two rounds on a quiet 2-core machine); the next round's restart of the protocol is
tested in process (tests/unit/test_secure_aggregation.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedgossip.base import flower_protocol as p
from fedgossip.base.flower_protocol import load_model
from fedgossip.client.flower_app import app as client_app
from fedgossip.config import dump_toml, load_config
from fedgossip.reports import read_records
from fedgossip.server.federation import run_federation
from fedgossip.server.local_grid import LocalGrid
from tests.support import FLOWER, processes_gone, run_cli

SECURE = [
    "nodes.count=3",
    "experiment.rounds=1",
    "strategy.name=average",
    "task.hidden=8",
    "flower.fraction_evaluate=0.0",  # the server evaluates: one ClientApp process less a round
    'flower.secure_aggregation="secagg+"',
]
KEYS = ("node", "round", "train_loss", "test_accuracy", "evaluated_by", "bytes_sent", "bytes_received")


def _in_process(*settings: str) -> tuple[dict[str, np.ndarray], list[dict]]:
    """The final global model and the records of the same config run in this process."""
    overrides = [item for item in FLOWER if item != "--set"] + [*SECURE, *settings, "flower.engine=inprocess"]
    config = load_config(None, overrides)
    events: list[dict] = []
    grid = LocalGrid(client_app, config.nodes.count, {p.CONFIG_TOML: dump_toml(config)}, id_seed=0)
    arrays = run_federation(grid, config, events.append)
    records = [event["record"] for event in events if event["type"] == "record"]
    return {name: arrays[name].numpy() for name in arrays}, records


@pytest.mark.timeout(600)
def test_secagg_on_a_superlink_gives_the_plain_average_within_quantization(tmp_path):
    run = tmp_path / "deploy"
    settings = [arg for item in SECURE for arg in ("--set", item)]
    result = run_cli("run", "--out", str(run), *FLOWER, *settings, timeout=420)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["flower"]["status"] == "finished:completed"
    records = read_records(run)
    assert {r["node"] for r in records} == {0, 1, 2, "server"}
    nodes = [r for r in records if r["node"] != "server" and r["round"] >= 1]
    assert len(nodes) == 3 and all(r["train_loss"] > 0 and not r.get("errors") for r in nodes)
    server = [r for r in records if r["node"] == "server" and r["round"] >= 1]
    assert all("consensus_distance" not in r for r in server)  # no client model reached the server
    assert processes_gone(run) == {}

    deployed = load_model(run / "flower" / "final-model.npz")
    local, local_records = _in_process()
    reference, _ = _in_process('flower.secure_aggregation="none"')
    assert list(deployed) == list(local) == list(reference)
    assert all((deployed[k] == local[k]).all() for k in deployed)
    assert sorted(str([r.get(k) for k in KEYS]) for r in local_records) == sorted(
        str([r.get(k) for k in KEYS]) for r in records
    )
    for name in deployed:
        np.testing.assert_allclose(deployed[name], reference[name], rtol=0, atol=1e-4)
    assert max(float(np.abs(deployed[k] - reference[k]).max()) for k in deployed) > 0
