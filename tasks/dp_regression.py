"""Data of DP distributed Bayesian linear regression (Alparslan, Yildirim, Birbil, ICML 2023),
as the authors' `main_DP_LR_simul_fn.m` makes it: the simulated setting (Sigma_x ~
inverse-Wishart(V^T V, d + 1), theta ~ N(0, I), x ~ N(0, Sigma_x), y = x^T theta + N(0, 1)), the
real tables (NaN -> 0, features z-scored, target centred and divided by its largest absolute
value, the first 80% of rows for training), and the split of the training rows among J parties
(contiguous blocks of floor(n / J) rows, the last party taking the rest)."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedgossip.strategies.dp_regression.sampling import inverse_wishart

TEST_SHARE = 0.2


@dataclass(frozen=True)
class RegressionData:
    """Training rows (x, y), the test rows (real data) or the true Sigma_x and theta (simulated),
    and Lambda = V^T V (V standard normal), the prior scale of Sigma_x that MCMC-normalX uses."""

    x: np.ndarray
    y: np.ndarray
    scatter_prior: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    theta: np.ndarray | None = None
    sigma_x: np.ndarray | None = None


def simulate(n: int, d: int, rng: np.random.Generator) -> RegressionData:
    """The paper's simulated data: n rows of d features, unit noise variance."""
    v = rng.standard_normal((d, d))
    scatter = v.T @ v
    sigma_x = inverse_wishart(scatter, d + 1, rng)
    theta = rng.standard_normal(d)
    x = rng.multivariate_normal(np.zeros(d), sigma_x, size=n)
    y = x @ theta + rng.standard_normal(n)
    return RegressionData(x, y, scatter, theta=theta, sigma_x=sigma_x)


def read_table(path: Path) -> np.ndarray:
    """A comma-separated table without header (gzipped if its name ends in .gz); empty cells are
    NaN. ValueError naming the file when it cannot be read."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt") as handle:
            return np.genfromtxt(handle, delimiter=",", dtype=np.float64)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read the regression table {path}: {err}") from None


def prepare_real(table: np.ndarray, rng: np.random.Generator) -> RegressionData:
    """The authors' preprocessing of a real table (last column the target) and their train/test
    split; Lambda drawn from `rng` as theirs."""
    table = np.where(np.isnan(table), 0.0, table)
    x, y = table[:, :-1], table[:, -1]
    std = x.std(axis=0, ddof=1)
    x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    y = y - y.mean()
    y = y / np.abs(y).max()
    n_train = int(np.ceil(len(y) * (1 - TEST_SHARE)))
    v = rng.standard_normal((x.shape[1], x.shape[1]))
    return RegressionData(x[:n_train], y[:n_train], v.T @ v, x_test=x[n_train:], y_test=y[n_train:])


def party_rows(n: int, parties: int) -> list[slice]:
    """The rows of each of `parties` parties: blocks of floor(n / parties), the last one the rest.
    ValueError when a party would get no row."""
    if not 1 <= parties <= n:
        raise ValueError(f"cannot split {n} rows among {parties} parties")
    size = n // parties
    return [slice(j * size, n if j == parties - 1 else (j + 1) * size) for j in range(parties)]
