"""Flower's built-ins take their config arguments, and Bulyan its least node count, from their
registry entries (`FlowerBuiltin.config_args`, `min_nodes`), not from name compares."""

from __future__ import annotations

import re

import pytest

from fedgossip.config import load_config
from fedgossip.server.flower_strategies import strategy_arguments


def flower(*overrides: str):
    return load_config(None, ['experiment.mode="flower"', "nodes.count=7", *overrides])


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("fedavgm", {"server_learning_rate": 0.5, "server_momentum": 0.25}),
        ("fedprox", {"proximal_mu": 0.125}),
        ("fedadam", {"eta": 0.5, "eta_l": 0.03}),
        ("fedyogi", {"eta": 0.5, "eta_l": 0.03}),
        ("fedadagrad", {"eta": 0.5, "eta_l": 0.03}),
        ("flwr-krum", {"num_malicious_nodes": 1}),
        ("bulyan", {"num_malicious_nodes": 1}),
        ("fedavg", {}),
    ],
)
def test_each_builtin_gets_the_config_values_its_entry_names(name, expected):
    config = flower(
        f'strategy.name="{name}"',
        "flower.server_learning_rate=0.5",
        "flower.server_momentum=0.25",
        "flower.proximal_mu=0.125",
        "task.learning_rate=0.03",
        "flower.num_malicious=1",
    )
    arguments = strategy_arguments(config)
    base = {
        "fraction_train",
        "fraction_evaluate",
        "min_train_nodes",
        "min_evaluate_nodes",
        "min_available_nodes",
    }
    assert {key: value for key, value in arguments.items() if key not in base} == expected


def test_bulyan_needs_four_nodes_per_malicious_one_plus_three():
    config = flower('strategy.name="bulyan"', "flower.num_malicious=1")
    assert strategy_arguments(config)["num_malicious_nodes"] == 1  # 7 nodes: just enough
    message = "strategy 'bulyan' with flower.num_malicious = 1 needs nodes.count >= 7; got 6 nodes"
    with pytest.raises(ValueError, match=re.escape(message)):
        strategy_arguments(config, nodes=6)
