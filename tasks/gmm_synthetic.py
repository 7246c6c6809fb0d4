"""The FedGMM/FedEM authors' synthetic mixture data (`data/gmsynthetic/generate_artificial_data.py`
of zshuai8/FedGMM_ICML2023): M Gaussian input components, each with its own linear labelling rule,
so a node's p(x, y) is a mixture of M joint distributions (covariate shift when nodes mix the
components differently: the "covariate" partition draws each node's mixture weights).

As the authors: component means U(-1, 1)^d, covariance I / sqrt(d), labelling direction
theta_m = +-(mu_k - mu_m) towards a random other component k, y = round(sigmoid((x - mu_m) .
theta_m)) (2 classes). Their `noise_level` argument is not used by their generator; neither here.
Unlike theirs (one draw per client), one seeded pool is drawn (components balanced) and split by
the partition; the test set is drawn the same way (its own components), task.test_fraction of it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from fedgossip.base.seeding import stream

from .config import TaskConfig
from .source import Source

_BOX = (-1.0, 1.0)


def components(seed: int, count: int, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(means (M, d), covariance (d, d) shared by all, labelling directions theta (M, d))."""
    rng = stream(seed, "gmm_synthetic", 0)
    means = rng.uniform(*_BOX, size=(count, dim))
    covariance = np.eye(dim) / np.sqrt(dim)
    theta = np.empty((count, dim))
    for m in range(count):
        others = np.delete(means, m, axis=0) if count > 1 else means
        sign = 2 * rng.binomial(1, 0.5) - 1
        theta[m] = sign * (others[rng.integers(len(others))] - means[m])
    return means, covariance, theta


def draw(seed: int, key: int, size: int, count: int, dim: int) -> tuple[np.ndarray, ...]:
    """`size` examples with balanced components in a seeded order: (x, y, component); `key` 1:
    the training pool, 2: the test set."""
    means, covariance, theta = components(seed, count, dim)
    rng = stream(seed, "gmm_synthetic", key)
    component = rng.permutation(np.arange(size) % count)
    x = means[component] + rng.multivariate_normal(np.zeros(dim), covariance, size=size)
    y = np.round(1 / (1 + np.exp(-np.einsum("nd,nd->n", x - means[component], theta[component]))))
    return x, y.astype(np.int64), component


def between_components(seed: int, count: int, size: int, dim: int) -> np.ndarray:
    """`size` inputs of a component whose mean is the midpoint of two of the mixture's `count`
    means (a seeded pair; covariance I / sqrt(d) as theirs): novel samples that lie inside the
    training inputs' hull, so one Gaussian fitted over all the components cannot flag them while
    a mixture of the components can (FedGMM's novelty AUROC)."""
    means, covariance, _ = components(seed, count, dim)
    rng = stream(seed, "gmm_synthetic", 3)
    pair = rng.choice(count, size=2, replace=False) if count > 1 else np.zeros(2, dtype=np.int64)
    return means[pair].mean(axis=0) + rng.multivariate_normal(np.zeros(dim), covariance, size=size)


@lru_cache(maxsize=4)
def _pool(seed: int, samples: int, features: int, count: int, test_fraction: float) -> Source:
    x, y, groups = draw(seed, 1, samples, count, features)
    x_test, y_test, groups_test = draw(seed, 2, max(1, round(samples * test_fraction)), count, features)
    for array in (x, y, groups, x_test, y_test, groups_test):
        array.flags.writeable = False
    return Source(x, y, 2, (features,), 1.0, x_test, y_test, groups, groups_test)


def gmm_synthetic_source(task: TaskConfig, seed: int) -> Source:
    """task.synthetic_samples training examples of task.synthetic_features dimensions drawn from
    task.shift_groups components (2 classes), and their own test set."""
    return _pool(seed, task.synthetic_samples, task.synthetic_features, task.shift_groups, task.test_fraction)
