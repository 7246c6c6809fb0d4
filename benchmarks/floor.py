"""The compute floor of a synchronous gossip run: the same work in one plain sequential loop.

One process, no transport: every node's learner built by `fedgossip.tasks.build_learner` (as a
peer builds it), and per round every node trains (its round plan's learner), then every node merges
its trained model with its neighbours' trained models, in sender order, by its round plan (the
project's registered rule, `client.gossip.rounds.RoundPlan`), and evaluates the model kept on the
rounds `experiment.evaluate_every` evaluates. What a peer does besides (gRPC, the records' layer
variance, the consensus observer, the scenario) is left out: a config with a scenario, an
asynchronous schedule or Flower mode is refused. The accuracies equal the real run's records
(same seed), which `bench_floor.py` checks.

    python benchmarks/floor.py CONFIG [--set KEY=VALUE ...] --json OUT

runs it in a fresh process (as `bench_floor.py` does, timing the process's whole life too) and
writes the accuracies and its own clock's figures (imports excluded) to OUT.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedgossip.client.gossip.rounds import round_plan
from fedgossip.client.gossip.transport.wire import ModelMessage
from fedgossip.config import ExperimentConfig, load_config
from fedgossip.scenario.topology import run_graph
from fedgossip.schema.tensors import is_finite
from fedgossip.tasks import build_learner
from fedgossip.tasks.registry import model_entry


@dataclass
class FloorRun:
    """Each node's test accuracy by round (None: not evaluated) and the loop's phases' seconds."""

    accuracy: dict[int, dict[int, float | None]]
    seconds: dict[str, float]

    def final_mean_accuracy(self) -> float:
        """The mean over the nodes of their last round's accuracy (the summary's final mean)."""
        return float(np.mean([rounds[max(rounds)] for rounds in self.accuracy.values()]))


def check_floor_config(config: ExperimentConfig) -> None:
    """ValueError unless `config` is a run the floor loop does: synchronous gossip, no scenario."""
    if config.experiment.mode != "gossip" or config.gossip.schedule != "sync":
        raise ValueError("the floor loop runs synchronous gossip only (experiment.mode, gossip.schedule)")
    if config.scenario != type(config.scenario)():
        raise ValueError("the floor loop runs no scenario ([scenario] must be empty)")


def preload(config: ExperimentConfig) -> None:
    """Import what the model's family needs (torch...), as the fork server does before the peers
    start: the floor's clock then counts no import."""
    for module in model_entry(config.task.model).family.preload:
        importlib.import_module(module)


def floor_run(config: ExperimentConfig, clock: Callable[[], float]) -> FloorRun:
    """Run `config`'s rounds in one sequential loop; `clock` times its phases (build, train,
    merge, evaluate)."""
    check_floor_config(config)
    count, seed, rounds = config.nodes.count, config.experiment.seed, config.experiment.rounds
    seconds = dict.fromkeys(("build", "train", "merge", "evaluate"), 0.0)
    started = clock()
    graph = run_graph(config)
    neighbours = {n: sorted(graph.neighbors(n)) for n in range(count)}
    learners = [build_learner(config.task, n, count, seed) for n in range(count)]
    plans = [round_plan(config, n, neighbours[n]) for n in range(count)]
    shared = [i for i, name in enumerate(learners[0].names) if name not in learners[0].local_names]
    current = [learner.get_weights() for learner in learners]
    accuracy: dict[int, dict[int, float | None]] = {n: {} for n in range(count)}
    seconds["build"] = clock() - started
    for round_ in range(1, rounds + 1):
        began = clock()
        trained = []
        for n in range(count):
            learners[n] = plans[n].learner(round_, learners[n])
            loss = learners[n].train()
            own = learners[n].get_weights()
            if not (math.isfinite(loss) and all(map(is_finite, own))):  # undone, as a peer does
                learners[n].assign(current[n])
                own = current[n]
            trained.append(own)
        seconds["train"] += clock() - began
        evaluated = config.experiment.evaluated(round_)
        whole = config.experiment.whole_test_set(round_)
        for n in range(count):
            began = clock()
            learner = learners[n]
            messages = [
                ModelMessage(s, round_, learners[s].num_examples, trained[s], 0) for s in neighbours[n]
            ]
            outcome = plans[n].merge(round_, current[n], trained[n], learner.num_examples, messages, shared)
            merged = trained[n]
            if outcome.model is not None and outcome.error is None:
                merged = list(trained[n])
                for i, array in zip(shared, outcome.model, strict=True):
                    merged[i] = array
            learner.assign(merged)
            mid = clock()
            seconds["merge"] += mid - began
            accuracy[n][round_] = None
            if evaluated:
                loss, acc = learner.evaluate(whole)
                if merged is not trained[n] and not math.isfinite(loss):  # the peer's guard
                    merged = trained[n]
                    learner.assign(merged)
                    loss, acc = learner.evaluate(whole)
                accuracy[n][round_] = acc
            seconds["evaluate"] += clock() - mid
            current[n] = merged
    return FloorRun(accuracy, seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the compute floor of a synchronous gossip run")
    parser.add_argument("config", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", type=Path, required=True, help="write the figures here")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        check_floor_config(config)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    preload(config)
    cpu_started, started = time.process_time(), time.monotonic()
    run = floor_run(config, time.monotonic)
    figures = {
        "wall_s": time.monotonic() - started,
        "cpu_s": time.process_time() - cpu_started,
        "seconds": run.seconds,
        "accuracy": {str(n): {str(r): a for r, a in rounds.items()} for n, rounds in run.accuracy.items()},
    }
    args.json.write_text(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
