"""The MCMC samplers of DP distributed Bayesian linear regression (Alparslan, Yildirim, Birbil,
ICML 2023; the authors' MCMC_DP_LR.m and MH_S_update.m), vectorised over the J parties.

Model: x ~ N(0, Sigma_x), y = x^T theta + N(0, sigma_y^2); party j releases S_obs_j = S_j + noise
(var_S per upper-triangle entry) and Z_obs_j = Z_j + N(0, var_Z I). The likelihood of Z_obs_j
given S_j is N(S_j theta, sigma_y^2 S_j + var_Z I) (the CLT approximation of X^T y given X^T X).

- MCMC-fixedS: S_j fixed at closest_psd(S_obs_j) + I; Gibbs for theta, random-walk MH for
  sigma_y^2 (step 0.1, inverse-gamma(a, b) prior).
- MCMC-normalX: also Sigma_x ~ IW(sum_j S_j + Lambda, kappa + n) (Gibbs) and each S_j by MH with
  a Wishart(S_j / a_j, a_j) proposal, target p(Z_obs_j | S_j) p(S_obs_j | S_j) Wishart(S_j;
  Sigma_x, n_j); a_j starts at (n_j / 10)^2 and adapts (Robbins-Monro, step i^-0.6, after the
  first K/10 iterations) towards an acceptance rate of 0.1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .estimators import PAPER_PRIORS, Priors
from .release import NoiseLevels
from .sampling import closest_psd, gaussian, inverse_wishart, wishart

TARGET_ACCEPTANCE = 0.1
VAR_Y_STEP = 0.1


@dataclass(frozen=True)
class Chain:
    """A sampler's output: theta (K, d), sigma_y^2 (K,), the mean acceptance rate of the S moves
    (MCMC-normalX; None for fixedS)."""

    theta: np.ndarray
    var_y: np.ndarray
    s_acceptance: float | None

    def posterior_mean(self) -> np.ndarray:
        """The mean of theta over the second half of the chain (the first half is burn-in)."""
        return self.theta[len(self.theta) // 2 :].mean(axis=0)

    def kept(self) -> np.ndarray:
        """The theta samples after burn-in (the second half)."""
        return self.theta[len(self.theta) // 2 :]


def _logdet(matrices: np.ndarray) -> np.ndarray:
    """log |M| of each positive definite matrix of a (J, d, d) batch (-inf when not PD)."""
    sign, value = np.linalg.slogdet(matrices)
    return np.where(sign > 0, value, -np.inf)


def _z_loglik(s: np.ndarray, z_obs: np.ndarray, theta: np.ndarray, var_y: float, var_z: float) -> np.ndarray:
    """log N(Z_obs_j; S_j theta, var_y S_j + var_Z I) per party, without the constant."""
    cov = s * var_y + var_z * np.eye(s.shape[1])
    residual = z_obs - s @ theta
    quad = np.einsum("ji,ji->j", residual, np.linalg.solve(cov, residual[..., None])[..., 0])
    return -0.5 * (_logdet(cov) + quad)


def _trace_solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """tr(A_j^-1 B_j) per matrix of the batches."""
    return np.trace(np.linalg.solve(a, b), axis1=1, axis2=2)


class _SMoves:
    """MCMC-normalX's MH moves of every S_j at once (MH_S_update.m), with adaptive a_j."""

    def __init__(self, s_obs: np.ndarray, sizes: np.ndarray, var_s: float, iterations: int) -> None:
        self.s_obs, self.sizes, self.var_s = s_obs, sizes.astype(np.float64), var_s
        self.a = 10.0 ** (2 * (np.log10(self.sizes) - 1))
        self.acceptance = np.zeros(len(sizes))
        self.adapt_after = iterations / 10
        self.upper = np.triu(np.ones(s_obs.shape[1:], dtype=bool))
        self.accepted = 0.0

    def _log_target(self, s, z_obs, theta, sigma, var_y, var_z) -> np.ndarray:
        d = s.shape[1]
        noise = -0.5 * ((self.s_obs - s)[:, self.upper] ** 2).sum(axis=1) / self.var_s
        prior = _logdet(s) * (self.sizes - d - 1) / 2 - _trace_solve(np.broadcast_to(sigma, s.shape), s) / 2
        return _z_loglik(s, z_obs, theta, var_y, var_z) + noise + prior

    def step(self, i, s, z_obs, theta, sigma, var_y, var_z, rng) -> np.ndarray:
        """The S_j after one MH move each (iteration i, 1-based)."""
        d = s.shape[1]
        proposal = wishart(s / self.a[:, None, None], self.a, rng)
        log_s, log_prop = _logdet(s), _logdet(proposal)
        log_q = (log_s - log_prop) * (self.a - (d + 1) / 2) + (
            _trace_solve(s, proposal) - _trace_solve(proposal, s)
        ) * (self.a / 2)
        log_r = (
            self._log_target(proposal, z_obs, theta, sigma, var_y, var_z)
            - self._log_target(s, z_obs, theta, sigma, var_y, var_z)
            + log_q
        )
        accept = np.log(rng.random(len(self.a))) < log_r
        gamma = i**-0.6
        self.acceptance = (1 - gamma) * self.acceptance + gamma * accept
        if i > self.adapt_after:
            self.a = np.exp(np.log(self.a) - gamma * (self.acceptance - TARGET_ACCEPTANCE))
        self.accepted += accept.mean()
        return np.where(accept[:, None, None], proposal, s)


def sample(
    s_obs: Sequence[np.ndarray],
    z_obs: Sequence[np.ndarray],
    sizes: Sequence[int],
    levels: NoiseLevels,
    var_y0: float,
    iterations: int,
    rng: np.random.Generator,
    *,
    update_s: bool,
    priors: Priors = PAPER_PRIORS,
    scatter_prior: np.ndarray | None = None,
) -> Chain:
    """Run MCMC-normalX (`update_s`) or MCMC-fixedS for `iterations` iterations from the noisy
    statistics of the parties (n_j = sizes[j] rows each), starting at theta = 0, sigma_y^2 =
    var_y0 (the authors: bound_y / 3), S_j = closest_psd(S_obs_j) + I. `scatter_prior`: Lambda of
    Sigma_x's inverse-Wishart prior (MCMC-normalX; required there)."""
    s_obs_b, z_obs_b = np.stack(s_obs).astype(np.float64), np.stack(z_obs).astype(np.float64)
    d = s_obs_b.shape[1]
    sizes_b = np.asarray(sizes)
    s = np.stack([closest_psd(m) + np.eye(d) for m in s_obs_b])
    theta, var_y = np.zeros(d), float(var_y0)
    var_z, c_inv = levels.z**2, priors.theta_precision * np.eye(d)
    moves = None
    if update_s:
        if scatter_prior is None:
            raise ValueError("MCMC-normalX needs scatter_prior (Lambda of Sigma_x's prior)")
        moves = _SMoves(s_obs_b, sizes_b, levels.s**2, iterations)
    thetas, var_ys = np.empty((iterations, d)), np.empty(iterations)
    for i in range(1, iterations + 1):
        if moves is not None:
            sigma = inverse_wishart(s.sum(axis=0) + scatter_prior, d + 1 + float(sizes_b.sum()), rng)
            s = moves.step(i, s, z_obs_b, theta, sigma, var_y, var_z, rng)
        cov = s * var_y + var_z * np.eye(d)
        weighted = np.swapaxes(np.linalg.solve(cov, s), 1, 2)  # S_j cov_j^-1 (both symmetric)
        precision = (weighted @ s).sum(axis=0) + c_inv
        post_cov = np.linalg.inv(precision)
        post_cov = (post_cov + post_cov.T) / 2
        theta = gaussian(post_cov @ np.einsum("jab,jb->a", weighted, z_obs_b), post_cov, rng)
        var_y = _var_y_move(var_y, s, z_obs_b, theta, var_z, priors, rng)
        thetas[i - 1], var_ys[i - 1] = theta, var_y
    rate = None if moves is None else moves.accepted / iterations
    return Chain(thetas, var_ys, rate)


def _var_y_move(var_y, s, z_obs, theta, var_z, priors: Priors, rng) -> float:
    """One random-walk MH move of sigma_y^2 (a proposal <= 0 is rejected)."""
    proposal = var_y + VAR_Y_STEP * rng.standard_normal()
    if proposal <= 0:
        return var_y

    def log_post(v: float) -> float:
        return float(_z_loglik(s, z_obs, theta, v, var_z).sum()) - (priors.a + 1) * np.log(v) - priors.b / v

    return proposal if np.log(rng.random()) < log_post(proposal) - log_post(var_y) else var_y
