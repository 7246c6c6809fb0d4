"""strategy.name = "fair" in Flower mode, in one process: the ServerApp's aggregation on crafted
replies, whole in-process federations on a streamed task (explore, then exploit with stale nodes)
beside the baselines in the same setting, and the launcher's fair summary and plot."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MessageType
from rich.console import Console

from fedgossip.base import flower_protocol as p
from fedgossip.client.flower_app import app as client_app
from fedgossip.config import config_from_dict, dump_toml
from fedgossip.launcher.experiments.run import run_experiment
from fedgossip.reports import read_records
from fedgossip.reports.fair import fair_summary
from fedgossip.server.arrays import array_view
from fedgossip.server.fair import FairStrategy
from fedgossip.server.federation import run_federation
from fedgossip.server.local_grid import LocalGrid, claim_server_identity
from tests.support import NAMES, fair_config, model, reply

TIMINGS = {"time_s", "train_s", "evaluate_s"}


class Nodes:
    """The part of a Grid that FairStrategy asks: the connected node ids."""

    def __init__(self, ids):
        self.ids = list(ids)

    def get_node_ids(self):
        return self.ids


def test_the_global_step_weights_updates_by_size_over_all_nodes_even_when_few_trained():
    claim_server_identity(1)
    rng = np.random.default_rng(3)
    theta = model(rng)
    ids = {100: 0, 101: 1, 102: 2}
    params = {"stopping": "fixed", "explore_rounds": 1, "ratio": 0.34, "floor": 0.5}
    strategy = FairStrategy(num_nodes=3, params=params, seed=0, labels=ids)
    grid = Nodes(ids)
    arrays = ArrayRecord({n: Array(t) for n, t in zip(NAMES, theta, strict=True)})
    sent = list(strategy.configure_train(1, arrays, ConfigRecord({"local-epochs": 1}), grid))
    assert sorted(m.metadata.dst_node_id for m in sent) == [100, 101, 102]
    assert all(m.content.config_records[p.CONFIG][p.SERVER_ROUND] == 1 for m in sent)
    models, sizes = [model(rng) for _ in ids], [10, 30, 60]
    merged, _ = strategy.aggregate_train(
        1, [reply(n, m, s) for n, m, s in zip(ids, models, sizes, strict=True)]
    )
    w = np.array(sizes) / 100
    for index, name in enumerate(NAMES):
        expected = theta[index] + sum(w[i] * (models[i][index] - theta[index]) for i in range(3))
        np.testing.assert_allclose(array_view(merged[name]), expected, rtol=1e-6, atol=1e-6)
    assert not strategy.mechanism.exploring  # fixed: one explore round
    evaluate = list(strategy.configure_evaluate(1, merged, ConfigRecord(), grid))
    assert all(m.content.config_records[p.CONFIG][p.KEEP_MODEL] for m in evaluate)
    # exploit: one node trains; its step keeps its weight over all nodes (not renormalised)
    theta2 = [array_view(merged[name]) for name in NAMES]
    (message,) = strategy.configure_train(2, merged, ConfigRecord(), grid)
    node = message.metadata.dst_node_id
    update = model(rng)
    merged2, _ = strategy.aggregate_train(2, [reply(node, update, sizes[ids[node]])])
    for index, name in enumerate(NAMES):
        expected = theta2[index] + w[ids[node]] * (update[index] - theta2[index])
        np.testing.assert_allclose(array_view(merged2[name]), expected, rtol=1e-6, atol=1e-6)
    evaluate = list(strategy.configure_evaluate(2, merged2, ConfigRecord(), grid))
    assert {m.metadata.dst_node_id: bool(m.content.array_records) for m in evaluate} == {
        n: n == node for n in ids
    }
    assert all(m.metadata.message_type == MessageType.EVALUATE for m in evaluate)
    fields = strategy.node_fields(2)
    assert {i: f["staleness"] for i, f in fields.items()} == {i: 0 if i == ids[node] else 1 for i in range(3)}


def hand_made_round(rng: np.random.Generator, odd: str) -> tuple[list[list[np.ndarray]], np.ndarray]:
    """Four nodes' updates of one round: nodes 0-2 agree (a common direction s plus a little
    noise, norm ~1); node 3's is -s ("opposite") or a random direction of the same norm ("random")."""
    s = model(rng)
    scale = np.sqrt(sum(float(np.vdot(t, t)) for t in s))
    s = [t / scale for t in s]
    clean = [[t + 0.05 * rng.standard_normal(t.shape).astype(np.float32) for t in s] for _ in range(3)]
    if odd == "opposite":
        other = [-t for t in s]
    else:
        r = model(rng)
        norm = np.sqrt(sum(float(np.vdot(t, t)) for t in r))
        other = [t / norm for t in r]
    return [*clean, other], scale


@pytest.mark.parametrize("odd", ["opposite", "random"])
def test_a_node_whose_update_disagrees_gets_the_lowest_psi_through_the_server_path(odd):
    """The ServerApp's own path (configure_train, aggregate_train on replies, node_fields) on a
    hand-made case: the odd node 3 must end with the lowest psi; psi is the mean of the rounds'
    contributions, which sum to about U(all) = 1; update_norm and update_alignment are
    ||g_i|| and cos(g_i, sum_j w_j g_j), computed here independently."""
    claim_server_identity(1)
    rng = np.random.default_rng(11)
    ids = {200: 0, 201: 1, 202: 2, 203: 3}  # node id -> partition id, as the handshake fills it
    strategy = FairStrategy(
        num_nodes=4, params={"stopping": "fixed", "explore_rounds": 9}, seed=0, labels=ids
    )
    grid = Nodes(reversed(list(ids)))  # the grid's order is not the partition order
    theta = model(rng)
    phis = []
    for round_ in range(1, 9):
        arrays = ArrayRecord({n: Array(t) for n, t in zip(NAMES, theta, strict=True)})
        sent = list(strategy.configure_train(round_, arrays, ConfigRecord(), grid))
        assert sorted(m.metadata.dst_node_id for m in sent) == sorted(ids)
        updates, _ = hand_made_round(rng, odd)
        replies = [
            reply(node, [t + g for t, g in zip(theta, updates[i], strict=True)], 50)
            for node, i in sorted(ids.items(), key=lambda item: -item[1])  # replies in any order
        ]
        merged, _ = strategy.aggregate_train(round_, replies)
        list(strategy.configure_evaluate(round_, merged, ConfigRecord(), grid))
        fields = strategy.node_fields(round_)
        step = np.concatenate([np.ravel(sum(u[t] for u in updates) / 4) for t in range(len(NAMES))])
        for i in range(4):
            g = np.concatenate([np.ravel(t) for t in updates[i]])
            assert fields[i]["update_norm"] == pytest.approx(np.linalg.norm(g), rel=1e-4)
            expected = g @ step / (np.linalg.norm(g) * np.linalg.norm(step))
            assert fields[i]["update_alignment"] == pytest.approx(expected, abs=1e-4)
        phis.append([fields[i]["contribution"] for i in range(4)])
        assert [fields[i]["psi"] for i in range(4)] == pytest.approx(np.mean(phis, axis=0))
        theta = [array_view(merged[name]) for name in NAMES]
    psi = np.mean(phis, axis=0)
    assert int(np.argmin(psi)) == 3 and psi[3] < min(psi[:3]) - 0.1
    if odd == "opposite":
        assert psi[3] < 0  # pulling against the aggregate is a negative contribution
    else:  # (with -s, a clean node plus node 3 sums to ~0: a coalition of random direction)
        assert psi[:3] == pytest.approx([psi[:3].mean()] * 3, abs=0.08)  # the agreeing nodes alike


def federate(config, id_seed: int = 0) -> list[dict]:
    grid = LocalGrid(client_app, config.nodes.count, {p.CONFIG_TOML: dump_toml(config)}, id_seed=id_seed)
    events: list[dict] = []
    run_federation(grid, config, events.append)
    assert [e for e in events if e["type"] in ("error", "node-error")] == []
    return [e["record"] for e in events if e["type"] == "record" and isinstance(e["record"]["node"], int)]


@pytest.fixture(scope="module")
def fair_records():
    return federate(fair_config())


def rows_of(records, round_):
    return sorted((r for r in records if r["round"] == round_), key=lambda r: r["node"])


def test_explore_rounds_train_everyone_and_measure_contributions(fair_records):
    contributions = {n: [] for n in range(5)}
    for round_ in (1, 2, 3):
        rows = rows_of(fair_records, round_)
        assert [r["node"] for r in rows] == list(range(5))
        assert all(r["phase"] == "explore" and r["selected"] and r["staleness"] == 0 for r in rows)
        assert len({r["test_accuracy"] for r in rows}) == 1  # one global model, one evaluation set
        assert sum(r["contribution"] for r in rows) == pytest.approx(1.0, abs=0.3)
        for r in rows:
            contributions[r["node"]].append(r["contribution"])
            assert r["psi"] == pytest.approx(np.mean(contributions[r["node"]]))
            assert r["selection_probability"] is None


def test_exploit_rounds_send_the_model_to_the_selected_only_and_the_others_keep_theirs(fair_records):
    last_received = dict.fromkeys(range(5), 3)
    for round_ in range(4, 8):
        rows = rows_of(fair_records, round_)
        chosen = [r for r in rows if r["selected"]]
        assert len(chosen) == 2 and all(r["phase"] == "exploit" and r["contribution"] is None for r in rows)
        for r in rows:
            if r["selected"]:
                last_received[r["node"]] = round_
                assert r["bytes_received"] > 0 and r["train_loss"] is not None
            else:
                assert r["bytes_received"] == 0 and r["train_loss"] is None  # no model sent
            assert r["staleness"] == round_ - last_received[r["node"]]
            assert r["evaluated_by"] == "node" and r["psi"] == rows_of(fair_records, 3)[r["node"]]["psi"]
        by_model: dict[int, set] = {}
        for r in rows:  # the same kept model on the same evaluation set: the same accuracy
            by_model.setdefault(last_received[r["node"]], set()).add(r["test_accuracy"])
        assert all(len(accuracies) == 1 for accuracies in by_model.values())
        assert sum(r["selection_probability"] for r in rows) == pytest.approx(1.0)


def test_the_same_seed_selects_the_same_nodes_whatever_the_node_ids(fair_records):
    again = federate(fair_config(), id_seed=9)
    strip = [{k: v for k, v in r.items() if k not in TIMINGS} for r in fair_records]
    assert strip == [{k: v for k, v in r.items() if k not in TIMINGS} for r in again]


def test_the_noisiest_partition_is_the_record_of_the_same_node_id():
    """Noise, training and records use one id: with every label of partition 4 random (the others
    clean) and node ids shuffled against partitions, record 4 is the node that cannot fit its
    labels (the highest train loss in every explore round after the first)."""
    config = fair_config("task.label_noise=[0.0, 0.0, 0.0, 0.0, 1.0]", "experiment.rounds=3")
    records = federate(config, id_seed=5)
    for round_ in (2, 3):
        rows = rows_of(records, round_)
        losses = [r["train_loss"] for r in rows]
        assert int(np.argmax(losses)) == 4 and losses[4] > max(losses[:4]) + 0.05
        assert all(r["update_norm"] > 0 and -1 <= r["update_alignment"] <= 1 for r in rows)


@pytest.mark.parametrize("selection", ["all", "random"])
def test_baselines_in_the_same_setting(selection):
    records = federate(fair_config(f'strategy.params.selection="{selection}"', "experiment.rounds=5"))
    exploit = [r for r in records if r["phase"] == "exploit"]
    if selection == "all":
        assert exploit == [] and all(r["selected"] and r["contribution"] is not None for r in records)
    else:
        assert all(r["selection_probability"] == pytest.approx(0.2) for r in exploit)
        assert all(sum(r["selected"] for r in rows_of(records, t)) == 2 for t in (4, 5))


def test_the_launcher_writes_the_fair_summary_and_plot(tmp_path):
    out = io.StringIO()
    summary, code = run_experiment(
        fair_config("experiment.rounds=12"), tmp_path / "run", Console(file=out, width=200)
    )
    assert code == 0, summary["errors"]
    assert "wraps around: round 6 evaluates on chunk 0" in out.getvalue()
    fair = json.loads((tmp_path / "run" / "summary.json").read_text())["fair"]
    assert fair["explore_rounds"] == 3 and fair["exploit_rounds"] == 9 and fair["noise_kind"] == "label"
    assert [fair["nodes"][str(n)]["noise"] for n in range(5)] == pytest.approx([0, 0.12, 0.24, 0.36, 0.48])
    for key in ("fairness", "psi_noise_correlation", "staleness_correlation"):
        assert fair[key] is None or -1 <= fair[key] <= 1
    assert fair["equality"]["spread_end"] >= 0 and fair["equality"]["spread_trend_per_round"] is not None
    assert (tmp_path / "run" / "fair.png").stat().st_size > 10_000
    # the diagnostics, recomputed from the records: corr(noise, psi_t) per explore round, its value
    # after the last round before the stream wrapped (here the explore phase ends first), and the
    # correlation of noise with each node's mean update norm over the explore phase
    rows = [r for r in read_records(tmp_path / "run") if isinstance(r["node"], int)]
    noise = [n / 5 * 0.6 for n in range(5)]
    explore = [[r for r in rows if r["round"] == t] for t in (1, 2, 3)]
    by_round = [np.corrcoef([noise[r["node"]] for r in g], [r["psi"] for r in g])[0, 1] for g in explore]
    assert list(fair["psi_noise_correlation_by_round"]) == ["1", "2", "3"]
    assert list(fair["psi_noise_correlation_by_round"].values()) == pytest.approx(by_round, abs=1e-4)
    assert fair["psi_noise_correlation_first_pass"] == fair["psi_noise_correlation_by_round"]["3"]
    norms = [np.mean([r["update_norm"] for g in explore for r in g if r["node"] == n]) for n in range(5)]
    assert fair["norm_noise_correlation"] == pytest.approx(np.corrcoef(noise, norms)[0, 1], abs=1e-4)


def test_the_first_pass_correlation_is_the_one_before_the_stream_wraps_around():
    """Hand-made records, 4 nodes, 2 chunks, 4 explore rounds: psi ranks the noisy nodes lowest
    while the data are fresh (rounds 1-2), then highest; the first-pass value is round 2's, the
    final one round 4's."""
    task = {"label_noise": 0.4, "stream_chunks": 2}
    config = config_from_dict({"strategy": {"name": "fair"}, "task": task, "nodes": {"count": 4}})
    fresh, repeated = [0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.45]
    records = [
        {
            "node": n,
            "round": t,
            "phase": "explore",
            "test_accuracy": 0.5,
            "psi": psi[n],
            "update_norm": n + 1.0,
        }
        for t, psi in ((1, fresh), (2, fresh), (3, repeated), (4, repeated))
        for n in range(4)
    ]
    fair = fair_summary(records, config)
    assert fair["psi_noise_correlation_first_pass"] == pytest.approx(-1.0)
    assert fair["psi_noise_correlation"] == pytest.approx(np.corrcoef([0, 1, 2, 3], repeated)[0, 1], abs=1e-4)
    assert fair["norm_noise_correlation"] == pytest.approx(1.0)
    assert fair["nodes"]["3"]["mean_update_norm"] == 4.0
