"""Flower strategies by name: ours (and users') over the strategy registry, and Flower's built-ins.

Every rule of `fedgossip.strategies.registry` (ours, or a user's `package.module:function`) runs
in a `RuleStrategy`: a FedAvg subclass whose model aggregation is `rule(None, models,
num_examples, **params)`, the same code the gossip peers merge with. `average` is the weighted
average of the client models, `vca` that average variance-corrected towards the mean of the
clients' per-tensor variances. A rule that fails in a round (raises, or returns an invalid model)
is logged with its name and the round, and the server keeps the previous global model. The
model's local tensors (BatchNorm running statistics: the clients keep their own, see
client/flower_app.py) are not the rule's: the global model carries their example-weighted mean.
Flower's built-ins are the registry's `FLOWER_BUILTINS`, by class name. A registry mechanism
builds its own Strategy (its entry's `flower_strategy` part; fair incentives:
`fedgossip.server.fair.fair_strategy`).

Every strategy samples nodes with its own generator seeded from (experiment seed, phase, round)
over the nodes ordered by partition id, so the same config and seed pick the same partitions
whatever random node ids the SuperNodes registered with. Flower's own sampling (the global
`random` module, over node ids) is replaced, and waiting for nodes has a deadline.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp import strategy as flower_strategies
from flwr.serverapp.strategy import FedAvg, Strategy
from flwr.supercore import log

from fedgossip.config import ExperimentConfig
from fedgossip.server.arrays import array_view
from fedgossip.server.flower_privacy import with_privacy
from fedgossip.server.strategy_arguments import strategy_arguments
from fedgossip.strategies.mechanisms import mechanism
from fedgossip.strategies.registry import FlowerBuiltin, Rule, resolve, run_rule


class NodesMissing(RuntimeError):
    """Fewer nodes than needed were connected when the wait ran out."""


def wait_for_nodes(grid: Grid, count: int, timeout: float, interval: float = 0.5) -> list[int]:
    """The connected node ids once at least `count` are connected; NodesMissing after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = list(grid.get_node_ids())
        if len(nodes) >= count:
            return nodes
        if time.monotonic() >= deadline:
            raise NodesMissing(
                f"only {len(nodes)} of the {count} nodes needed were connected after {timeout:.0f}s"
            )
        time.sleep(interval)


class SeededSampling:
    """Mixin (listed before a FedAvg-family class) that makes node sampling reproducible.

    The strategy builds its messages as usual; they are then re-addressed to nodes drawn with
    `random.Random((seed, phase, round))` from the nodes sorted by label (partition id). Nodes
    without a label (not yet known) come last, by node id.
    """

    def __init__(
        self,
        *args,
        seed: int = 0,
        labels: Mapping[int, int] | None = None,
        node_wait: float = 120.0,
        evaluated: Callable[[int], bool] = lambda server_round: True,
        **kwargs,
    ) -> None:
        """`labels` maps node id -> partition id and is read at each sampling (pass the dict the
        handshake fills); `node_wait` bounds the wait for enough connected nodes; `evaluated`
        says which rounds the nodes evaluate (`ExperimentSection.evaluated`)."""
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self.seed, self.node_wait, self.evaluated = seed, node_wait, evaluated
        self.labels: Mapping[int, int] = labels if labels is not None else {}

    def _needed(self, grid: Grid, fraction: float, minimum: int) -> int:
        total = len(list(grid.get_node_ids()))
        return max(int(total * fraction), minimum, self.min_available_nodes)  # type: ignore[attr-defined]

    def _readdress(
        self, messages: Iterable[Message], grid: Grid, phase: str, server_round: int
    ) -> list[Message]:
        messages = list(messages)
        if not messages:
            return messages
        nodes = sorted(grid.get_node_ids(), key=lambda n: (0, self.labels[n]) if n in self.labels else (1, n))
        rng = random.Random(f"{self.seed}:{phase}:{server_round}")
        position = {node: index for index, node in enumerate(nodes)}
        chosen = sorted(rng.sample(nodes, min(len(messages), len(nodes))), key=position.__getitem__)
        out = []
        for node, message in zip(chosen, messages, strict=False):
            message.metadata.dst_node_id = node
            out.append(message)
        return out

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """The strategy's train messages, sent to seeded-sampled nodes."""
        if self.fraction_train > 0:  # type: ignore[attr-defined]
            wait_for_nodes(
                grid, self._needed(grid, self.fraction_train, self.min_train_nodes), self.node_wait
            )  # type: ignore[attr-defined]
        messages = super().configure_train(server_round, arrays, config, grid)  # type: ignore[misc]
        return self._readdress(messages, grid, "train", server_round)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """The strategy's evaluate messages, sent to seeded-sampled nodes (none on a round
        experiment.evaluate_every skips)."""
        if not self.evaluated(server_round):
            return []
        if self.fraction_evaluate > 0:  # type: ignore[attr-defined]
            wait_for_nodes(
                grid, self._needed(grid, self.fraction_evaluate, self.min_evaluate_nodes), self.node_wait
            )  # type: ignore[attr-defined]
        messages = super().configure_evaluate(server_round, arrays, config, grid)  # type: ignore[misc]
        return self._readdress(messages, grid, "evaluate", server_round)


class RuleStrategy(FedAvg):
    """FedAvg whose model aggregation is a registry rule, `rule(None, models, num_examples, **params)`.

    Subclasses made by :func:`rule_strategy` set `rule`. The rule's declared parameters are keyword
    arguments of the constructor (`VarianceCorrected(eps=0.0)`), checked by the registry; a user's
    rule takes `params={...}` unchecked. `local_names`: the model's local tensors, left out of the
    rule and averaged by example count instead.
    """

    rule: Rule

    def __init__(
        self,
        *args: Any,
        params: Mapping[str, Any] | None = None,
        local_names: Iterable[str] = (),
        **kwargs: Any,
    ) -> None:
        declared = {param.name for param in self.rule.params or ()}
        given = {**(params or {}), **{key: kwargs.pop(key) for key in declared & set(kwargs)}}
        super().__init__(*args, **kwargs)
        self.params = self.rule.bind(given)
        self.local_names = frozenset(local_names)

    def summary(self) -> None:
        """Log the rule and its parameters, then FedAvg's settings."""
        log(INFO, "\t├──> strategy %s: %s", self.rule.name, self.params)
        super().summary()

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the valid replies' models with the rule (FedAvg's checks and metrics
        aggregation are kept); tensors keep their names and dtypes. If the rule fails, log it and
        return no arrays: `Strategy.start` then keeps the previous global model."""
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        contents = [message.content for message in valid]
        records = [next(iter(content.array_records.values())) for content in contents]
        weights = [float(next(iter(c.metric_records.values()))[self.weighted_by_key]) for c in contents]
        names = list(records[0].keys())
        models = [[array_view(record[name]) for name in names] for record in records]
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
        shared = [i for i, name in enumerate(names) if name not in self.local_names]
        merged, error = run_rule(
            self.rule,
            None,
            [[model[i] for i in shared] for model in models],
            weights,
            self.params,
            server_round,
        )
        if merged is None:
            log(WARNING, "%s; keeping the previous global model", error)
            return None, metrics
        values = dict(zip(shared, merged, strict=True))
        for i in set(range(len(names))) - values.keys():
            values[i] = _weighted_mean([model[i] for model in models], weights)
        arrays = ArrayRecord(
            {name: Array(np.asarray(values[i], dtype=models[0][i].dtype)) for i, name in enumerate(names)}
        )
        return arrays, metrics


def _weighted_mean(tensors: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """The `weights`-weighted mean of one tensor across clients, in its dtype (integers rounded)."""
    mean = np.average(np.stack(tensors).astype(np.float64), axis=0, weights=weights)
    return np.rint(mean) if np.issubdtype(tensors[0].dtype, np.integer) else mean


@cache
def rule_strategy(name: str) -> type[RuleStrategy]:
    """The RuleStrategy subclass of the registry's (or a user's) rule `name`."""
    rule = resolve(name)
    if not isinstance(rule, Rule):
        raise ValueError(f"strategy {name!r} is one of Flower's built-ins, not a registry rule")
    title = "".join(part.title() for part in name.replace(":", ".").replace("-", ".").split("."))
    namespace = {"rule": rule, "__doc__": rule.doc, "__module__": __name__}
    return type(f"{title}Strategy", (RuleStrategy,), namespace)


Average = rule_strategy("average")
VarianceCorrected = rule_strategy("vca")


@cache
def seeded_class(name: str) -> type:
    """The strategy class named `name` (a registry rule or a Flower built-in), with seeded sampling."""
    entry = resolve(name)
    if isinstance(entry, FlowerBuiltin):
        base = getattr(flower_strategies, entry.flower_class)
    else:
        base = rule_strategy(name)
    namespace = {"__doc__": base.__doc__, "__module__": __name__}
    return type(f"Seeded{base.__name__}", (SeededSampling, base), namespace)


def build_strategy(
    config: ExperimentConfig,
    labels: Mapping[int, int] | None = None,
    node_wait: float = 120.0,
    local_names: Iterable[str] = (),
) -> Strategy:
    """The strategy named by config.strategy.name: a mechanism's own (its registry entry's
    `flower_strategy`), else a rule or built-in with seeded sampling over `labels` (node id ->
    partition id, read at each sampling); a registry rule leaves the model's `local_names` out of
    its aggregation. flower.secure_aggregation: the weighted average by SecAgg+
    (`server/secure_aggregation.py`)."""
    own = mechanism(config.strategy.name)
    if own is not None:  # a mechanism builds its own Strategy; its parameters were checked with the config
        return own.part("flower_strategy")(config, labels if labels is not None else {}, node_wait)
    if config.flower.secure_aggregation != "none":  # imported here: Flower's legacy API only when asked
        from fedgossip.server.secure_aggregation import secure_strategy

        return secure_strategy(config, labels if labels is not None else {}, node_wait, local_names)
    kwargs = strategy_arguments(config)  # first: its errors name the config keys
    if isinstance(resolve(config.strategy.name), Rule):  # Flower's built-ins take no such argument
        kwargs["local_names"] = local_names
    strategy = seeded_class(config.strategy.name)(
        seed=config.experiment.seed,
        labels=labels,
        node_wait=node_wait,
        evaluated=config.experiment.evaluated,
        **kwargs,
    )
    return with_privacy(config, strategy)  # Flower's central DP around it, if [privacy] asks
