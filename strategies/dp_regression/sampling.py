"""Batched random matrices for the DP regression samplers: Wishart by Bartlett's decomposition
(several scales at once, any real degrees of freedom > d - 1), inverse Wishart, and Gaussian
vectors; plus the nearest positive semi-definite matrix. MATLAB's wishrnd/iwishrnd/mvnrnd
parametrisations (W ~ Wishart(scale, df) has mean df * scale)."""

from __future__ import annotations

import numpy as np


def wishart(scale: np.ndarray, df: np.ndarray | float, rng: np.random.Generator) -> np.ndarray:
    """One Wishart(scale[k], df[k]) draw per matrix of the (J, d, d) batch `scale`."""
    j, d, _ = scale.shape
    df = np.broadcast_to(np.asarray(df, dtype=np.float64), (j,))
    lower = np.linalg.cholesky(scale)
    bartlett = np.tril(rng.standard_normal((j, d, d)), -1)
    idx = np.arange(d)
    bartlett[:, idx, idx] = np.sqrt(rng.chisquare(df[:, None] - idx[None, :]))
    la = lower @ bartlett
    return la @ np.swapaxes(la, 1, 2)


def inverse_wishart(scale: np.ndarray, df: float, rng: np.random.Generator) -> np.ndarray:
    """One inverse-Wishart(scale, df) draw (mean scale / (df - d - 1)): the inverse of a
    Wishart(scale^-1, df) draw."""
    return np.linalg.inv(wishart(np.linalg.inv(scale)[None], df, rng)[0])


def gaussian(mean: np.ndarray, cov: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One N(mean, cov) vector."""
    return mean + np.linalg.cholesky(cov) @ rng.standard_normal(len(mean))


def closest_psd(matrix: np.ndarray) -> np.ndarray:
    """The positive semi-definite matrix nearest to the symmetric `matrix` in Frobenius norm
    (its negative eigenvalues set to 0), as the authors' closest_psd.m."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    kept = values > 0
    return (vectors[:, kept] * values[kept]) @ vectors[:, kept].T
