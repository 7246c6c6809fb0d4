"""Flower's SecAgg+ for the training phase of every round (`flower.secure_aggregation = "secagg+"`):
the server learns the weighted average of the sampled models and no individual model.

`SecureAverage` is our `average` with seeded sampling, whose train phase runs Flower's
`SecAggPlusWorkflow` (a legacy workflow, on a `LegacyContext`) on the round's grid: its
`configure_train` builds the usual train messages (global model + config), runs the protocol's
four exchanges with them (setup, share keys, collect masked vectors, unmask) and returns no message
for `Strategy.start` to send; `aggregate_train` returns what the protocol unmasked. Each node masks
[q_i, q_i * w_i] with q_i its example count quantized (`client/flower_secure.py`), so the unmasked
sums give sum q_i w_i / sum q_i: `average`'s weighted mean, up to SecAgg+'s quantization
(flower.secagg_quantization_range levels over +-flower.secagg_clipping_range per weight, stochastic
rounding). The aggregate gets the global model's names and dtypes and the reply checks that
still apply (shapes, finiteness; one that fails them is logged and the global model stays, as
with a failing rule); the nodes' train metrics travel in the clear, as Flower's
legacy FitRes metrics do, and are averaged by example count.

Strategy `vca` runs too: each node also masks its tensors' variances (q_i * var_i), so the server
unmasks the weighted mean of the variances beside the weighted average and corrects the average to
them (`strategies.variance_correction.correct_average`): VCA for `own = None`, from sums. The
model's local tensors (BatchNorm statistics) are averaged, not corrected, as `RuleStrategy` does.

`_RoundPlan` is the legacy strategy the workflow asks: its configure_fit names the sampled nodes,
its aggregate_fit keeps the unmasked result. `_Workflow` sends our Message-API train content
(not legacy FitIns) in the masked-vector stage, and lets a node drop out before its key shares
went out (flwr 1.42 fails the round then: `_Workflow.share_keys_stage`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from logging import WARNING
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common import FitIns, Parameters, parameters_to_ndarrays
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy as LegacyStrategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log

from fedgossip.config import ExperimentConfig
from fedgossip.schema.tensors import TensorSpec, check_arrays
from fedgossip.server.arrays import array_view
from fedgossip.server.flower_strategies import SeededSampling, strategy_arguments
from fedgossip.strategies.registry import resolve
from fedgossip.strategies.variance_correction import correct_average


class _Node:
    """What the legacy workflow needs of a client proxy: its node id."""

    def __init__(self, node_id: int) -> None:
        self.node_id = node_id


class _RoundPlan(LegacyStrategy):
    """The legacy strategy of one secure round: the nodes sampled, and the unmasked result."""

    def __init__(self, nodes: Iterable[int]) -> None:
        self.nodes = list(nodes)
        self.results: list[tuple[Any, Any]] | None = None  # (proxy, FitRes), parameters unmasked

    def initialize_parameters(self, client_manager) -> None:  # pragma: no cover - never asked
        return None

    def configure_fit(self, server_round, parameters, client_manager) -> list[tuple[Any, FitIns]]:
        """The sampled nodes (their train content is `_Workflow`'s)."""
        return [(_Node(node), FitIns(Parameters([], ""), {})) for node in self.nodes]

    def aggregate_fit(self, server_round, results, failures) -> tuple[None, dict]:
        """Keep the results: every FitRes carries the unmasked weighted average."""
        self.results = list(results)
        return None, {}

    def configure_evaluate(self, server_round, parameters, client_manager) -> list:  # pragma: no cover
        return []

    def aggregate_evaluate(self, server_round, results, failures) -> tuple[None, dict]:  # pragma: no cover
        return None, {}

    def evaluate(self, server_round, parameters) -> None:  # pragma: no cover
        return None


class _Workflow(SecAggPlusWorkflow):
    """SecAgg+ whose masked-vector stage sends each node our train message's content."""

    def __init__(self, contents: Mapping[int, RecordDict], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.contents = dict(contents)

    def setup_stage(self, grid: Grid, context: LegacyContext, state) -> bool:
        """Flower's setup stage, then our train content in place of the legacy FitIns."""
        ready = super().setup_stage(grid, context, state)
        state.nid_to_fitins = dict(self.contents)
        return ready

    def share_keys_stage(self, grid: Grid, context: LegacyContext, state) -> bool:
        """Flower's share-keys stage; then the nodes that dropped out before their shares went out
        leave the round. Nobody masks with them, so there is nothing of theirs to unmask; flwr 1.42
        keeps them among the sampled nodes, asks the others for their key shares in the unmask
        stage (which they never received: a KeyError on every node, the round lost) and removes
        their masks from the neighbours of nodes that drop out later."""
        super().share_keys_stage(grid, context, state)
        shared = set(state.active_node_ids)
        state.sampled_node_ids = shared
        state.nid_to_neighbours = {
            nid: neighbours & shared for nid, neighbours in state.nid_to_neighbours.items() if nid in shared
        }
        return self._check_threshold(state)


class SecureAverage(SeededSampling, FedAvg):
    """The weighted average of the sampled models, computed by SecAgg+ (see the module docstring)."""

    def __init__(
        self,
        *args: Any,
        secagg: Mapping[str, Any],
        timeout: float,
        correction: Mapping[str, float] | None = None,
        local_names: Iterable[str] = (),
        **kwargs: Any,
    ) -> None:
        """`secagg`: SecAggPlusWorkflow's keyword arguments; `timeout`: each exchange's wait;
        `correction`: VCA's eps and ratio (None: plain average), not applied to `local_names`."""
        super().__init__(*args, **kwargs)
        self.secagg, self.timeout = dict(secagg), timeout
        self.correction = None if correction is None else dict(correction)
        self.local_names = frozenset(local_names)
        self._result: tuple[ArrayRecord | None, MetricRecord | None] = (None, None)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Run the round's SecAgg+ protocol with the seeded-sampled train messages; nothing is
        left for `Strategy.start` to send."""
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self._result = self._secure_round(server_round, arrays, messages, grid)
        return []

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The unmasked aggregate of the round (None: the protocol halted; the global model stays)."""
        result, self._result = self._result, (None, None)
        return result

    def _secure_round(
        self, server_round: int, arrays: ArrayRecord, messages: list[Message], grid: Grid
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if not messages:
            return None, None
        plan = _RoundPlan(m.metadata.dst_node_id for m in messages)
        state = RecordDict(
            {
                MAIN_PARAMS_RECORD: arrays,
                MAIN_CONFIGS_RECORD: ConfigRecord({Key.CURRENT_ROUND: server_round}),
            }
        )
        context = LegacyContext(Context(0, 0, {}, state, {}), strategy=plan)
        # one content per node (Flower's train messages share one): the protocol adds each node's own shares
        contents = {m.metadata.dst_node_id: RecordDict(dict(m.content.items())) for m in messages}
        _Workflow(contents, timeout=self.timeout, **self.secagg)(grid, context)
        if not plan.results:
            log(WARNING, "SecAgg+ halted in round %s; keeping the previous global model", server_round)
            return None, None
        values = parameters_to_ndarrays(plan.results[0][1].parameters)
        try:
            if self.correction is not None:  # the last vector: the weighted mean of each tensor's variance
                local = {i for i, name in enumerate(arrays.keys()) if name in self.local_names}
                values = correct_average(values[:-1], list(values[-1]), skip=local, **self.correction)
            aggregate = unmasked_arrays(arrays, values)
        except ValueError as err:  # as a failing rule in RuleStrategy: the global model stays
            log(
                WARNING,
                "SecAgg+'s aggregate in round %s: %s; keeping the previous global model",
                server_round,
                err,
            )
            return None, train_metrics(plan.results)
        return aggregate, train_metrics(plan.results)


def unmasked_arrays(template: ArrayRecord, values: list[np.ndarray]) -> ArrayRecord:
    """The unmasked aggregate with the names and dtypes of the global model `template` (integer
    tensors rounded), checked like a reply's model (shapes, finiteness)."""
    names = list(template.keys())
    specs = [
        TensorSpec.of(name, array_view(template[name]).shape, array_view(template[name]).dtype)
        for name in names
    ]
    dtypes = [np.dtype(spec.dtype) for spec in specs]
    out = [
        np.asarray(np.rint(v) if np.issubdtype(dtype, np.integer) else v, dtype=dtype)
        for v, dtype in zip(values, dtypes, strict=True)
    ]
    check_arrays(out, specs)
    return ArrayRecord({name: Array(value) for name, value in zip(names, out, strict=True)})


def train_metrics(results: list[tuple[Any, Any]]) -> MetricRecord:
    """The nodes' train metrics (sent in the clear) averaged by example count."""
    total = sum(fitres.num_examples for _, fitres in results)
    keys = set.intersection(*(set(fitres.metrics) for _, fitres in results))
    return MetricRecord(
        {
            key: sum(fitres.metrics[key] * fitres.num_examples for _, fitres in results) / total
            for key in sorted(keys)
        }
    )


def secure_strategy(
    config: ExperimentConfig, labels: Mapping[int, int], node_wait: float, local_names: Iterable[str] = ()
) -> SecureAverage:
    """The SecureAverage strategy of `config` (flower.secure_aggregation "secagg+"): VCA's
    correction from strategy.params under `vca`."""
    flower = config.flower
    kwargs = strategy_arguments(config)
    params = kwargs.pop("params", None) or {}
    correction = None
    if config.strategy.name == "vca":
        bound = resolve("vca").bind(params)
        correction = {"eps": bound["eps"], "ratio": bound["ratio"]}
    secagg = {
        "num_shares": flower.secagg_num_shares or 1.0,  # 1.0: every sampled node
        "reconstruction_threshold": flower.secagg_reconstruction_threshold or 2 / 3,  # a majority
        "clipping_range": flower.secagg_clipping_range,
        "quantization_range": flower.secagg_quantization_range,
        "max_weight": flower.secagg_max_weight,
    }
    return SecureAverage(
        seed=config.experiment.seed,
        labels=labels,
        node_wait=node_wait,
        evaluated=config.experiment.evaluated,
        secagg=secagg,
        timeout=flower.round_timeout,
        correction=correction,
        local_names=local_names,
        **kwargs,
    )
