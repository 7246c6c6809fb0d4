"""DPRegressionLearner: a party of DP distributed Bayesian linear regression (task.model
"dp-bayesian-regression", task.dataset "dp-regression" or "dp-regression-simulated"). Its model
is the table of released statistics (`strategies.dp_regression.table`); training releases the
party's own noisy statistics into it, once; evaluating scores the one-step estimate of theta from
every release the table holds."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fedgossip.strategies.dp_regression import table
from fedgossip.strategies.dp_regression.estimators import fast_estimate
from fedgossip.strategies.dp_regression.release import Bounds, release, statistics

from .config import TaskConfig
from .data import Dataset
from .learner import Learner

MODEL = "dp-bayesian-regression"


def clip_rows(x: np.ndarray, y: np.ndarray, bounds: Bounds) -> tuple[np.ndarray, np.ndarray]:
    """Rows scaled down to ||x|| <= bounds.x, targets clipped to [-bounds.y, bounds.y]: the
    sensitivity the noise is calibrated for then holds whatever the data."""
    norms = np.sqrt((x**2).sum(axis=1))
    scale = np.minimum(1.0, bounds.x / np.where(norms > 0, norms, 1.0))
    return x * scale[:, None], np.clip(y, -bounds.y, bounds.y)


class DPRegressionLearner(Learner):
    """One party: its rows (features [x | y] as `tasks.dp_regression` makes them), the table it
    holds. The release's noise comes from the node's own stream (drawn once when the learner is
    built, so a learner rebuilt from the same seed, as a Flower ClientApp is every message,
    releases the same statistics); task.learning_rate, batch_size, local_epochs do not apply."""

    def __init__(
        self,
        task: TaskConfig,
        data: Dataset,
        *,
        node: int,
        init_rng: np.random.Generator,
        shuffle_rng: np.random.Generator,
    ) -> None:
        if not str(task.dataset).startswith("dp-regression"):
            raise ValueError(
                f'task.model "{MODEL}" needs task.dataset "dp-regression" or "dp-regression-simulated"; '
                f"got {task.dataset!r}"
            )
        if node >= table.MAX_PARTIES:
            raise ValueError(f"task.model {MODEL!r} holds at most {table.MAX_PARTIES} parties")
        super().__init__(task, data, node=node, shuffle_rng=shuffle_rng)
        self.d = data.x_train.shape[1] - 1
        self.names = table.NAMES
        self.shapes = table.shapes(self.d)
        self.dtypes = (np.dtype(np.float64),) * 3
        self._x, self._y = (
            np.asarray(a, dtype=np.float64) for a in (data.x_train[:, :-1], data.x_train[:, -1])
        )
        self._tests = {
            whole: (np.asarray(x[:, :-1], dtype=np.float64), np.asarray(x[:, -1], dtype=np.float64))
            for whole, x in ((True, data.x_test), (False, data.test_set(False)[0]))
        }
        self._release_seed = int(shuffle_rng.integers(2**63))
        self._table = table.empty(self.d)

    def get_weights(self) -> list[np.ndarray]:
        """Copies of the table's tensors."""
        return [t.copy() for t in self._table]

    def assign(self, arrays: list[np.ndarray]) -> None:
        """Hold the table `arrays`."""
        self._table = [np.array(a, dtype=np.float64) for a in arrays]

    def own_release(self) -> tuple[np.ndarray, np.ndarray]:
        """This party's noisy (S, Z) at the table's privacy parameters (ValueError before the
        mechanism set them), the same every call."""
        known = table.released(self._table, self.d)
        if known.bounds is None or known.levels is None:
            raise ValueError(
                f'task.model "{MODEL}" runs with strategy.name = "{MODEL}", which sets epsilon and delta'
            )
        s, z = statistics(*clip_rows(self._x, self._y, known.bounds))
        return release(s, z, known.levels, np.random.default_rng(self._release_seed))

    def _make_epoch(self, mu: float) -> Callable[[np.ndarray], float]:
        """An "epoch" puts the own release into the table (once: it is the same release) and
        returns the training MSE of the table's one-step estimate."""
        if mu:
            raise ValueError(f"task.model {MODEL!r} has no FedProx proximal term: use proximal_mu = 0")

        def epoch(order: np.ndarray) -> float:
            if not self._table[2][self.node]:
                s, z = self.own_release()
                self._table = table.with_row(self._table, self.node, s, z, len(self._y))
            return float(np.mean((self._y - self._x @ self.theta()) ** 2))

        return epoch

    def theta(self) -> np.ndarray:
        """The one-step (Bayes-fixedS-fast) estimate from the releases in the table (zeros, the
        prior mean, when it holds none)."""
        known = table.released(self._table, self.d)
        if not known.parties or known.levels is None or known.bounds is None:
            return np.zeros(self.d)
        return fast_estimate(known.s, known.z, known.levels, known.bounds).mean

    def predict(self, x: np.ndarray) -> np.ndarray:
        """x theta for rows x of d features."""
        return np.asarray(x, dtype=np.float64) @ self.theta()

    def evaluate(self, whole: bool = False) -> tuple[float, float]:
        """(test MSE, R^2 = 1 - MSE / mean squared deviation of the test targets) of the
        one-step estimate: a regression's loss and, in the accuracy's place, its R^2."""
        x, y = self._tests[whole]
        mse = float(np.mean((y - x @ self.theta()) ** 2))
        return mse, 1.0 - mse / float(np.mean((y - y.mean()) ** 2))
