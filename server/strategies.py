"""Flower strategies by name: Flower's built-ins and ours, all with seeded node sampling.

Ours are small FedAvg subclasses whose aggregation is a pure function of `fedgossip.strategies`,
the same code the gossip peers merge with:

- `average`: `weighted_average(models, num_examples)`;
- `vca`: `variance_corrected_average(None, models, weights=num_examples, eps, ratio)`, the
  server-side average of the client models followed by variance correction towards the mean of
  the clients' per-tensor variances.

Every strategy samples nodes with its own generator seeded from (experiment seed, phase, round)
over the nodes ordered by partition id, so the same config and seed pick the same partitions
whatever random node ids the SuperNodes registered with. Flower's own sampling (the global
`random` module, over node ids) is replaced, and waiting for nodes has a deadline.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping
from logging import INFO

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    Bulyan,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    Strategy,
)
from flwr.supercore import log

from fedgossip.config import ExperimentConfig
from fedgossip.server.arrays import array_view


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
        **kwargs,
    ) -> None:
        """`labels` maps node id -> partition id and is read at each sampling (pass the dict the
        handshake fills); `node_wait` bounds the wait for enough connected nodes."""
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self.seed, self.node_wait = seed, node_wait
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
        """The strategy's evaluate messages, sent to seeded-sampled nodes."""
        if self.fraction_evaluate > 0:  # type: ignore[attr-defined]
            wait_for_nodes(
                grid, self._needed(grid, self.fraction_evaluate, self.min_evaluate_nodes), self.node_wait
            )  # type: ignore[attr-defined]
        messages = super().configure_evaluate(server_round, arrays, config, grid)  # type: ignore[misc]
        return self._readdress(messages, grid, "evaluate", server_round)


class _OurAggregation(FedAvg):
    """FedAvg with the model aggregation replaced by a function of lists of numpy arrays."""

    def aggregate_models(self, models: list[list[np.ndarray]], weights: list[float]) -> list[np.ndarray]:
        raise NotImplementedError

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the valid replies' models with `aggregate_models` (FedAvg's checks and
        metrics aggregation are kept); tensors keep their names and dtypes."""
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        contents = [message.content for message in valid]
        records = [next(iter(content.array_records.values())) for content in contents]
        weights = [float(next(iter(c.metric_records.values()))[self.weighted_by_key]) for c in contents]
        names = list(records[0].keys())
        models = [[array_view(record[name]) for name in names] for record in records]
        merged = self.aggregate_models(models, weights)
        arrays = ArrayRecord(
            {
                name: Array(np.asarray(value, dtype=models[0][i].dtype))
                for i, (name, value) in enumerate(zip(names, merged, strict=True))
            }
        )
        return arrays, self.train_metrics_aggr_fn(contents, self.weighted_by_key)


class Average(_OurAggregation):
    """FedAvg whose aggregation is `fedgossip.strategies.weighted_average`."""

    def aggregate_models(self, models: list[list[np.ndarray]], weights: list[float]) -> list[np.ndarray]:
        from fedgossip.strategies import weighted_average

        return weighted_average(models, weights)


class VarianceCorrected(_OurAggregation):
    """Server-side variance-corrected averaging (VCA) of the client models:
    `fedgossip.strategies.variance_corrected_average(None, models, weights=num_examples, ...)`."""

    def __init__(self, *args, eps: float = 1e-8, ratio: float = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.eps, self.ratio = eps, ratio

    def summary(self) -> None:
        log(INFO, "\t├──> VCA: eps %s | ratio %s", self.eps, self.ratio)
        super().summary()

    def aggregate_models(self, models: list[list[np.ndarray]], weights: list[float]) -> list[np.ndarray]:
        from fedgossip.strategies import variance_corrected_average

        return variance_corrected_average(None, models, weights=weights, eps=self.eps, ratio=self.ratio)


def _seeded(base: type[Strategy]) -> type:
    return type(f"Seeded{base.__name__}", (SeededSampling, base), {"__doc__": base.__doc__})


STRATEGY_CLASSES: dict[str, type] = {
    "average": Average,
    "vca": VarianceCorrected,
    "fedavg": FedAvg,
    "fedavgm": FedAvgM,
    "fedprox": FedProx,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "fedadagrad": FedAdagrad,
    "fedmedian": FedMedian,
    "fedtrimmedavg": FedTrimmedAvg,
    "krum": Krum,
    "bulyan": Bulyan,
}
SEEDED_CLASSES: dict[str, type] = {name: _seeded(cls) for name, cls in STRATEGY_CLASSES.items()}


def strategy_arguments(config: ExperimentConfig) -> tuple[type, dict]:
    """The (unseeded) Flower strategy class for config.strategy.name and its arguments."""
    name, flower, strategy = config.strategy.name, config.flower, config.strategy
    nodes = config.nodes.count
    minimum = min(2, nodes)
    kwargs: dict = {
        "fraction_train": flower.fraction_train,
        "fraction_evaluate": flower.fraction_evaluate,
        "min_train_nodes": minimum,
        "min_evaluate_nodes": minimum,
        "min_available_nodes": minimum,
    }
    extra: dict[str, Callable[[], dict]] = {
        "vca": lambda: {"eps": strategy.eps, "ratio": strategy.ratio},
        "fedavgm": lambda: {
            "server_learning_rate": flower.server_learning_rate,
            "server_momentum": flower.server_momentum,
        },
        "fedprox": lambda: {"proximal_mu": flower.proximal_mu},
        "fedadam": lambda: {"eta": flower.server_learning_rate, "eta_l": config.task.learning_rate},
        "fedyogi": lambda: {"eta": flower.server_learning_rate, "eta_l": config.task.learning_rate},
        "fedadagrad": lambda: {"eta": flower.server_learning_rate, "eta_l": config.task.learning_rate},
        "fedtrimmedavg": lambda: {"beta": strategy.trim_fraction},
        "krum": lambda: {"num_malicious_nodes": flower.num_malicious},
        "bulyan": lambda: {"num_malicious_nodes": flower.num_malicious},
    }
    if name not in STRATEGY_CLASSES:
        raise ValueError(
            f"strategy.name {name!r} is not a Flower strategy; known: {', '.join(STRATEGY_CLASSES)}"
        )
    if name == "bulyan" and nodes < 4 * flower.num_malicious + 3:
        raise ValueError(f"bulyan needs nodes.count >= 4 * flower.num_malicious + 3; got {nodes} nodes")
    kwargs.update(extra.get(name, dict)())
    return STRATEGY_CLASSES[name], kwargs


def build_strategy(
    config: ExperimentConfig, labels: Mapping[int, int] | None = None, node_wait: float = 120.0
) -> Strategy:
    """The strategy named by config.strategy.name, with seeded sampling over `labels`
    (node id -> partition id, read at each sampling)."""
    _, kwargs = strategy_arguments(config)
    return SEEDED_CLASSES[config.strategy.name](
        seed=config.experiment.seed, labels=labels, node_wait=node_wait, **kwargs
    )
