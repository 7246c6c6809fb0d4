"""Which nodes get the freshest global model in the exploit phase of the fair-incentive mechanism:
``softmax(beta * psi)`` with a floor, k = floor(r N) nodes drawn without replacement."""

from __future__ import annotations

import math

import numpy as np

from ._typing import FloatArray


def selection_probabilities(psi: np.ndarray, beta: float, floor: float) -> FloatArray:
    """p = softmax(beta * psi) (max-subtracted), then p_i <- (p_i + floor) / (1 + N floor), so every
    node keeps a probability of at least floor / (1 + N floor); uniform if anything is NaN. (The
    authors' floor is 1e-30: a node far below the others is then practically never drawn.)"""
    psi = np.asarray(psi, dtype=np.float64)
    n = len(psi)
    if n == 0:
        raise ValueError("selection needs at least one node")
    logits = beta * psi
    if not np.isfinite(logits).all():
        return np.full(n, 1.0 / n)
    p = np.exp(logits - logits.max())
    p = p / p.sum()
    p = (p + floor) / (1.0 + n * floor)
    return p / p.sum()


def selection_size(ratio: float, num_nodes: int) -> int:
    """k = floor(ratio * num_nodes), which must be at least 1."""
    k = math.floor(ratio * num_nodes + 1e-9)
    if not 1 <= k <= num_nodes:
        raise ValueError(f"ratio {ratio} of {num_nodes} nodes selects {k} nodes; it must select 1..N")
    return k


def select_nodes(probabilities: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k distinct node indices (sorted), drawn one after another with ``probabilities``
    renormalised over the nodes not yet drawn (numpy's ``choice(replace=False)``)."""
    return np.sort(rng.choice(len(probabilities), size=k, replace=False, p=probabilities))
