"""Ways to make nodes unequal (as in the fair-incentive paper): noisy labels and noisy features
on a node's own training data."""

from __future__ import annotations

import numpy as np


def node_level(name: str, value: float | tuple[float, ...], node: int, num_nodes: int) -> float:
    """One node's noise level: the ramp (node / num_nodes) * value, or the node's tuple entry."""
    if isinstance(value, tuple):
        if len(value) != num_nodes:
            raise ValueError(f"{name} has {len(value)} values (one per node) but there are {num_nodes} nodes")
        return value[node]
    return node / num_nodes * value


def with_label_noise(
    labels: np.ndarray, fraction: float, num_classes: int, rng: np.random.Generator
) -> np.ndarray:
    """Copy of labels whose round(fraction * n) randomly chosen entries get uniformly random labels
    (a random label may equal the true one, so about fraction * (1 - 1/num_classes) change)."""
    noisy = labels.copy()
    chosen = rng.choice(len(labels), size=round(fraction * len(labels)), replace=False)
    noisy[chosen] = rng.integers(num_classes, size=len(chosen))
    return noisy


def with_feature_noise(features: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Features plus Gaussian noise of standard deviation std (same dtype; std 0: features as given)."""
    if std == 0:
        return features
    return (features + rng.normal(scale=std, size=features.shape)).astype(features.dtype)
