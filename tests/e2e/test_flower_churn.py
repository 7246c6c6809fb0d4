"""Flower-mode churn: the plan drawn from the seed, the config checks, and for real a SuperNode
stopped by the launcher at a round and restarted (same partition) rounds later, the SuperLink
seeing it leave and register again, the ServerApp going on without it and taking it back."""

from __future__ import annotations

import json
import re

import pytest

from fedgossip.config import load_config
from fedgossip.launcher.flower.churn import check_churn
from fedgossip.launcher.supervision.proctree import alive
from fedgossip.reports import read_records
from fedgossip.scenario.churn import Outage, churn_plan
from fedgossip.scenario.roles import CrashClock, roles
from tests.support import FLOWER, processes_gone, run_cli

CHURN = ["experiment.mode=flower", "strategy.name=average", "experiment.rounds=10"]


def sets(settings: dict[str, str]) -> list[str]:
    """`fedgossip run` arguments that set each key to its value."""
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


def test_the_plan_crashes_the_chosen_nodes_for_down_rounds_and_brings_them_back():
    config = load_config(
        None, [*CHURN, "scenario.crash=[1, 3]", "scenario.crash_round=4", "scenario.down_rounds=3"]
    )
    plan = churn_plan(config)
    assert plan.outages == (Outage(1, 4, 7), Outage(3, 4, 7))
    assert plan.crashing(4) == [1, 3] and plan.crashing(5) == []
    assert [o.node for o in plan.returning(7)] == [1, 3]
    assert [sorted(plan.down(r)) for r in (3, 4, 6, 7)] == [[], [1, 3], [1, 3], []]
    assert plan.fewest_up(8) == (6, 4)
    late = churn_plan(load_config(None, [*CHURN, "scenario.crash=[2]", "scenario.crash_round=9"]))
    assert late.outages == (Outage(2, 9, None),)  # back after the last round: never restarted
    assert not churn_plan(load_config(None, CHURN))


def test_a_crash_rate_plan_is_the_gossip_peers_crash_clock_and_seeded():
    settings = [*CHURN, "experiment.rounds=30", "scenario.crash_rate=0.1", "scenario.down_rounds=2"]
    config = load_config(None, [*settings, "experiment.seed=5"])
    plan = churn_plan(config)
    assert plan == churn_plan(load_config(None, [*settings, "experiment.seed=5"]))
    assert plan != churn_plan(load_config(None, [*settings, "experiment.seed=6"]))
    for node in range(config.nodes.count):
        # a gossip peer asks its clock once per round it runs: while it is down it does not ask
        clock = CrashClock(config.scenario, roles(config.scenario, node, config.nodes.count, 5), node, 5)
        expected, round_ = [], 1
        while round_ <= 30:
            if clock.crashes(round_):
                expected.append(round_)
                round_ += 2
            else:
                round_ += 1
        assert [o.first for o in plan.outages if o.node == node] == expected
        assert all(
            o.back == (o.first + 2 if o.first + 2 <= 30 else None) for o in plan.outages if o.node == node
        )


@pytest.mark.parametrize("engine", ["simulation", "inprocess"])
def test_churn_on_a_flower_engine_without_supernode_processes_is_a_config_error(engine):
    with pytest.raises(ValueError, match=rf"scenario\.crash needs flower\.engine = 'deployment'.*{engine}"):
        load_config(None, [*CHURN, f"flower.engine={engine}", "scenario.crash=[1]", "scenario.crash_round=2"])
    load_config(None, [*CHURN, f"flower.engine={engine}"])  # no churn: fine


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            ["nodes.count=2", "scenario.crash=[1]"],
            "leaves 1 of 2 nodes up in round 3; a round needs at least 2",
        ),
        (
            ["nodes.count=5", "scenario.crash=[0]", "strategy.name=krum", "strategy.params.f=1"],
            "leaves 4 of 5 nodes up in round 3: strategy 'krum' with params {'f': 1} needs 5 models "
            "per round; 4 nodes up",
        ),
        (["scenario.crash=[0]", "strategy.name=fair"], "strategy.name 'fair' waits for every node"),
    ],
)
def test_churn_that_leaves_too_few_nodes_for_the_strategy_is_refused_before_the_run(settings, message):
    config = load_config(None, [*CHURN, "scenario.crash_round=3", *settings])
    with pytest.raises(ValueError, match=re.escape(message)):
        check_churn(config, churn_plan(config))


def test_the_cli_refuses_flower_churn_it_cannot_run_with_exit_2(tmp_path):
    args = sets({"scenario.crash": "[1]", "scenario.crash_round": "2"})
    result = run_cli("run", "--out", str(tmp_path / "run"), *FLOWER, *args, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "error: scenario churn leaves 1 of 2 nodes up in round 2" in result.stderr + result.stdout
    assert not (tmp_path / "run").exists()


@pytest.mark.timeout(300)
def test_a_supernode_stopped_at_round_1_misses_it_and_takes_part_again_in_round_2(tmp_path):
    run = tmp_path / "churn"
    settings = {
        "nodes.count": "3",
        "experiment.rounds": "2",
        "strategy.name": "average",
        "flower.fraction_evaluate": "0",  # the server evaluates: one ClientApp per node and round
        "scenario.crash": "[1]",
        "scenario.crash_round": "1",
        "scenario.down_rounds": "1",
    }
    result = run_cli("run", "--out", str(run), *FLOWER, *sets(settings), timeout=290)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r" 5/5 round 2: mean acc", result.stdout), result.stdout  # the bar ends at its total
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["errors"] == [], summary
    assert summary["flower"]["status"] == "finished:completed"
    records = read_records(run)
    rounds = {n: sorted(r["round"] for r in records if r["node"] == n) for n in (0, 1, 2)}
    assert rounds == {0: [1, 2], 1: [2], 2: [1, 2]}  # node 1: no record, no reply in round 1
    back = next(r for r in records if r["node"] == 1)
    assert back["rounds_missed"] == 1 and back["bytes_sent"] > 0 and back["train_loss"] is not None
    server = {r["round"]: r for r in records if r["node"] == "server"}
    assert server[1]["consensus_models"] == 2 and server[2]["consensus_models"] == 3
    assert server[1]["train_s"] < 45  # the round did not wait for the stopped node (round_timeout 60)
    assert summary["rounds_missed_by_node"] == {"1": 1}
    assert summary["rejoin_s_by_node"]["1"] == back["rejoin_s"] > 0
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert [(e["round"], e["node"], e["kind"]) for e in events] == [(1, 1, "crash"), (2, 1, "rejoin")]
    crash, rejoin = events
    assert crash["details"]["down_rounds"] == 1 and rejoin["details"]["rounds_missed"] == 1
    assert crash["time_s"] < rejoin["time_s"]
    old_pid, new_pid = crash["details"]["pid"], rejoin["details"]["pid"]
    pids = json.loads((run / "processes.json").read_text())
    assert pids["supernode-1"] == new_pid != old_pid and not alive(old_pid)
    # the SuperLink saw the node sign off and register again, under another node id
    lines = (run / "flower" / "records.jsonl").read_text().splitlines()
    started = next(json.loads(line) for line in lines if '"started"' in line)
    first_id = next(node_id for node_id, partition in started["labels"].items() if partition == 1)
    assert rejoin["details"]["node_id"] != first_id
    superlink = (run / "logs" / "superlink.log").read_text()
    assert f"Deactivated node_id={first_id}" in superlink
    assert (run / "logs" / "supernode-1.log").read_text().count("Starting Flower SuperNode") == 2
    assert processes_gone(run) == {}


def test_rejoins_forget_a_node_that_left_and_ask_the_one_that_came_back_its_partition():
    from fedgossip.base import flower_protocol as p
    from fedgossip.client.flower_app import app
    from fedgossip.server.handshake import discover_nodes
    from fedgossip.server.local_grid import LocalGrid
    from fedgossip.server.rejoin import Rejoins

    config = load_config(
        None,
        [
            *CHURN,
            "nodes.count=3",
            "experiment.rounds=3",
            "scenario.crash=[1]",
            "scenario.crash_round=1",
            "scenario.down_rounds=1",
        ],
    )
    grid = LocalGrid(app, 3, {p.OVERRIDES: "nodes.count=3"}, id_seed=7)
    labels = discover_nodes(grid, 3, timeout=5)
    old_id = next(i for i, n in labels.items() if n == 1)
    events, away = [], {}

    def launcher(event: dict) -> None:  # what the launcher does at each round start
        events.append(event)
        if event == {"type": "round-start", "round": 1}:
            away["context"] = grid.contexts.pop(old_id)
        elif event == {"type": "round-start", "round": 2}:
            grid.contexts[old_id + 1] = away["context"]  # registered again, under a new id

    rejoins = Rejoins(grid, churn_plan(config), labels, 3, launcher, 0.0, timeout=5)
    rejoins.before_round(1)
    assert sorted(labels.values()) == [0, 2] and old_id not in labels
    assert rejoins.take(1) == {}
    rejoins.before_round(2)
    assert labels[old_id + 1] == 1 and sorted(labels.values()) == [0, 1, 2]
    fields = rejoins.take(1)
    assert fields["rounds_missed"] == 1 and 0 <= fields["rejoin_s"] < 5 and rejoins.take(1) == {}
    rejoin = events[-1]
    assert (rejoin["type"], rejoin["kind"], rejoin["node"], rejoin["round"]) == ("scenario", "rejoin", 1, 2)
    assert rejoin["details"]["node_id"] == str(old_id + 1)
    rejoins.before_round(3)
    assert events[-1] == {"type": "round-start", "round": 3} and sorted(labels.values()) == [0, 1, 2]
