"""The closed-form estimators of DP distributed Bayesian linear regression (Alparslan, Yildirim,
Birbil, ICML 2023; the authors' MATLAB code sinanyildirim/Bayesian_DP_dist_LR): the non-private
posterior (the baseline the private ones approach), Bayes-fixedS-fast (the one-step estimate from
the noisy statistics) and distributed adaSSP (Wang 2018, the authors' Appendix C)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedgossip.strategies.analytic_gaussian import analytic_gaussian_sigma

from .release import Bounds, NoiseLevels, release
from .sampling import closest_psd


@dataclass(frozen=True)
class Priors:
    """The authors' priors: sigma_y^2 ~ inverse-gamma(a, b); theta ~ N(0, C), C = (a - 1)/b I
    (the non-private posterior adds the precision b/(a - 1) I to X^T X); Sigma_x ~
    inverse-Wishart(Lambda, kappa = d + 1) (MCMC-normalX only; Lambda = V^T V, V standard normal)."""

    a: float = 20.0
    b: float = 0.5

    @property
    def theta_precision(self) -> float:
        """The prior precision of each coefficient, b / (a - 1)."""
        return self.b / (self.a - 1)


PAPER_PRIORS = Priors()


@dataclass(frozen=True)
class Posterior:
    """A Gaussian summary of theta: its mean and covariance."""

    mean: np.ndarray
    cov: np.ndarray


def nonprivate_posterior(
    s: np.ndarray, z: np.ndarray, yy: float, n: int, priors: Priors = PAPER_PRIORS
) -> Posterior:
    """The posterior of theta from the exact pooled statistics S = X^T X, Z = X^T y, y^T y over
    n rows: mean (S + lambda_0)^-1 Z, covariance b_n/(a_n - 1) (S + lambda_0)^-1 with
    lambda_0 = b/(a - 1) I, a_n = a + n/2, b_n = max(b, b + (y^T y - mu^T (S + lambda_0) mu)/2)."""
    precision = s + priors.theta_precision * np.eye(len(z))
    precision = (precision + precision.T) / 2
    mean = np.linalg.solve(precision, z)
    a_n = priors.a + n / 2
    b_n = max(priors.b, priors.b + 0.5 * (yy - mean @ precision @ mean))
    return Posterior(mean, b_n / (a_n - 1) * np.linalg.inv(precision))


def fast_estimate(
    s_obs: Sequence[np.ndarray],
    z_obs: Sequence[np.ndarray],
    levels: NoiseLevels,
    bounds: Bounds,
    priors: Priors = PAPER_PRIORS,
) -> Posterior:
    """Bayes-fixedS-fast: S_j fixed at the PSD matrix nearest its noisy value, sigma_y^2 fixed at
    bound_y / 3 (as the authors' code), Z_j ~ N(S_j theta, sigma_y^2 S_j + var_Z I): the Gaussian
    posterior of theta in one step (prior precision (C^-1), prior mean 0)."""
    d = len(z_obs[0])
    var_y, var_z = bounds.y / 3, levels.z**2
    precision, shift = np.eye(d) * priors.theta_precision, np.zeros(d)
    for s_j, z_j in zip(s_obs, z_obs, strict=True):
        s0 = closest_psd(s_j)
        s0 = (s0 + s0.T) / 2
        cov = s0 * var_y + var_z * np.eye(d)
        precision += s0 @ np.linalg.solve(cov, s0)
        shift += s0 @ np.linalg.solve(cov, z_j)
    return Posterior(np.linalg.solve(precision, shift), np.linalg.inv(precision))


def adassp(
    s: Sequence[np.ndarray],
    z: Sequence[np.ndarray],
    epsilon: float,
    delta: float,
    bounds: Bounds,
    rng: np.random.Generator,
    p: float = 0.05,
) -> np.ndarray:
    """Distributed adaSSP (the authors' adaSSP.m): each party releases S_j, Z_j and its smallest
    eigenvalue, each at (epsilon/3, delta/3), and a ridge lambda_j from it; theta =
    (sum S_j' + sum lambda_j I)^-1 sum Z_j'. Takes the exact statistics: it adds its own noise."""
    d = len(z[0])
    third = epsilon / 3
    unit = analytic_gaussian_sigma(third, delta / 3)
    levels = NoiseLevels(unit * bounds.x**2, unit * bounds.x * bounds.y)
    log_term = math.log(6 / delta)
    s_total, z_total, ridge = np.zeros((d, d)), np.zeros(d), 0.0
    for s_j, z_j in zip(s, z, strict=True):
        lambda_min = float(np.linalg.eigvalsh(s_j).min())
        noisy_min = lambda_min + math.sqrt(log_term) / third * bounds.x**2 * rng.standard_normal()
        released_min = max(noisy_min - log_term / third * bounds.x**2, 0.0)
        target = math.sqrt(d * log_term * math.log(2 * d**2 / p)) * bounds.x**2 / third
        ridge += max(0.0, target - released_min)
        s_noisy, z_noisy = release(s_j, z_j, levels, rng)
        s_total += s_noisy
        z_total += z_noisy
    return np.linalg.solve(s_total + ridge * np.eye(d), z_total)
