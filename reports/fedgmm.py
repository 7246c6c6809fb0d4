"""FedGMM's new nodes, measured after a Flower run (task.model = "fedgmm", task.unseen_nodes > 0):
each held-out node of the covariate partition takes the final global model (flower/final-model.npz)
with uniform mixing weights, is scored on its own test split, adapts by the E-step alone on its
training data (`FedGMMLearner.adapt`: components and learners fixed) and is scored again; its
input likelihood then scores its own test inputs against novel ones (`covariate.novel_inputs`: a
member of the covariate family that no group is, e.g. a fresh component of the synthetic mixture;
AUROC, 1 = every novel one scored more novel)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from fedgossip.config import ExperimentConfig
from fedgossip.tasks import build_learner
from fedgossip.tasks.covariate import novel_inputs
from fedgossip.tasks.fedgmm_em import auroc

FINAL_MODEL = Path("flower") / "final-model.npz"
ADAPT_ITERATIONS = 10


def unseen_summary(run_dir: str | Path, config: ExperimentConfig | None) -> dict[str, Any]:
    """{"fedgmm_unseen": figures} for a Flower run of fedgmm with unseen nodes and a per-node test
    split (task.eval local or both); {} otherwise (nothing to measure)."""
    final = Path(run_dir) / FINAL_MODEL
    if config is None or config.task.model != "fedgmm" or not config.task.unseen_nodes or not final.exists():
        return {}
    if config.task.eval == "global":
        return {}
    with np.load(final) as saved:
        model = dict(saved)
    task, seed, count = config.task, config.experiment.seed, config.nodes.count
    total = count + task.unseen_nodes
    held = dataclasses.replace(task, unseen_nodes=0)  # the same partition, every node in it
    before, after, novelty = [], [], []
    for node in range(count, total):
        learner = build_learner(held, node, total, seed)
        learner.set_weights([model[name] for name in learner.names])
        learner.mixing = np.full_like(learner.mixing, 1.0 / learner.mixing.size)
        data = learner.data
        x, y = (data.x_local, data.y_local) if data.y_local is not None else (data.x_test, data.y_test)
        before.append(float(np.mean(learner.predict(x) == y)))
        learner.adapt(data.x_train.astype(np.float64), data.y_train, ADAPT_ITERATIONS)
        after.append(float(np.mean(learner.predict(x) == y)))
        novel = novel_inputs(task, x, data.input_shape, seed, node)
        novelty.append(auroc(learner.novelty(x), learner.novelty(novel)))
    return {
        "fedgmm_unseen": {
            "nodes": task.unseen_nodes,
            "accuracy_before": float(np.mean(before)),
            "accuracy_after_e_step": float(np.mean(after)),
            "novelty_auroc": float(np.mean(novelty)),
            "by_node": {str(count + i): [before[i], after[i], novelty[i]] for i in range(len(before))},
        }
    }
