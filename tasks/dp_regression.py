"""Data of DP distributed Bayesian linear regression (Alparslan, Yildirim, Birbil, ICML 2023),
as the authors' `main_DP_LR_simul_fn.m` makes it: the simulated setting (Sigma_x ~
inverse-Wishart(V^T V, d + 1), theta ~ N(0, I), x ~ N(0, Sigma_x), y = x^T theta + N(0, 1)), the
real tables (NaN -> 0, features z-scored, target centred and divided by its largest absolute
value, the first 80% of rows for training), and the split of the training rows among J parties
(contiguous blocks of floor(n / J) rows, the last party taking the rest). As task.dataset
"dp-regression" (a table) and "dp-regression-simulated", the rows go through the classification
pipeline with the target as the last feature (`regression_source`)."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from fedgossip.base.seeding import stream
from fedgossip.strategies.dp_regression.sampling import inverse_wishart

from .config import TaskConfig
from .source import Source

TEST_SHARE = 0.2
SIMULATED = "dp-regression-simulated"


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


def _as_source(data: RegressionData) -> Source:
    """The regression rows through the classification pipeline: each example's features are
    [x | y] (the target last, taken back by the DP regression learner), its label a dummy class
    (row parity) that only the partitioning sees; scale 1: the values as prepared."""

    def rows(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.column_stack([x, y]), np.arange(len(y), dtype=np.int64) % 2

    x, labels = rows(data.x, data.y)
    x_test, labels_test = rows(data.x_test, data.y_test)
    return Source(x, labels, 2, (x.shape[1],), 1.0, x_test, labels_test)


@lru_cache(maxsize=4)
def _regression_data(dataset: str, path: str, samples: int, features: int, seed: int) -> RegressionData:
    """The rows of a DP regression dataset (cached: the source and the reference read them)."""
    rng = stream(seed, "synthetic")
    if dataset == SIMULATED:
        whole = simulate(samples, features, rng)
        n_train = int(np.ceil(samples * (1 - TEST_SHARE)))
        return RegressionData(
            whole.x[:n_train], whole.y[:n_train], whole.scatter_prior, whole.x[n_train:], whole.y[n_train:],
            whole.theta, whole.sigma_x,
        )  # fmt: skip
    return prepare_real(read_table(Path(path)), rng)


def _data_of(task: TaskConfig, seed: int) -> RegressionData:
    return _regression_data(task.dataset, task.path, task.synthetic_samples, task.synthetic_features, seed)


def regression_source(task: TaskConfig, seed: int) -> Source:
    """The Source of task.dataset "dp-regression" (task.path: a table as the authors ship them,
    .csv or .csv.gz, the target last) or "dp-regression-simulated" (task.synthetic_samples rows of
    task.synthetic_features features, the paper's model): the authors' preprocessing, the first
    80% of the rows for training."""
    return _as_source(_data_of(task, seed))


@dataclass(frozen=True)
class Evaluation:
    """What the experimenter scores a DP estimate with: the reference theta (the simulated one,
    or the OLS of the pooled training rows of a real table: the authors' estimation error) and
    the test rows."""

    theta: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def evaluation(task: TaskConfig, seed: int) -> Evaluation:
    """The `Evaluation` of task.dataset (a DP regression dataset) at `seed`."""
    data = _data_of(task, seed)
    theta = data.theta if data.theta is not None else np.linalg.lstsq(data.x, data.y, rcond=None)[0]
    return Evaluation(theta, data.x_test, data.y_test)
