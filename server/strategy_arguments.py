"""The keyword arguments of the strategy a config names (`strategy_arguments`), and the checks
that go with them: a user's rule that does not import, too few nodes for a robust rule or a
Flower built-in. Apart from the Flower strategies (`flower_strategies`) and free of Flower, so
that the launcher checks a config before it starts anything without importing Flower (~0.4 s
before the simulation engine's process starts)."""

from __future__ import annotations

from typing import Any

from fedgossip.config import ExperimentConfig
from fedgossip.strategies.registry import FlowerBuiltin, Rule, resolve


def _builtin_arguments(config: ExperimentConfig, entry: FlowerBuiltin) -> dict[str, Any]:
    """Keyword arguments of a Flower built-in that come from the config (its entry's
    `config_args`: argument -> "section.key")."""
    arguments = {}
    for argument, key in entry.config_args:
        section, _, name = key.partition(".")
        arguments[argument] = getattr(getattr(config, section), name)
    return arguments


def strategy_arguments(config: ExperimentConfig, nodes: int | None = None) -> dict[str, Any]:
    """The keyword arguments of the strategy named by config.strategy.name.

    Raises ValueError when a user's rule cannot be imported, or the nodes sampled per round are
    too few for the rule (Krum's n > 2f + 2, Bulyan) when `nodes` (default: nodes.count; fewer
    in a round under churn) are up.
    """
    name, flower, strategy = config.strategy.name, config.flower, config.strategy
    nodes = config.nodes.count if nodes is None else nodes
    minimum = min(2, nodes)
    kwargs: dict[str, Any] = {
        "fraction_train": flower.fraction_train,
        "fraction_evaluate": flower.fraction_evaluate,
        "min_train_nodes": minimum,
        "min_evaluate_nodes": minimum,
        "min_available_nodes": minimum,
    }
    try:
        entry = resolve(name)
    except ValueError as err:
        raise ValueError(f"strategy.name {err}") from None
    if isinstance(entry, Rule):
        sampled = max(int(nodes * flower.fraction_train), minimum)
        who = f"nodes.count = {nodes}" if nodes == config.nodes.count else f"{nodes} nodes up"
        given = f"{who} and flower.fraction_train = {flower.fraction_train} give {sampled}"
        entry.check_enough(strategy.params, sampled, f"round; {given}")
        return {**kwargs, "params": strategy.params}
    if not isinstance(entry, FlowerBuiltin):  # a mechanism: its own Strategy reads the config
        return {**kwargs, **strategy.params}
    arguments = _builtin_arguments(config, entry)
    if entry.min_nodes is not None and nodes < (needed := entry.min_nodes(arguments)):
        given = ", ".join(f"{key} = {arguments[argument]}" for argument, key in entry.config_args)
        raise ValueError(f"strategy {name!r} with {given} needs nodes.count >= {needed}; got {nodes} nodes")
    return {**kwargs, **arguments, **strategy.params}
