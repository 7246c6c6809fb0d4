"""`strategy.name = "dp-bayesian-regression"` in Flower mode: the parties send the table holding
their release (the same release every round: it is drawn once per node) and the server's model
is the union of the tables; from it the server estimates theta with the strategy's `estimator`
(again only when a new release arrived), and each node's record carries that estimate's fields.
Every node then evaluates the one-step estimate of the global table."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.supercore import log

from fedgossip.base import flower_protocol as p
from fedgossip.base.seeding import stream
from fedgossip.config import ExperimentConfig
from fedgossip.server.arrays import array_view
from fedgossip.server.flower_strategies import wait_for_nodes
from fedgossip.strategies.dp_regression import table
from fedgossip.strategies.dp_regression.estimate import EstimateFields
from fedgossip.strategies.dp_regression.release import Bounds
from fedgossip.tasks.dp_regression import evaluation


def dp_regression_strategy(
    config: ExperimentConfig, labels: Mapping[int, int], node_wait: float
) -> DPRegressionStrategy:
    """The Strategy of `config` (the registry entry's `flower_strategy` part) over the nodes known
    by partition id (`labels`: node id -> partition id), waiting at most `node_wait` s for them."""
    return DPRegressionStrategy(config, labels, node_wait)


class DPRegressionStrategy(Strategy):
    """Union of the parties' tables; the server's estimate for the records."""

    def __init__(self, config: ExperimentConfig, labels: Mapping[int, int], node_wait: float) -> None:
        self.params = config.strategy.params
        self.num_nodes = config.nodes.count
        self.labels = labels
        self.node_wait = node_wait
        seed = config.experiment.seed
        self.fields_of = EstimateFields(
            self.params, evaluation(config.task, seed), stream(seed, "dp_regression")
        )
        self._fields: dict[int, dict[str, Any]] = {}
        self._global: ArrayRecord | None = None

    def summary(self) -> None:
        """Log the mechanism's parameters."""
        log(INFO, "\t├──> strategy dp-bayesian-regression over %s parties: %s", self.num_nodes, self.params)

    def _messages(
        self, arrays: ArrayRecord, config: ConfigRecord, round_: int, kind: str, grid: Grid
    ) -> list[Message]:
        wait_for_nodes(grid, self.num_nodes, self.node_wait)
        content = {**dict(config), p.SERVER_ROUND: round_}
        return [
            Message(
                RecordDict({p.ARRAYS: arrays, p.CONFIG: ConfigRecord(content)}),
                dst_node_id=node,
                message_type=kind,
            )
            for node in grid.get_node_ids()
            if node in self.labels
        ]

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """The global table, with the release's privacy parameters, to every party."""
        names = list(arrays.keys())
        tensors = [array_view(arrays[name]) for name in names]
        bounds = Bounds(self.params["bound_x"], self.params["bound_y"])
        tensors = table.with_privacy(tensors, self.params["epsilon"], self.params["delta"], bounds)
        self._global = ArrayRecord({n: Array(t) for n, t in zip(names, tensors, strict=True)})
        return self._messages(self._global, config, server_round, MessageType.TRAIN, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The union of the global table and the parties' (checked by the RecordingGrid), and the
        mean training MSE."""
        assert self._global is not None  # configure_train ran first
        names = list(self._global.keys())
        tables = [[array_view(self._global[name]) for name in names]]
        losses = []
        for reply in replies:
            if reply.has_error():
                continue
            record = next(iter(reply.content.array_records.values()))
            tables.append([array_view(record[name]) for name in names])
            losses.append(float(next(iter(reply.content.metric_records.values()))[p.TRAIN_LOSS]))
        merged = table.union(tables)
        fields = self.fields_of(table.released(merged, table.features(merged)))
        self._fields[server_round] = {i: fields for i in range(self.num_nodes)}
        metrics = MetricRecord({p.TRAIN_LOSS: float(np.mean(losses))}) if losses else None
        return ArrayRecord({n: Array(t) for n, t in zip(names, merged, strict=True)}), metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """The global table to every party, to evaluate its one-step estimate."""
        return self._messages(arrays, config, server_round, MessageType.EVALUATE, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """The parties' mean test MSE and R^2 (all evaluate the same table)."""
        metrics = [next(iter(r.content.metric_records.values())) for r in replies if not r.has_error()]
        if not metrics:
            return None
        return MetricRecord(
            {key: float(np.mean([float(m[key]) for m in metrics])) for key in (p.TEST_LOSS, p.TEST_ACCURACY)}
        )

    def node_fields(self, server_round: int) -> dict[int, dict[str, Any]]:
        """partition id -> the server's estimate fields of round `server_round`."""
        return self._fields.pop(server_round, {})
