"""`strategy.name = "fair"` in Flower mode: the fair-incentive mechanism
(`fedgossip.strategies.fair.FairMechanism`) as a Flower Strategy.

Each round: train messages carry the global model to the nodes the mechanism chooses (all of them
while exploring); the ServerApp adds the mechanism's step sum_i w_i g_i to the global model. Then
every node evaluates its own current model on the round's evaluation set: the nodes that
delivered an update get the new global model in their evaluate message, flagged `keep-model`, and
keep it in their `context.state`; every other node gets no model and evaluates the one it keeps
(stale). The ServerApp tracks which round's model each node holds (its staleness), and
`node_fields(round)` gives the mechanism's per-node metrics for the round's records.

A node's own model is the latest global model it was given: a node that trained in round t holds
theta_t after it (in explore rounds every node does, as the authors evaluate). (In the authors'
exploit phase a selected node keeps the theta_{t-1} it trained from: one round older.)
"""

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
from fedgossip.strategies.fair import FairMechanism


def fair_strategy(config: ExperimentConfig, labels: Mapping[int, int], node_wait: float) -> FairStrategy:
    """The Strategy of `config` (strategy.name = "fair"; the `flower_strategy` part of the registry's
    entry) over nodes known by partition id (`labels`: node id -> partition id, filled by the
    handshake), waiting at most `node_wait` seconds for them."""
    return FairStrategy(
        num_nodes=config.nodes.count,
        params=config.strategy.params,
        seed=config.experiment.seed,
        labels=labels,
        node_wait=node_wait,
    )


class FairStrategy(Strategy):
    """The fair-incentive mechanism over `num_nodes` nodes known by partition id (`labels`: node id
    -> partition id, filled by the handshake)."""

    def __init__(
        self,
        *,
        num_nodes: int,
        params: Mapping[str, Any],
        seed: int,
        labels: Mapping[int, int],
        node_wait: float = 120.0,
    ) -> None:
        self.mechanism = FairMechanism(num_nodes, params, stream(seed, "fair"))
        self.num_nodes = num_nodes
        self.labels = labels
        self.node_wait = node_wait
        self._global: ArrayRecord | None = None
        self._fields: dict[int, dict[int, dict[str, Any]]] = {}

    def summary(self) -> None:
        """Log the mechanism's parameters."""
        log(INFO, "\t├──> strategy fair over %s nodes: %s", self.num_nodes, self.mechanism.params)

    def _node_ids(self, grid: Grid) -> dict[int, int]:
        """partition id -> node id of every node (waiting, with a deadline, until all are there)."""
        wait_for_nodes(grid, self.num_nodes, self.node_wait)
        return {self.labels[n]: n for n in grid.get_node_ids() if n in self.labels}

    @staticmethod
    def _message(content: RecordDict, node: int, kind: str) -> Message:
        return Message(content, dst_node_id=node, message_type=kind)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """The global model to the chosen nodes (all of them while exploring)."""
        nodes = self._node_ids(grid)
        self._global = arrays
        train_config = ConfigRecord({**dict(config), p.SERVER_ROUND: server_round})
        return [
            self._message(RecordDict({p.ARRAYS: arrays, p.CONFIG: train_config}), nodes[i], MessageType.TRAIN)
            for i in self.mechanism.choose(server_round)
            if i in nodes
        ]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """theta + sum_i w_i g_i over the delivered updates (non-float tensors keep theta's
        values), and the example-weighted train loss."""
        assert self._global is not None
        names = list(self._global.keys())
        theta = [array_view(self._global[name]) for name in names]
        floats = [t.dtype.kind == "f" for t in theta]
        updates, sizes, losses = {}, {}, []
        for reply in replies:
            if reply.has_error() or reply.metadata.src_node_id not in self.labels:
                continue
            node = self.labels[reply.metadata.src_node_id]
            record = next(iter(reply.content.array_records.values()))  # checked by RecordingGrid
            metrics = next(iter(reply.content.metric_records.values()))
            updates[node] = [
                array_view(record[name]).astype(np.float64) - t
                for name, t, is_float in zip(names, theta, floats, strict=True)
                if is_float
            ]
            sizes[node] = int(metrics[p.NUM_EXAMPLES])
            losses.append((float(metrics[p.TRAIN_LOSS]), sizes[node]))
        step = iter(self.mechanism.aggregate(updates, sizes))
        merged = ArrayRecord(
            {
                name: Array(np.asarray(t + next(step), dtype=t.dtype) if is_float else np.array(t))
                for name, t, is_float in zip(names, theta, floats, strict=True)
            }
        )
        total = sum(n for _, n in losses)
        return merged, MetricRecord({p.TRAIN_LOSS: sum(loss * n for loss, n in losses) / total})

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Every node evaluates its own model: the new global one (kept) for those that
        delivered this round, the one they keep for the others."""
        nodes = self._node_ids(grid)
        fresh = set(self.mechanism.receivers())
        self._fields[server_round] = self.mechanism.fields()
        messages = []
        for i, node in sorted(nodes.items()):
            values = {**dict(config), p.SERVER_ROUND: server_round, p.KEEP_MODEL: i in fresh}
            content = RecordDict({p.CONFIG: ConfigRecord(values)})
            if i in fresh:
                content[p.ARRAYS] = arrays
            messages.append(self._message(content, node, MessageType.EVALUATE))
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """The nodes' mean test loss and accuracy (each node's own model, equal weights)."""
        metrics = [
            next(iter(reply.content.metric_records.values())) for reply in replies if not reply.has_error()
        ]
        if not metrics:
            return None
        return MetricRecord(
            {key: float(np.mean([float(m[key]) for m in metrics])) for key in (p.TEST_LOSS, p.TEST_ACCURACY)}
        )

    def node_fields(self, server_round: int) -> dict[int, dict[str, Any]]:
        """partition id -> the mechanism's metrics of round `server_round` (see
        `FairMechanism.fields`)."""
        return self._fields.pop(server_round, {})
