"""Assemble one node: its slice of the data (partitioned, made unequal) and its learner."""

from __future__ import annotations

import dataclasses

import numpy as np

from .config import TaskConfig
from .data import Dataset, load_dataset, scaled_dataset
from .heterogeneity import node_level, with_feature_noise, with_label_noise
from .learner import Learner
from .partitions import partition_indices
from .seeding import stream
from .validation import check_int


def node_rows(task: TaskConfig, labels: np.ndarray, num_nodes: int, seed: int) -> list[np.ndarray] | None:
    """Every node's rows of the training set by task.partition (seeded); None for "none", where
    every node holds the whole training set (a device bringing its own data)."""
    if task.partition == "none":
        return None
    return partition_indices(
        labels,
        num_nodes,
        scheme=task.partition,
        alpha=task.alpha,
        shards_per_node=task.shards_per_node,
        seed=seed,
    )


def node_dataset(task: TaskConfig, node: int, num_nodes: int, seed: int) -> Dataset:
    """Node `node`'s training partition (with its label/feature noise) and the global test set;
    with task.dataset = "prepared", its shard as the launcher wrote it."""
    if not isinstance(task, TaskConfig):
        raise TypeError(f"task must be a TaskConfig; got {type(task).__name__}")
    check_int("num_nodes", num_nodes, low=1)
    check_int("node", node, low=0, high=num_nodes - 1)
    check_int("seed", seed, low=0)
    if task.dataset == "prepared":
        from .files import read_shard

        data = scaled_dataset(read_shard(task.path, node, num_nodes))
    else:

        def mine(labels: np.ndarray) -> np.ndarray:
            parts = node_rows(task, labels, num_nodes, seed)
            return np.arange(len(labels)) if parts is None else parts[node]

        data = load_dataset(task, seed, mine)
    label_noise = node_level("task.label_noise", task.label_noise, node, num_nodes)
    feature_noise = node_level("task.feature_noise", task.feature_noise, node, num_nodes)
    return dataclasses.replace(
        data,
        x_train=with_feature_noise(data.x_train, feature_noise, stream(seed, "feature_noise", node)),
        y_train=with_label_noise(
            data.y_train, label_noise, data.num_classes, stream(seed, "label_noise", node)
        ),
    )


def build_learner(task: TaskConfig, node: int, num_nodes: int, seed: int) -> Learner:
    """Node `node`'s learner: same arguments, same data, initial weights and training.

    The split and partition depend on seed only; initial weights on (seed, node) for init="own"
    and on seed for "shared"; minibatch order on (seed, node). torch or sklearn is imported here,
    only the one the model needs.
    """
    data = node_dataset(task, node, num_nodes, seed)
    init_rng = stream(seed, "init", node) if task.init == "own" else stream(seed, "init")
    shuffle_rng = stream(seed, "shuffle", node)
    if task.model == "linear":
        from .linear import LinearLearner

        return LinearLearner(task, data, node=node, init_rng=init_rng, shuffle_rng=shuffle_rng)
    from .torch_learner import TorchLearner

    return TorchLearner(task, data, node=node, init_rng=init_rng, shuffle_rng=shuffle_rng)
