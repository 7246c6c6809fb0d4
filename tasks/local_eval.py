"""Per-node evaluation (task.eval = "local" | "both"): each node holds out part of its own data as
its local test split, drawn from its own distribution (its partition: label skew, covariate shift).

"local": the node's test set IS its local split (test_loss and test_accuracy are local; the
global test set is not scored by nodes). "both": the global test set stays the test set and the
local split rides beside it (`Dataset.x_local`), scored into the record's `local_accuracy`."""

from __future__ import annotations

import dataclasses

import numpy as np

from fedgossip.base.seeding import stream

from .data import Dataset


def held_out(count: int, fraction: float) -> int:
    """How many of a node's `count` (>= 2) training examples its local test split takes:
    round(fraction * count), at least one, leaving at least one."""
    return max(1, min(count - 1, round(fraction * count)))


def local_split(data: Dataset, how: str, node: int, seed: int, fraction: float) -> Dataset:
    """`data` with round(fraction * n) (at least one) of its training examples, drawn from the
    (seed, node) stream, moved to its local test split; ValueError naming task.eval when the node
    has too few examples to keep one for training and one for testing."""
    if how == "global":
        return data
    count = len(data.y_train)
    if count < 2:
        raise ValueError(
            f"task.eval = {how!r}: node {node} holds {count} training example(s); it needs 2 to keep "
            "one for its local test split"
        )
    order = stream(seed, "local_eval", node).permutation(count)
    held = np.sort(order[: held_out(count, fraction)])
    kept = np.setdiff1d(np.arange(count), held)
    weights = data.train_weights
    trained = dataclasses.replace(
        data,
        x_train=data.x_train[kept],
        y_train=data.y_train[kept],
        train_weights=None if weights is None else weights[kept] / weights[kept].sum(),
    )
    if how == "local":
        return dataclasses.replace(
            trained, x_test=data.x_train[held], y_test=data.y_train[held], eval_rows=None
        )
    return dataclasses.replace(trained, x_local=data.x_train[held], y_local=data.y_train[held])
