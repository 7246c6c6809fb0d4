"""Configs the unit tests build again and again."""

from __future__ import annotations

from fedgossip.config import load_config


def inprocess_flower(*overrides: str, nodes: int = 3, rounds: int = 2):
    """A Flower run of `nodes` nodes and `rounds` rounds on the in-process engine, plain averaging,
    the default task (the digits MLP), then `overrides`."""
    return load_config(
        None,
        [
            'experiment.mode="flower"',
            'strategy.name="average"',
            'flower.engine="inprocess"',
            f"nodes.count={nodes}",
            f"experiment.rounds={rounds}",
            *overrides,
        ],
    )
