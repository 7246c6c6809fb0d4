"""Means and variances of several flat series, accumulated block by block.

For a block of ``n`` values with sum ``S1`` and sum of squares ``S2``, the sum of
squared deviations from the block mean is

    M2 = sum_i (x_i - S1 / n)^2 = S2 - S1^2 / n.

The right-hand side needs only the two sums (one BLAS pass each) but cancels when the
mean is large against the spread; its absolute rounding error is a few ``eps * S2``.
So it is trusted only when ``M2 >= S2 * CANCELLATION_LIMIT`` (relative error then below
about ``1e-12``); otherwise that block is recomputed two-pass, ``sum (x - mean)^2``.
Blocks are combined with the parallel formula of Chan, Golub and LeVeque (1979):

    n = n_a + n_b,    delta = mean_b - mean_a,
    mean = mean_a + delta * n_b / n,
    M2 = M2_a + M2_b + delta^2 * n_a * n_b / n.
"""

from collections.abc import Sequence

import numpy as np

from ._typing import FloatArray, NDArray

CANCELLATION_LIMIT = 2.0**-10
"""Smallest trusted ratio M2 / S2 of the one-pass formula (else two-pass)."""


def block_m2(vectors: Sequence[NDArray], sums: FloatArray) -> FloatArray:
    """Sum of squared deviations from the mean of each vector (see module docstring).

    Parameters
    ----------
    vectors : Sequence[NDArray]
        Vectors of equal length ``n`` in the accumulation dtype.
    sums : FloatArray
        Their sums.

    Returns
    -------
    FloatArray
        ``M2[i] = sum_j (vectors[i][j] - sums[i] / n)^2``.
    """
    n = vectors[0].size
    squares = np.array([np.dot(vector, vector) for vector in vectors])
    m2 = squares - sums * (sums / n)
    # `not >=` also catches NaN (inf - inf when squares overflow)
    for i in np.flatnonzero(~(m2 >= squares * CANCELLATION_LIMIT)):
        deviations = vectors[i] - sums[i] / n
        m2[i] = np.dot(deviations, deviations)
    return m2


class RunningMoments:
    """Count, means and M2 of several series of equal length, updated block by block.

    Parameters
    ----------
    series : int
        Number of series.
    """

    def __init__(self, series: int) -> None:
        self.count = 0
        self.mean = np.zeros(series)
        self.m2 = np.zeros(series)

    def update(self, count: int, mean: FloatArray, m2: FloatArray) -> None:
        """Add a block of ``count`` values per series, with block ``mean`` and ``m2``."""
        total = self.count + count
        delta = mean - self.mean
        self.m2 += m2 + delta * delta * (self.count * count / total)
        self.mean += delta * (count / total)
        self.count = total

    @property
    def variance(self) -> FloatArray:
        """Population variance (``ddof=0``) of each series."""
        return self.m2 / self.count
