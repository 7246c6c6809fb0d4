"""Whole federations in this process: the fedgossip ServerApp logic and ClientApp over an in-process
Grid (no SuperLink, no ports, no Ray), alone and through the launcher (engine = "inprocess"), and
every registered aggregation rule moving the global model."""

from __future__ import annotations

import io
import json
import sys
import textwrap

import pytest
from rich.console import Console

from fedgossip.base import flower_protocol as p
from fedgossip.client.flower_app import app as client_app
from fedgossip.config import dump_toml, load_config
from fedgossip.launcher.experiments.run import run_experiment
from fedgossip.reports import read_records
from fedgossip.server.federation import run_federation
from fedgossip.server.local_grid import LocalGrid
from fedgossip.strategies.registry import RULES
from tests.support import INPROCESS, INPROCESS_NODES, INPROCESS_ROUNDS, RECORD_FIELDS
from tests.support.configs import inprocess_flower

TIMINGS = {"time_s", "train_s", "evaluate_s"}


def small(*overrides: str):
    return inprocess_flower(*overrides)


def federate(config, id_seed: int = 0) -> tuple[list[dict], LocalGrid]:
    grid = LocalGrid(client_app, config.nodes.count, {p.CONFIG_TOML: dump_toml(config)}, id_seed=id_seed)
    events: list[dict] = []
    run_federation(grid, config, events.append)
    return events, grid


def test_three_clients_two_rounds_emit_every_record():
    events, grid = federate(small())
    kinds = [e["type"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "done" and "error" not in kinds
    assert sorted(events[0]["labels"].values()) == [0, 1, 2]
    records = [e["record"] for e in events if e["type"] == "record"]
    nodes = [r for r in records if isinstance(r["node"], int)]
    server = [r for r in records if r["node"] == "server"]
    assert {(r["node"], r["round"]) for r in nodes} == {(n, k) for n in range(3) for k in (1, 2)}
    assert [r["round"] for r in server] == [0, 1, 2]
    assert all(r.keys() >= RECORD_FIELDS for r in records)
    model_bytes = nodes[0]["bytes_sent"]
    for r in nodes:
        assert r["evaluated_by"] == "node" and r["num_examples"] > 0 and r["train_loss"] > 0
        assert r["bytes_sent"] == model_bytes and r["bytes_received"] == 2 * model_bytes  # train + evaluate
        assert r["test_accuracy"] == server[r["round"]]["test_accuracy"]  # same model, same test set
    assert server[2]["test_accuracy"] > server[0]["test_accuracy"] + 0.3
    # handshake 3 + (train 3 + evaluate 3) per round
    assert grid.messages_handled == 3 + 2 * 6


def test_same_config_and_seed_give_the_same_records_whatever_the_node_ids():
    def strip(events):
        return [
            {k: v for k, v in e["record"].items() if k not in TIMINGS}
            for e in events
            if e["type"] == "record"
        ]

    first, _ = federate(small("flower.fraction_train=0.67", "experiment.seed=3"), id_seed=1)
    second, _ = federate(small("flower.fraction_train=0.67", "experiment.seed=3"), id_seed=2)
    assert strip(first) == strip(second)


def test_node_state_survives_rounds_in_context_state():
    _, grid = federate(small("experiment.rounds=1"))
    for context in grid.contexts.values():
        assert p.SHUFFLE_STATE in context.state.config_records[p.STATE]


def _run(tmp_path, *overrides: str) -> tuple[dict, int, str]:
    out = io.StringIO()
    summary, code = run_experiment(small(*overrides), tmp_path / "run", Console(file=out, width=200))
    return summary, code, out.getvalue()


def test_launcher_inprocess_writes_the_results_folder(tmp_path):
    summary, code, _ = _run(tmp_path, 'strategy.name="vca"')
    run = tmp_path / "run"
    assert code == 0 and summary["status"] == "complete" and summary["errors"] == []
    for name in (
        "config.toml",
        "metrics.jsonl",
        "summary.json",
        "accuracy.png",
        "logs/inprocess.log",
        "flower/final-model.npz",
    ):
        assert (run / name).stat().st_size > 0, name
    records = read_records(run)
    assert len(records) == 3 * 2 + 3  # nodes x rounds + the server's rounds 0..2
    assert json.loads((run / "summary.json").read_text())["flower"]["serverapp_peak_rss_mb"] > 0
    assert summary["rounds_completed"] == 2 and summary["final_mean_accuracy"] > 0.5


def test_launcher_reports_a_failing_client_app_with_its_reason(tmp_path):
    summary, code, output = _run(tmp_path, "task.learning_rate=1e30")
    assert code == 1 and summary["status"] == "failed"
    assert any("training diverged" in e for e in summary["errors"]), summary["errors"]
    assert "training diverged" in output


def test_one_node_failing_makes_the_run_partial(tmp_path, monkeypatch):
    from fedgossip.client import flower_app

    original = flower_app.node_setup

    def broken_node_2(context):
        config, partition = original(context)
        if partition == 2 and context.state.config_records.get("seen"):
            raise OSError("disk gone")
        context.state["seen"] = flower_app.ConfigRecord({"x": 1})
        return config, partition

    monkeypatch.setattr(flower_app, "node_setup", broken_node_2)
    summary, code, _ = _run(tmp_path, "flower.fraction_evaluate=0.0")
    assert summary["status"] == "partial" and code == 3
    assert summary["dead_nodes"] == [2]
    assert any("node 2, round 1 (train): node 2: OSError: disk gone" in e for e in summary["errors"])
    assert summary["rounds_completed"] == 2


@pytest.mark.parametrize("name", ["fedavg", "flwr-krum", "fedmedian"])
def test_flower_builtins_run_in_process(name):
    events, _ = federate(small(f'strategy.name="{name}"', "nodes.count=4", "flower.fraction_evaluate=0.0"))
    server = [e["record"] for e in events if e["type"] == "record" and e["record"]["node"] == "server"]
    assert len(server) == 3 and server[-1]["test_accuracy"] > 0.5


def test_batchnorm_statistics_stay_local_to_each_client(tmp_path, monkeypatch):
    """Each client trains and evaluates with its own running statistics (the global ones only in
    round 1), kept in context.state between messages; replayed here with a fresh learner."""

    import numpy as np

    from fedgossip.tasks import build_learner
    from tests.support import (
        USER_MODULE,  # its bn_net: conv, BatchNorm2d, linear, BatchNorm1d
    )

    (tmp_path / "bn_user.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "bn_user", raising=False)
    config = small('task.model="bn_user:bn_net"', "nodes.count=2")
    seen = []  # (partition, message type, shuffle state before, message, reply)

    def recording(message, context):
        state = context.state.config_records.get(p.STATE)
        shuffle = json.loads(str(state[p.SHUFFLE_STATE])) if state is not None else None
        reply = client_app(message, context)
        seen.append(
            (context.node_config[p.PARTITION_ID], message.metadata.message_type, shuffle, message, reply)
        )
        return reply

    grid = LocalGrid(recording, 2, {p.CONFIG_TOML: dump_toml(config)})
    events: list[dict] = []
    final = run_federation(grid, config, events.append)
    assert "error" not in [e["type"] for e in events]
    server = [e["record"] for e in events if e["type"] == "record" and e["record"]["node"] == "server"]
    assert server[2]["test_accuracy"] > server[0]["test_accuracy"] + 0.3  # the rule ran every round

    def arrays(message):
        return {n: a.numpy() for n, a in message.content.array_records[p.ARRAYS].items()}

    kept = {}
    for node in (0, 1):
        learner = build_learner(config.task, node, 2, config.experiment.seed)
        local = learner.local_names
        assert "1.running_mean" in local
        own = None
        for _, kind, shuffle, message, reply in (s for s in seen if s[0] == node and s[1] != "query"):
            sent = arrays(message)
            start = {n: own[n] if own is not None and n in local else a for n, a in sent.items()}
            learner.set_weights(list(start.values()))
            if kind == "train":
                if shuffle is not None:
                    learner.shuffle_state = shuffle
                learner.train()
                got = arrays(reply)
                for name, want in zip(learner.names, learner.get_weights(), strict=True):
                    np.testing.assert_allclose(got[name], want, rtol=1e-6, atol=1e-7, err_msg=name)
                own = got
            else:  # evaluate: the global model with this node's own statistics
                loss, accuracy = learner.evaluate()
                metrics = reply.content.metric_records[p.METRICS]
                assert (metrics[p.TEST_LOSS], metrics[p.TEST_ACCURACY]) == pytest.approx((loss, accuracy))
        state = next(c for c in grid.contexts.values() if c.node_config[p.PARTITION_ID] == node).state
        kept[node] = {n: a.numpy() for n, a in state.array_records[p.LOCAL_TENSORS].items()}
        assert kept[node].keys() == local
        np.testing.assert_array_equal(kept[node]["1.running_mean"], own["1.running_mean"])
    # the two clients' statistics (different data) differ, and differ from the server's average
    assert not np.allclose(kept[0]["1.running_mean"], kept[1]["1.running_mean"])
    for node in (0, 1):
        assert not np.allclose(kept[node]["1.running_mean"], final["1.running_mean"].numpy())


NODES, ROUNDS = INPROCESS_NODES, INPROCESS_ROUNDS
FLOWER = INPROCESS


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", list(RULES))
def test_every_rule_runs_in_a_flower_run(name):
    config = load_config(None, [*FLOWER, f"strategy.name={name}"])
    grid = LocalGrid(client_app, NODES, {p.CONFIG_TOML: dump_toml(config)}, id_seed=0)
    events: list[dict] = []
    run_federation(grid, config, events.append)
    assert events[-1]["type"] == "done", events[-1]
    server = [e["record"] for e in events if e["type"] == "record" and e["record"]["node"] == "server"]
    assert [r["round"] for r in server] == list(range(ROUNDS + 1))
    assert server[-1]["test_accuracy"] > server[0]["test_accuracy"] + 0.2  # the global model moved
