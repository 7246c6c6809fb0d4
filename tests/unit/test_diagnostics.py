"""Diagnostics in one process: per-tensor variance and the consensus distance against direct numpy
computations on known models, and the Flower ServerApp in-process with a user rule that saves
what it receives, its records reaching the summary and the figures."""

from __future__ import annotations

import textwrap
import time

import numpy as np
import pytest

from fedgossip.base import flower_protocol as p
from fedgossip.client.flower_app import app as client_app
from fedgossip.config import dump_toml, load_config
from fedgossip.reports import build_summary, plot_consensus, plot_variance, read_records
from fedgossip.reports.records import read_consensus
from fedgossip.schema.lines import LineWriter
from fedgossip.schema.records import record
from fedgossip.server.federation import run_federation
from fedgossip.server.local_grid import LocalGrid
from fedgossip.strategies.diagnostics import consensus_distance, layer_variance
from tests.support import (
    direct_consensus,
)

# --- the functions on known arrays ------------------------------------------------------------


def test_layer_variance_is_numpys_population_variance_of_each_float_tensor():
    rng = np.random.default_rng(0)
    names = ["big", "offset", "bias", "steps", "one", "empty"]
    arrays = [
        rng.normal(0.0, 0.05, (300, 400)).astype(np.float32),  # several blocks of 64 Ki elements
        (1e4 + rng.normal(0.0, 1e-3, 5000)).astype(np.float64),  # mean huge against the spread
        rng.normal(size=7).astype(np.float16),
        np.array(12, dtype=np.int64),  # num_batches_tracked: not a float tensor
        np.array([3.5], dtype=np.float32),
        np.zeros((0, 3), dtype=np.float32),
    ]
    variance = layer_variance(names, arrays)
    assert list(variance) == ["big", "offset", "bias", "one"]
    for name, array in zip(names, arrays, strict=False):
        if name in variance:
            assert variance[name] == pytest.approx(np.var(array.astype(np.float64)), rel=1e-10, abs=1e-300)
    assert variance["one"] == 0.0
    assert layer_variance(["w"], [np.array([[1.0, 3.0], [5.0, 7.0]])]) == {"w": 5.0}  # by hand
    with pytest.raises(ValueError, match="2 names for 1 tensors"):
        layer_variance(["a", "b"], [np.ones(3)])


def test_a_tensor_of_one_block_has_the_variance_the_blockwise_pass_gives_bit_for_bit(monkeypatch):
    from fedgossip.strategies import diagnostics

    rng = np.random.default_rng(1)
    arrays = [
        rng.normal(3.0, 0.01, size).astype(dtype)
        for size in (1, 2, 7, 4096, 65536)
        for dtype in (np.float16, np.float32, np.float64)
    ]
    arrays += [np.full(10, 1e30, np.float32), (1e4 + rng.normal(0.0, 1e-3, 5000)).astype(np.float64)]
    names = [f"t{i}" for i in range(len(arrays))]
    alone = diagnostics.layer_variance(names, arrays)
    monkeypatch.setattr(diagnostics, "BLOCK_SIZE", 0)  # every tensor through the workspace's blocks
    assert diagnostics.layer_variance(names, arrays) == alone  # records do not change by a bit


def test_consensus_distance_against_hand_and_numpy_computations():
    # by hand: (0, 0) and (3, 4) average to (1.5, 2): each is 2.5 away
    assert consensus_distance([[np.zeros(2)], [np.array([3.0, 4.0])]]) == pytest.approx(2.5)
    rng = np.random.default_rng(1)
    models = [
        [
            rng.normal(size=(300, 300)).astype(np.float32),
            rng.normal(size=(5,)),
            np.arange(4, dtype=np.int64) * k,  # integer tensors are left out
        ]
        for k in range(5)
    ]
    assert consensus_distance(models) == pytest.approx(direct_consensus(models), rel=1e-10)
    assert consensus_distance(models[:1]) == 0.0
    assert consensus_distance([models[0], models[0]]) == 0.0
    with pytest.raises(ValueError, match="shape"):
        consensus_distance([models[0], [models[1][0][:2], *models[1][1:]]])


def test_consensus_every_is_checked():
    with pytest.raises(ValueError, match=r"experiment\.consensus_every"):
        load_config(None, ["experiment.consensus_every=-1"])


# --- Flower: the ServerApp in-process, with a user rule that saves what it receives ------------

NODES, ROUNDS = 4, 3
RECORDING_RULE = '''
import numpy as np


def saving(own, received, weights, *, folder):
    """The plain mean of the received models; saves them, one .npz per call, in call order."""
    import pathlib

    calls = len(list(pathlib.Path(folder).glob("*.npz")))
    np.savez(pathlib.Path(folder) / f"{calls + 1:03d}.npz", *[t for m in received for t in m])
    return [np.mean(np.stack(ts), axis=0).astype(ts[0].dtype) for ts in zip(*received)]
'''


@pytest.mark.timeout(120)
def test_flower_server_records_consensus_and_the_global_variance(tmp_path, monkeypatch):
    (tmp_path / "diag_rules.py").write_text(textwrap.dedent(RECORDING_RULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    saved = tmp_path / "received"
    saved.mkdir()
    rounds = 3
    config = load_config(
        None,
        [
            'experiment.mode="flower"',
            'flower.engine="inprocess"',
            "flower.fraction_evaluate=0.0",
            f"nodes.count={NODES}",
            f"experiment.rounds={rounds}",
            "task.model=linear",
            "strategy.name=diag_rules:saving",
            f'strategy.params.folder="{saved}"',
        ],
    )
    grid = LocalGrid(client_app, NODES, {p.CONFIG_TOML: dump_toml(config)}, id_seed=0)
    events: list[dict] = []
    final = run_federation(grid, config, events.append)
    server = [e["record"] for e in events if e["type"] == "record" and e["record"]["node"] == "server"]
    assert [r["round"] for r in server] == list(range(rounds + 1))
    assert "consensus_distance" not in server[0]  # round 0: nothing trained yet
    calls = sorted(saved.glob("*.npz"))
    assert len(calls) == rounds
    for entry, call in zip(server[1:], calls, strict=True):
        with np.load(call) as data:
            tensors = [data[f"arr_{i}"] for i in range(len(data.files))]
        per_model = len(tensors) // NODES
        models = [tensors[i * per_model : (i + 1) * per_model] for i in range(NODES)]
        assert entry["consensus_models"] == NODES
        assert entry["consensus_distance"] == pytest.approx(direct_consensus(models), rel=1e-9)
        assert entry["consensus_distance"] > 0
    names = list(final.keys())
    for name in names:
        expected = np.var(final[name].numpy().astype(np.float64))
        assert server[-1]["layer_variance"][name] == pytest.approx(expected, rel=1e-9)


def test_flower_consensus_reaches_the_summary_and_the_figures_from_the_server_records(tmp_path):
    """Reports read Flower's consensus from the server records (no consensus.jsonl); malformed
    values are skipped; the figures are drawn, or not written when there is nothing to draw."""
    writer = LineWriter(tmp_path / "metrics.jsonl")
    for round_, distance in ((0, None), (1, 2.0), (2, 1.25), (3, "bad")):
        server = record(
            "server",
            round_,
            time.time(),
            train_loss=None,
            test_loss=1.0,
            test_accuracy=0.5,
            num_examples=10,
            bytes_sent=0,
            bytes_received=0,
            layer_variance={"w": 0.1 / (round_ + 1)},
        )
        node = record(
            0,
            round_,
            time.time(),
            train_loss=1.0,
            test_loss=1.0,
            test_accuracy=0.5,
            num_examples=10,
            bytes_sent=0,
            bytes_received=0,
        )
        if round_:
            server.update(consensus_distance=distance, consensus_models=4)
        writer.write(server)
        writer.write(node)
    writer.close()
    records = read_records(tmp_path)
    entries = read_consensus(tmp_path, records)
    assert [(e["round"], e["consensus_distance"]) for e in entries] == [(1, 2.0), (2, 1.25)]
    summary = build_summary(tmp_path)
    assert (summary["final_consensus_distance"], summary["final_consensus_round"]) == (1.25, 2)
    assert plot_variance(records, tmp_path / "variance.png", "t") is not None
    assert plot_consensus(entries, tmp_path / "consensus.png", "t") is not None
    assert plot_consensus([], tmp_path / "none.png", "t") is None and not (tmp_path / "none.png").exists()
