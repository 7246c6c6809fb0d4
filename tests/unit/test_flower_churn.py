"""Flower-mode churn without processes: the plan drawn from the seed, the config checks, and the
ServerApp forgetting a node that left and asking the one that came back for its partition."""

from __future__ import annotations

import re

import pytest

from fedgossip.config import load_config
from fedgossip.launcher.flower.churn import check_churn
from fedgossip.scenario.churn import Outage, churn_plan
from fedgossip.scenario.roles import CrashClock, roles

CHURN = ["experiment.mode=flower", "strategy.name=average", "experiment.rounds=10"]


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
