"""FedGMM's math (Wu et al., ICML 2023; authors' code zshuai8/FedGMM_ICML2023,
`learners/learners_ensemble.py:ACGLearnersEnsemble`, `learners/gmm.py`, `aggregator.py:
ACGCentralizedAggregator.mix`), as pure numpy functions both runtimes share.

A node models p(x, y) = sum_{k, m} pi[k, m] N(x; mu_k, Sigma_k) p_m(y | x): K Gaussian input
components, M learners, and its own joint mixing weights pi (K x M, local: personalisation).
E-step: q[i, k, m] proportional to pi[k, m] N(x_i; mu_k, Sigma_k) p_m(y_i | x_i). M-step (local):
pi = mean_i q; mu, Sigma from the component responsibilities r[i, k] = sum_m q[i, k, m] (with the
authors' regulariser eps added to the mass and the covariance diagonal); learner m trains with the
sample weights sum_k q[i, k, m]. Aggregation: gamma[c] = n_c pi[c]; mu_k = sum_c gamma[c, k] mu[c, k] /
sum_c gamma[c, k] and the same for Sigma_k; learner m = sum_c gamma[c, :, m].sum() theta[c, m] / ...
"""

from __future__ import annotations

import numpy as np

EPS = 0.1  # the authors' GaussianMixture eps: added to each component's mass and covariance diagonal


def logsumexp(a: np.ndarray, axis: int | tuple[int, ...]) -> np.ndarray:
    """log(sum(exp(a))) over `axis`, stable (a row of -inf gives -inf)."""
    top = np.max(a, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    return np.squeeze(top, axis=axis) + np.log(np.sum(np.exp(a - top), axis=axis))


def log_gaussian(x: np.ndarray, means: np.ndarray, covs: np.ndarray) -> np.ndarray:
    """log N(x_i; mu_k, Sigma_k) for every row i and component k: (n, K)."""
    out = np.empty((len(x), len(means)))
    dim = x.shape[1]
    for k, (mean, cov) in enumerate(zip(means, covs, strict=True)):
        chol = np.linalg.cholesky(cov)
        solved = np.linalg.solve(chol, (x - mean).T)  # L^-1 (x - mu)
        log_det = 2.0 * np.sum(np.log(np.diag(chol)))
        out[:, k] = -0.5 * (np.sum(solved**2, axis=0) + log_det + dim * np.log(2 * np.pi))
    return out


def responsibilities(log_px: np.ndarray, log_py: np.ndarray, log_pi: np.ndarray) -> np.ndarray:
    """The E-step: q[i, k, m] = pi[k, m] p(x_i | k) p_m(y_i | x_i) normalised over (k, m), from
    log p(x_i | k) (n, K), log p_m(y_i | x_i) (n, M) and log pi (K, M)."""
    joint = log_pi[None] + log_px[:, :, None] + log_py[:, None, :]
    return np.exp(joint - logsumexp(joint, axis=(1, 2))[:, None, None])


def gaussian_m_step(x: np.ndarray, resp: np.ndarray, eps: float = EPS) -> tuple[np.ndarray, np.ndarray]:
    """The authors' `m_step_with_response` (full covariance): for responsibilities r (n, K),
    mass_k = sum_i r_ik + eps, mu_k = sum_i r_ik x_i / mass_k, Sigma_k = sum_i r_ik (x_i - mu_k)
    (x_i - mu_k)^T / mass_k + eps I. Returns (means (K, d), covariances (K, d, d))."""
    mass = resp.sum(axis=0) + eps
    means = resp.T @ x / mass[:, None]
    covs = np.empty((resp.shape[1], x.shape[1], x.shape[1]))
    for k in range(resp.shape[1]):
        centred = x - means[k]
        covs[k] = (centred * resp[:, k : k + 1]).T @ centred / mass[k] + eps * np.eye(x.shape[1])
    return means, covs


def mixing_m_step(resp: np.ndarray) -> np.ndarray:
    """The local mixing weights' M-step: pi[k, m] = mean_i q[i, k, m]."""
    return resp.mean(axis=0)


def aggregate(
    masses: np.ndarray, means: np.ndarray, covs: np.ndarray, learners: list[list[np.ndarray]]
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """The server's aggregation (`ACGCentralizedAggregator.mix`): gamma[c] = n_c pi[c] (C, K, M)
    given as `masses`; mu_k and Sigma_k averaged over the nodes by gamma[c, k, :].sum(), each
    learner m's tensors by gamma[c, :, m].sum(). `learners[c][m]` is node c's learner m (one
    array). Returns (means (K, d), covariances (K, d, d), one array per learner)."""
    by_component = masses.sum(axis=2)  # (C, K)
    by_learner = masses.sum(axis=1)  # (C, M)
    total = by_component.sum(axis=0)
    mean = np.einsum("ck,ckd->kd", by_component, means) / total[:, None]
    cov = np.einsum("ck,ckde->kde", by_component, covs) / total[:, None, None]
    merged = [
        sum(by_learner[c, m] * learners[c][m] for c in range(len(learners))) / by_learner[:, m].sum()
        for m in range(masses.shape[2])
    ]
    return mean, cov, merged


def input_log_likelihood(log_px: np.ndarray, log_pi: np.ndarray) -> np.ndarray:
    """log p(x_i) = logsumexp_k (log pi_k + log p(x_i | k)), pi_k = sum_m pi[k, m]: the novelty
    score (low: unlike the inputs the node was fitted on)."""
    component = logsumexp(log_pi, axis=1)
    return logsumexp(log_px + component[None], axis=1)


def learner_posterior(log_px: np.ndarray, log_pi: np.ndarray) -> np.ndarray:
    """p(m | x_i) = sum_k pi[k, m] p(x_i | k) / p(x_i): each learner's weight in the prediction
    (n, M). The authors' `predict_gmm` adds pi itself, not log pi, to the log-densities; this is
    the model's posterior."""
    joint = log_pi[None] + log_px[:, :, None]
    joint = joint - logsumexp(joint, axis=(1, 2))[:, None, None]
    return np.exp(joint).sum(axis=1)


def principal_axes(x: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The mean (d,) and the first `count` principal axes (d, count) of the rows of `x` (a fixed
    linear embedding z = (x - mean) @ axes: the best linear autoencoder of `x`), signs fixed so that
    each axis' largest entry is positive (the same axes from the same rows on every machine)."""
    mean = x.mean(axis=0)
    centred = x - mean
    _, vectors = np.linalg.eigh(centred.T @ centred)  # ascending; a d x d problem, not an SVD of x
    axes = vectors[:, ::-1][:, :count]
    signs = np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(axes.shape[1])])
    return mean, axes * signs


def auroc(scores_in: np.ndarray, scores_out: np.ndarray) -> float:
    """P(score of an outlier > score of an inlier) (+ half the ties): the area under the ROC curve
    of `scores` (higher = more novel) separating `scores_out` from `scores_in`."""
    both = np.concatenate([scores_in, scores_out])
    order = both.argsort(kind="stable")
    ranks = np.empty(len(both))
    ranks[order] = np.arange(1, len(both) + 1)
    for value in np.unique(both):  # average ranks of ties
        tied = both == value
        ranks[tied] = ranks[tied].mean()
    n_in, n_out = len(scores_in), len(scores_out)
    return float((ranks[n_in:].sum() - n_out * (n_out + 1) / 2) / (n_in * n_out))
