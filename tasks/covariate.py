"""Covariate shift among nodes (task.partition = "covariate"): every example belongs to one of G
input distributions ("groups": a source's mixture components, or G input transformations drawn
per example: rotations by 90 * g degrees of images, a fixed random shift of the features of tabular
data); every node mixes the groups by its own Dirichlet(task.shift_alpha) weights and the classes
by its own Dirichlet(task.alpha) weights (label skew on top). A (group, class) cell is split among
the nodes in proportion to the product of the two. All of it is drawn from the experiment seed.

The global test set is the test examples with their own groups (the population's mixture)."""

from __future__ import annotations

import dataclasses
from numbers import Integral, Real

import numpy as np

from fedgossip.base.constraints import Interval
from fedgossip.base.seeding import stream

from .config import TaskConfig
from .data import Dataset, load_source, scaled_dataset, split_source
from .gmm_synthetic import between_components
from .source import Source

_MAX_DRAWS = 1000


def covariate_partition(
    labels: np.ndarray,
    groups: np.ndarray,
    num_groups: int,
    num_nodes: int,
    *,
    alpha: float,
    shift_alpha: float,
    seed: int,
    min_size: int = 10,
) -> list[np.ndarray]:
    """Every node's sorted rows: cell (g, c) split multinomially among the nodes in proportion to
    p_node(g) * q_node(c), p ~ Dirichlet(shift_alpha) over groups, q ~ Dirichlet(alpha) over
    classes; redrawn until every node holds min_size rows."""
    Interval(Integral, 1).check("num_nodes", num_nodes)
    Interval(Real, 0.0, closed="neither").check("task.alpha", alpha)
    Interval(Real, 0.0, closed="neither").check("task.shift_alpha", shift_alpha)
    if len(labels) < num_nodes * min_size:
        raise ValueError(
            f"covariate partition of {len(labels)} examples cannot give each of {num_nodes} nodes "
            f"min_size={min_size} examples"
        )
    rng = stream(seed, "partition")
    classes = np.unique(labels)
    cells = [
        (g, c, rng.permutation(np.flatnonzero((groups == g) & (labels == c))))
        for g in range(num_groups)
        for c in classes
    ]
    owner = np.empty(len(labels), dtype=np.int64)
    for _ in range(_MAX_DRAWS):
        mixes = rng.dirichlet(np.full(num_groups, shift_alpha), size=num_nodes)
        skews = rng.dirichlet(np.full(len(classes), alpha), size=num_nodes)
        for g, c, members in cells:
            weights = mixes[:, g] * skews[:, np.searchsorted(classes, c)] + 1e-12
            counts = rng.multinomial(len(members), weights / weights.sum())
            owner[members] = np.repeat(np.arange(num_nodes), counts)
        sizes = np.bincount(owner, minlength=num_nodes)
        if sizes.min() >= min_size:
            order = np.argsort(owner, kind="stable")
            return np.split(order, np.cumsum(sizes)[:-1])
    raise ValueError(
        f"no covariate partition (task.alpha={alpha}, task.shift_alpha={shift_alpha}) of "
        f"{len(labels)} examples gave each of {num_nodes} nodes at least {min_size} examples in "
        f"{_MAX_DRAWS} draws; use larger alphas or fewer nodes"
    )


def drawn_groups(count: int, num_groups: int, seed: int, key: int) -> np.ndarray:
    """Each of `count` examples' group, uniform, from the seed (a source without its own groups;
    `key` 0: the training set, 1: the test set)."""
    return stream(seed, "covariate", key).integers(num_groups, size=count)


def shifted(
    x: np.ndarray, groups: np.ndarray, input_shape: tuple[int, ...], num_groups: int, seed: int
) -> np.ndarray:
    """The features of `x` transformed by each row's group: images (C, H, W) rotated by 90 * g
    degrees; feature vectors moved by group g's shift (N(0, 1) per feature, drawn from the seed;
    group 0 unmoved)."""
    out = np.array(x, dtype=np.float32, copy=True)
    if len(input_shape) == 3:
        images = out.reshape(len(out), *input_shape)
        for g in range(1, num_groups):
            rows = groups == g
            images[rows] = np.rot90(images[rows], k=g, axes=(2, 3))
        return images.reshape(len(out), -1)
    moves = stream(seed, "covariate", 2).normal(size=(num_groups, out.shape[1])).astype(np.float32)
    moves[0] = 0.0
    return out + moves[groups]


def novel_inputs(
    task: TaskConfig, x: np.ndarray, input_shape: tuple[int, ...], seed: int, node: int
) -> np.ndarray:
    """Inputs of a member of the covariate family that none of the groups is (FedGMM's novel
    samples): gmm-synthetic: len(x) draws of a component between two of the mixture's; images: `x`
    reflected in the diagonal (a symmetry of the square that no rotation of the groups is: the
    digits keep their pixels, strokes and scale); feature vectors: `x` moved by a fresh group shift
    (N(0, 1) per feature, drawn for `node`)."""
    if task.dataset == "gmm-synthetic":
        return between_components(seed, task.shift_groups, len(x), x.shape[1])
    if len(input_shape) == 3:
        images = np.asarray(x).reshape(len(x), *input_shape)
        return np.swapaxes(images, 2, 3).reshape(len(x), -1)
    return x + stream(seed, "fedgmm", node).normal(size=x.shape[1])


def source_groups(source: Source, num_groups: int, seed: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """(training groups, test groups, whether the source drew them itself: no transform then)."""
    if source.groups is not None and source.groups_test is not None:
        return source.groups, source.groups_test, True
    if source.x_test is None:
        raise ValueError("the source has no test set: split it first (split_source)")
    return (
        drawn_groups(len(source.y), num_groups, seed, 0),
        drawn_groups(len(source.x_test), num_groups, seed, 1),
        False,
    )


def node_partition(
    task: TaskConfig, source: Source, groups: np.ndarray, num_nodes: int, seed: int
) -> list[np.ndarray]:
    """Every node's rows of the split `source` (`covariate_partition` among num_nodes +
    task.unseen_nodes nodes: the last ones are held out)."""
    return covariate_partition(
        source.y,
        groups,
        task.shift_groups,
        num_nodes + task.unseen_nodes,
        alpha=task.alpha,
        shift_alpha=task.shift_alpha,
        seed=seed,
    )


def covariate_dataset(task: TaskConfig, node: int, num_nodes: int, seed: int) -> Dataset:
    """Node `node`'s covariate-shifted training rows (`covariate_partition` among num_nodes +
    task.unseen_nodes nodes: the last ones are held out) and the global test set, each example
    transformed by its group (unless the source's groups are its own components)."""
    source = split_source(load_source(task, seed), task.test_fraction, seed)
    groups, groups_test, intrinsic = source_groups(source, task.shift_groups, seed)
    rows = node_partition(task, source, groups, num_nodes, seed)[node]
    data = scaled_dataset(source, lambda _: rows)
    if intrinsic:
        return data
    shape = data.input_shape
    return dataclasses.replace(
        data,
        x_train=shifted(data.x_train, groups[rows], shape, task.shift_groups, seed),
        x_test=shifted(data.x_test, groups_test, shape, task.shift_groups, seed),
    )
