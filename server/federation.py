"""The federation one ServerApp runs, on any Grid: handshake, rounds, records.

1. Handshake (server/handshake.py): wait (with a deadline) until `nodes.count` nodes are
   connected and ask each for its partition, so records and sampling use stable partition ids.
2. The common start: `build_learner(task, 0, N, seed)`'s initial weights; the same learner
   evaluates each global model on the global held-out test set (the "server" records), on the
   rounds `experiment.evaluate_every` evaluates (the others' records carry no test figures).
3. `Strategy.start` with the strategy named in the config, through a `RecordingGrid` that checks
   replies and counts bytes; after each round, one record per node and one for the server (with
   the global model's `layer_variance` and the client models' `consensus_distance`) are
   emitted as they are produced; a strategy with a `node_fields(round)` method (partition id ->
   fields) adds its own per-node metrics to them (`fair`: psi, selected, staleness, ...).
4. Under Flower churn (scenario/churn.py), before each round `Rejoins` (server/rejoin.py) lets the
   launcher stop and restart SuperNodes and waits until the SuperLink's nodes match the plan.

Events go to `emit` as dicts with a "type": "record" (with the record), "node-error", "started",
"round-start", "scenario" (a node's rejoin), "done" or "error".
"""

from __future__ import annotations

import resource
import sys
import time
from logging import WARNING

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid
from flwr.supercore import log

from fedgossip.base import flower_protocol as p
from fedgossip.config import ExperimentConfig
from fedgossip.scenario.churn import churn_plan
from fedgossip.schema.codecs import codec
from fedgossip.schema.events import Emit, record_event
from fedgossip.schema.tensors import specs_of
from fedgossip.server.arrays import array_view
from fedgossip.server.flower_privacy import central_epsilon
from fedgossip.server.flower_strategies import build_strategy
from fedgossip.server.handshake import discover_nodes
from fedgossip.server.recording import RecordingGrid, labels_view, server_record
from fedgossip.server.rejoin import Rejoins
from fedgossip.tasks.stream import wrap_notice


class ServerEvaluator:
    """The common initial model and the evaluation of global models on the global test set."""

    def __init__(self, config: ExperimentConfig) -> None:
        from fedgossip.tasks import build_learner

        self.learner = build_learner(config.task, 0, config.nodes.count, config.experiment.seed)
        self.names = list(self.learner.names)

    def initial_arrays(self) -> ArrayRecord:
        from flwr.app import Array

        return ArrayRecord({n: Array(w) for n, w in zip(self.names, self.learner.get_weights(), strict=True)})

    def layer_variance(self, arrays: ArrayRecord) -> dict[str, float]:
        """The variance of each float tensor of a global model (`strategies.diagnostics`)."""
        from fedgossip.strategies.diagnostics import layer_variance

        return layer_variance(self.names, [array_view(arrays[name]) for name in self.names])

    def evaluate(self, arrays: ArrayRecord, whole: bool = False) -> tuple[float, float]:
        """The global model's test loss and accuracy (on the whole test set if `whole`)."""
        self.learner.set_weights([array_view(arrays[name]) for name in self.names])
        loss, accuracy = self.learner.evaluate(whole)
        return float(loss), float(accuracy)


def run_federation(
    grid: Grid,
    config: ExperimentConfig,
    emit: Emit,
    run_start: float | None = None,
    strategy=None,
) -> ArrayRecord:
    """Run the configured federation on `grid`; return the final global model.

    `strategy` replaces the configured one (any Flower Strategy whose messages carry the model as
    one ArrayRecord). Failures are emitted as an "error" event and re-raised.
    """
    run_start = run_start or time.time()
    flower = config.flower
    try:
        labels = discover_nodes(grid, config.nodes.count, flower.startup_timeout)
        emit(
            {
                "type": "started",
                "labels": labels_view(labels),
                "handshake_s": round(time.time() - run_start, 3),
            }
        )
        evaluator = ServerEvaluator(config)
        initial = evaluator.initial_arrays()
        packer = codec(flower.codec, flower.codec_ratio)
        recorder = RecordingGrid(grid, labels, specs_of(initial), codec=packer)
        rejoins = Rejoins(
            grid, churn_plan(config), labels, config.nodes.count, emit, run_start, flower.startup_timeout
        )
        if strategy is None:
            strategy = build_strategy(
                config, labels, node_wait=flower.startup_timeout, local_names=evaluator.learner.local_names
            )
        node_fields = getattr(strategy, "node_fields", None)  # a strategy's own per-node metrics
        notice = wrap_notice(config.task.stream_chunks, config.experiment.rounds)
        if notice:
            log(WARNING, "%s", notice)

        def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            # the initial model (round 0) and experiment.evaluate_every's rounds are evaluated
            evaluated = server_round == 0 or config.experiment.evaluated(server_round)
            whole = config.experiment.whole_test_set(server_round)
            loss, accuracy = evaluator.evaluate(arrays, whole) if evaluated else (None, None)
            fallback = (loss, accuracy) if evaluated else None
            nodes = recorder.flush(server_round, run_start, fallback) if server_round else []
            fields = node_fields(server_round) if node_fields and server_round else {}
            for record in nodes:
                record.update(fields.get(record["node"], {}), **rejoins.take(record["node"]))
                record.update(config.privacy.record_fields(record.pop("epsilon", None)))
            for label, phase, reason in recorder.take_errors():
                emit(
                    {
                        "type": "node-error",
                        "node": label,
                        "round": server_round,
                        "phase": phase,
                        "error": reason,
                    }
                )
            for record in nodes:
                emit(record_event(record))
            record = server_record(
                server_round, run_start, loss, accuracy, evaluator.learner.test_examples(whole), nodes
            )
            record.update(recorder.take_consensus(), layer_variance=evaluator.layer_variance(arrays))
            record.update(config.privacy.record_fields(central_epsilon(config.privacy, server_round)))
            emit(record_event({**record, **recorder.take_phase_seconds()}))
            if server_round < config.experiment.rounds:
                rejoins.before_round(server_round + 1)
            return MetricRecord({p.TEST_LOSS: loss, p.TEST_ACCURACY: accuracy}) if evaluated else None

        result = strategy.start(
            grid=recorder,
            initial_arrays=initial,
            num_rounds=config.experiment.rounds,
            timeout=flower.round_timeout,
            train_config=ConfigRecord({"local-epochs": config.task.local_epochs}),
            evaluate_fn=evaluate_fn,
        )
    except Exception as err:
        emit({"type": "error", "error": f"{type(err).__name__}: {err}"})
        raise
    emit(
        {
            "type": "done",
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "wall_time_s": round(time.time() - run_start, 3),
        }
    )
    return result.arrays


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024
