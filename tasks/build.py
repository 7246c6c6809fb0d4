"""Assemble one node: its slice of the data (partitioned, made unequal) and its learner."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from numbers import Integral

import numpy as np

from fedgossip.base.constraints import Interval
from fedgossip.base.loading import load_callable
from fedgossip.base.seeding import stream

from .config import TaskConfig
from .data import Dataset, load_dataset, scaled_dataset
from .datasets import DATASETS
from .dp_accounting import DpSgdSpec
from .eval_subset import balanced_rows
from .heterogeneity import node_level, with_feature_noise, with_label_noise
from .learner import Learner
from .local_eval import local_split
from .partitions import COVARIATE, DIRICHLET_SAMPLING, partition_indices, sampling_weights
from .registry import model_entry
from .stream import check_chunks, chunk_of, evaluation_chunk, node_chunk


def node_rows(task: TaskConfig, labels: np.ndarray, num_nodes: int, seed: int) -> list[np.ndarray] | None:
    """Every node's rows of the training set by task.partition (seeded); None for "none" and
    "dirichlet-sampling", where every node holds the whole training set (a device bringing its
    own data; batches sampled by the node's label probabilities)."""
    if task.partition in ("none", DIRICHLET_SAMPLING):
        return None
    return partition_indices(
        labels,
        num_nodes,
        scheme=task.partition,
        alpha=task.alpha,
        shards_per_node=task.shards_per_node,
        seed=seed,
    )


def node_dataset(
    task: TaskConfig, node: int, num_nodes: int, seed: int, stream_round: int | None = None
) -> Dataset:
    """Node `node`'s training partition (with its label/feature noise) and the global test set;
    with task.dataset = "prepared", its shard as the launcher wrote it. With task.stream_chunks
    and a `stream_round` t, the node's chunk of round t as training set and round t's
    evaluation set (every node's clean next chunk) as test set (see `stream`). Without a stream,
    rounds before the last evaluate on task.eval_examples' class-balanced subset of the test set
    (`evaluation_subset`) if it is set."""
    if not isinstance(task, TaskConfig):
        raise TypeError(f"task must be a TaskConfig; got {type(task).__name__}")
    Interval(Integral, 1).check("num_nodes", num_nodes)
    Interval(Integral, 0, num_nodes - 1).check("node", node)
    Interval(Integral, 0).check("seed", seed)
    if task.stream_chunks and stream_round is not None:
        return _stream_dataset(
            task, node, num_nodes, seed, Interval(Integral, 1).check("stream_round", stream_round)
        )
    if not DATASETS[task.dataset].source:  # read per node: the launcher's shards
        data = prepared_dataset(task.path, node, num_nodes)
    elif task.partition == COVARIATE:
        from .covariate import covariate_dataset

        data = covariate_dataset(task, node, num_nodes, seed)
    else:

        def mine(labels: np.ndarray) -> np.ndarray:
            parts = node_rows(task, labels, num_nodes, seed)
            return np.arange(len(labels)) if parts is None else parts[node]

        data = load_dataset(task, seed, mine)
    if task.partition == DIRICHLET_SAMPLING:  # on the clean labels: what the node's data holds
        weights = sampling_weights(data.y_train, data.num_classes, num_nodes, node, task.alpha, seed)
        data = dataclasses.replace(data, train_weights=weights)
    data = local_split(evaluation_subset(task, data, seed), task.eval, node, seed, task.test_fraction)
    return _with_noise(task, data, node, num_nodes, seed)


_SHARED: dict[tuple[str, int], Dataset] = {}  # the last shared training file read, scaled


def prepared_dataset(folder: str, node: int, num_nodes: int) -> Dataset:
    """Node `node`'s shard of a shard folder, scaled. When every node's shard is the one training
    file (partition none, dirichlet-sampling), the nodes of one process share one scaled copy
    (50 simulated peers on the full MNIST: 188 MB, not 9.4 GB); nothing writes into it (noise
    and attacks make copies)."""
    from .files import read_shard, shared_training_file

    shared = shared_training_file(folder, num_nodes)
    if shared is None:
        return scaled_dataset(read_shard(folder, node, num_nodes))
    key = (str(shared), shared.stat().st_mtime_ns)
    if key not in _SHARED:
        _SHARED.clear()
        _SHARED[key] = scaled_dataset(read_shard(folder, node, num_nodes))
    return _SHARED[key]


def evaluation_subset(task: TaskConfig, data: Dataset, seed: int) -> Dataset:
    """`data` evaluating on task.eval_examples class-balanced test examples (`eval_subset`; the
    same for every node) in rounds before the last, or on its whole test set when it is 0. The
    whole test set stays (shared, not copied): the final round evaluates on it."""
    if not task.eval_examples:
        return data
    rows = balanced_rows(data.y_test, data.num_classes, task.eval_examples, seed)
    return dataclasses.replace(data, eval_rows=rows)


def _with_noise(task: TaskConfig, data: Dataset, node: int, num_nodes: int, seed: int) -> Dataset:
    """`data` with node `node`'s label and feature noise on its training set."""
    label_noise = node_level("task.label_noise", task.label_noise, node, num_nodes)
    feature_noise = node_level("task.feature_noise", task.feature_noise, node, num_nodes)
    return dataclasses.replace(
        data,
        x_train=with_feature_noise(data.x_train, feature_noise, stream(seed, "feature_noise", node)),
        y_train=with_label_noise(
            data.y_train, label_noise, data.num_classes, stream(seed, "label_noise", node)
        ),
    )


def _stream_dataset(task: TaskConfig, node: int, num_nodes: int, seed: int, round_: int) -> Dataset:
    """Round `round_` of node `node`'s stream: the noise is drawn on its whole partition (as
    without a stream), then its chunk is taken; the test set is the clean evaluation chunk union
    (with task.dataset = "prepared", the launcher's evaluation chunk file: `files.write_shards`)."""
    chunk, evaluated = chunk_of(round_, task.stream_chunks)
    if not DATASETS[task.dataset].source:
        from .files import read_shard

        data = scaled_dataset(read_shard(task.path, node, num_nodes, (evaluated, task.stream_chunks)))
    else:
        sizes: list[int] = []

        def rows(labels: np.ndarray) -> np.ndarray:
            parts = node_rows(task, labels, num_nodes, seed) or [np.arange(len(labels))] * num_nodes
            check_chunks(parts, task.stream_chunks)
            sizes.append(len(parts[node]))
            return np.concatenate([parts[node], evaluation_chunk(parts, task.stream_chunks, evaluated, seed)])

        whole = load_dataset(task, seed, rows)
        size = sizes[0]
        data = dataclasses.replace(
            whole,
            x_train=whole.x_train[:size],
            y_train=whole.y_train[:size],
            x_test=whole.x_train[size:],
            y_test=whole.y_train[size:],
        )
    own = _with_noise(task, data, node, num_nodes, seed)
    mine = node_chunk(np.arange(len(own.y_train)), task.stream_chunks, chunk, seed, node)
    return dataclasses.replace(own, x_train=own.x_train[mine], y_train=own.y_train[mine])


def build_learner(
    task: TaskConfig,
    node: int,
    num_nodes: int,
    seed: int,
    stream_round: int | None = None,
    poison: Callable[[Dataset], Dataset] | None = None,
    dp_sgd: DpSgdSpec | None = None,
) -> Learner:
    """Node `node`'s learner: same arguments, same data, initial weights and training.

    The split and partition depend on seed only; initial weights on (seed, node) for init="own"
    and on seed for "shared"; minibatch order on (seed, node). The learner of the model's family
    is imported here (torch or sklearn, only the one the model needs). `stream_round`: the round
    of a streamed task (`node_dataset`).
    `poison`: what a data attacker does to its dataset before the learner sees it (a scenario).
    `dp_sgd`: train with node-level DP-SGD (a torch learner; `[privacy]` builds it).
    """
    data = node_dataset(task, node, num_nodes, seed, stream_round)
    if poison is not None:
        data = poison(data)
    init_rng = stream(seed, "init", node) if task.init == "own" else stream(seed, "init")
    shuffle_rng = stream(seed, "shuffle", node)
    learner = load_callable(model_entry(task.model).family.learner)
    private = {} if dp_sgd is None else {"dp_sgd": dp_sgd}
    return learner(task, data, node=node, init_rng=init_rng, shuffle_rng=shuffle_rng, **private)


def stream_learner(
    task: TaskConfig, node: int, num_nodes: int, seed: int, round_: int, previous: Learner
) -> Learner:
    """Node `node`'s learner on round `round_` of a streamed task (its chunk, the round's
    evaluation set), carrying over the weights, minibatch-order state and kept momentum buffers
    of `previous`: a gossip peer's data changes every round, its model and optimiser go on."""
    learner = build_learner(task, node, num_nodes, seed, round_)
    learner.set_weights(previous.get_weights())
    learner.shuffle_state = previous.shuffle_state
    learner.momentum_state = previous.momentum_state
    return learner
