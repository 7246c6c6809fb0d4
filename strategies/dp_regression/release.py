"""What one party releases in DP distributed Bayesian linear regression (Alparslan, Yildirim,
Birbil, ICML 2023): its summary statistics S_j = X_j^T X_j and Z_j = X_j^T y_j plus Gaussian
noise of the analytic Gaussian mechanism, with the sensitivity set by bounds on the row norms,
as the authors' `main_DP_LR_simul_fn.m` does."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedgossip.strategies.analytic_gaussian import analytic_gaussian_sigma


@dataclass(frozen=True)
class Bounds:
    """Bounds on one row: ||x||_2 <= x and |y| <= y. The sensitivity of (upper triangle of x x^T,
    x y) is sqrt(x^4 + x^2 y^2) (one row added or removed)."""

    x: float
    y: float

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray) -> Bounds:
        """The authors' bounds: the largest row norm and |y| of the data (not themselves private:
        the paper assumes them public)."""
        return cls(float(np.sqrt((x**2).sum(axis=1)).max()), float(np.abs(y).max()))

    @property
    def joint(self) -> float:
        """The L2 sensitivity of (S, Z) released together."""
        return math.sqrt(self.x**4 + (self.x * self.y) ** 2)


@dataclass(frozen=True)
class NoiseLevels:
    """The noise standard deviations of the entries of S (upper triangle) and of Z."""

    s: float
    z: float

    @classmethod
    def calibrate(cls, epsilon: float, delta: float, bounds: Bounds) -> NoiseLevels:
        """The authors' choice: S and Z released jointly at (epsilon, delta) with sensitivity
        `bounds.joint`, or separately at (epsilon/2, delta/2) each with sensitivities x^2 and x y,
        whichever adds the smaller total variance (per entry of S plus per entry of Z)."""
        joint = analytic_gaussian_sigma(epsilon, delta) * bounds.joint
        half = analytic_gaussian_sigma(epsilon / 2, delta / 2)
        s, z = half * bounds.x**2, half * bounds.x * bounds.y
        if s**2 + z**2 > joint**2:
            return cls(joint, joint)
        return cls(s, z)


def statistics(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """S = X^T X and Z = X^T y of one party (float64)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return x.T @ x, x.T @ y


def symmetric_noise(d: int, rng: np.random.Generator) -> np.ndarray:
    """A symmetric d x d matrix whose upper triangle (diagonal included) is iid N(0, 1)."""
    upper = np.triu(rng.standard_normal((d, d)))
    return upper + np.triu(upper, 1).T


def release(
    s: np.ndarray, z: np.ndarray, levels: NoiseLevels, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The noisy (S + levels.s W, Z + levels.z v), W symmetric with iid N(0, 1) upper triangle,
    v iid N(0, 1): what a party shares, once; sharing it again is post-processing."""
    d = len(z)
    return s + levels.s * symmetric_noise(d, rng), z + levels.z * rng.standard_normal(d)
