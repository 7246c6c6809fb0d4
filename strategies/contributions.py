"""Cosine-gradient Shapley contributions of nodes to one round's aggregate update, and their
running mean (Lin et al., "Fair yet Asymptotically Equal Collaborative Learning", ICML 2023).

Node i's update is g_i = theta_i - theta with weight w_i (its relative data size); the round's
aggregate is g_N = sum_i w_i g_i. The utility of a coalition S is

    U(S) = cos(g_N, sum_{j in S} w_j g_j),    U(empty) = 0,

and node i's contribution is its Shapley value under U. (The authors' code weights the coalition
vectors twice, sum w_j^2 g_j, because its stored vectors already hold w_j; here w_j is applied
once, as the formula says; with equal sizes the two agree.)

Paper: arxiv.org/abs/2306.05764
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from ._typing import FloatArray, NDArrays
from ._validation import check_models, check_weights

Utility = Callable[[np.ndarray], FloatArray]
"""A coalition utility: boolean masks of shape (M, N), one coalition per row -> M utilities."""

METHODS = ("montecarlo", "exact")
MAX_EXACT_NODES = 16
"""Exact Shapley values enumerate 2^N coalitions: at most this many nodes."""


class CosineUtility:
    """U(S) = cos(g_N, sum_{j in S} w_j g_j) for every coalition S of a round's updates.

    Only the Gram matrix of the weighted updates and their dot products with g_N are kept, built
    tensor by tensor in float64, so one utility costs O(N^2) whatever the model size.
    """

    def __init__(self, updates: Sequence[NDArrays], weights: Sequence[float]) -> None:
        models = check_models(updates, "updates")
        w = check_weights(weights, len(models))  # normalised: the cosine ignores the scale
        n = len(models)
        self.size = n
        self.gram = np.zeros((n, n))
        for index in range(len(models[0])):
            rows = np.stack([np.asarray(m[index], dtype=np.float64).ravel() for m in models])
            rows *= w[:, None]
            self.gram += rows @ rows.T
        self.dots = self.gram.sum(axis=1)  # <w_i g_i, g_N>
        self.total_norm = math.sqrt(max(float(self.dots.sum()), 0.0))  # ||g_N||

    def __call__(self, masks: np.ndarray) -> FloatArray:
        """The utilities of the coalitions given as boolean rows (an empty or zero sum gives 0)."""
        x = np.asarray(masks, dtype=np.float64)
        numerator = x @ self.dots
        norms = np.sqrt(np.maximum(np.einsum("mi,ij,mj->m", x, self.gram, x), 0.0))
        out = np.zeros(len(x))
        ok = norms * self.total_norm > 0
        out[ok] = numerator[ok] / (norms[ok] * self.total_norm)
        return np.clip(out, -1.0, 1.0)


def _all_masks(n: int) -> np.ndarray:
    """Every subset of n nodes as a boolean row; row b is the subset whose bits are set in b."""
    return ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(bool)


def exact_shapley(utility: Utility, n: int) -> FloatArray:
    """Shapley values by enumeration of all 2^n coalitions:
    phi_i = sum_{S not containing i} |S|! (n - |S| - 1)! / n! * (U(S + i) - U(S))."""
    if not 1 <= n <= MAX_EXACT_NODES:
        raise ValueError(f"exact Shapley values need 1 <= nodes <= {MAX_EXACT_NODES}; got {n}")
    masks = _all_masks(n)
    values = utility(masks)
    sizes = masks.sum(axis=1)
    factor = np.array([math.factorial(s) * math.factorial(n - s - 1) for s in range(n)]) / math.factorial(n)
    ids = np.arange(2**n)
    phi = np.empty(n)
    for i in range(n):
        without = ids[~masks[:, i]]
        phi[i] = np.sum(factor[sizes[without]] * (values[without | (1 << i)] - values[without]))
    return phi


def monte_carlo_shapley(utility: Utility, n: int, rng: np.random.Generator) -> FloatArray:
    """Stratified Monte Carlo Shapley values, one coalition per size: for each node i and each
    size s = 0..n-1, one uniformly random S of s other nodes; phi_i = mean_s (U(S + i) - U(S)).
    Unbiased (the Shapley value is the mean over sizes of the expected marginal at that size);
    2 n^2 utilities."""
    if n < 1:
        raise ValueError(f"Shapley values need at least one node; got {n}")
    others = np.array([[j for j in range(n) if j != i] for i in range(n)], dtype=np.int64).reshape(n, n - 1)
    ranks = rng.random((n, n, n - 1)).argsort(axis=-1).argsort(axis=-1)  # a random order per (i, s)
    without = np.zeros((n, n, n), dtype=bool)
    chosen = ranks < np.arange(n)[None, :, None]  # the first s others in that order
    rows, sizes, positions = np.nonzero(chosen)
    without[rows, sizes, others[rows, positions]] = True
    with_i = without.copy()
    with_i[np.arange(n), :, np.arange(n)] = True
    gains = utility(with_i.reshape(n * n, n)) - utility(without.reshape(n * n, n))
    return gains.reshape(n, n).mean(axis=1)


def cosine_shapley(
    updates: Sequence[NDArrays],
    weights: Sequence[float],
    *,
    method: str = "montecarlo",
    rng: np.random.Generator | None = None,
) -> FloatArray:
    """Each node's contribution to the round: its Shapley value under the cosine utility
    (:class:`CosineUtility`), by stratified Monte Carlo (``rng`` required) or exact enumeration.
    The exact values sum to U(all) = 1 (0 when the aggregate update is zero)."""
    utility = CosineUtility(updates, weights)
    if method == "exact":
        return exact_shapley(utility, utility.size)
    if method != "montecarlo":
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if rng is None:
        raise ValueError("the Monte Carlo estimate needs a random generator (rng)")
    return monte_carlo_shapley(utility, utility.size, rng)


def running_mean(psi: FloatArray | None, phi: FloatArray, rounds: int) -> FloatArray:
    """psi after one more round: psi_t = t/(t+1) psi_{t-1} + phi_t/(t+1), ``rounds`` = t being the
    number of rounds already in psi (0: psi is phi). Never normalised."""
    phi = np.asarray(phi, dtype=np.float64)
    if psi is None or rounds == 0:
        return phi.copy()
    return np.asarray(psi, dtype=np.float64) * (rounds / (rounds + 1)) + phi / (rounds + 1)
