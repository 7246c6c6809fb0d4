"""LinearLearner: scikit-learn's SGDClassifier (logistic loss) on one node's data."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.linear_model import SGDClassifier

from .config import TaskConfig
from .data import Dataset
from .initializers import initial_weights
from .learner import Learner

# Floor on predicted probabilities in the log loss, as in sklearn.metrics.log_loss.
_EPS = np.finfo(np.float64).eps


def _log_loss_and_accuracy(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean negative log-likelihood of the true labels and the share predicted right."""
    picked = probabilities[np.arange(len(labels)), labels]
    loss = float(-np.log(np.clip(picked, _EPS, 1.0)).mean())
    return loss, float((probabilities.argmax(axis=1) == labels).mean())


class LinearLearner(Learner):
    """Logistic regression by per-example SGD (constant step task.learning_rate, sklearn's default
    L2 penalty 1e-4), trained with one partial_fit call per epoch; task.batch_size, task.momentum,
    task.weight_decay and task.device do not apply (SGDClassifier has none of them), nor does
    FedProx's proximal term (train(mu > 0) raises ValueError).

    Weights travel as "coef" (num_classes, features) and "intercept" (num_classes,). Multiclass
    models are one-vs-rest, one row per class. For two classes sklearn keeps one row w; it
    travels as the zero-sum pair (-w/2, w/2) and a received pair (a, b) installs w = b - a, which
    keeps averaging and mean-preserving rescaling exact.
    """

    def __init__(
        self,
        task: TaskConfig,
        data: Dataset,
        *,
        node: int,
        init_rng: np.random.Generator,
        shuffle_rng: np.random.Generator,
    ) -> None:
        super().__init__(task, data, node=node, shuffle_rng=shuffle_rng)
        self.names = ("coef", "intercept")
        self.shapes = ((data.num_classes, data.x_train.shape[1]), (data.num_classes,))
        self.dtypes = (np.dtype(np.float64),) * 2
        self._x_train = data.x_train.astype(np.float64)
        whole = (data.x_test.astype(np.float64), data.y_test)  # converted once, not per evaluation
        rows = data.eval_rows
        subset = whole if rows is None else (whole[0][rows], whole[1][rows])
        self._tests = {False: subset, True: whole}  # (x, y) of evaluate(whole)
        self._classes = np.arange(data.num_classes)
        self._model = SGDClassifier(
            loss="log_loss", learning_rate="constant", eta0=task.learning_rate, shuffle=False
        )
        # One public partial_fit call sets sklearn's internal state; its update is then overwritten.
        self._model.partial_fit(self._x_train[:1], data.y_train[:1], classes=self._classes)
        self.set_weights(initial_weights(self.shapes, init_rng))

    def get_weights(self) -> list[np.ndarray]:
        """Fresh float64 copies of coef and intercept in the (num_classes, ...) layout."""
        coef, intercept = self._model.coef_, self._model.intercept_
        if self.data.num_classes == 2:
            return [np.concatenate([-coef, coef]) / 2, np.concatenate([-intercept, intercept]) / 2]
        return [coef.copy(), intercept.copy()]

    def assign(self, arrays: list[np.ndarray]) -> None:
        """Install coef and intercept as C-ordered float64, as sklearn updates them."""
        coef, intercept = (np.array(array, dtype=np.float64, order="C") for array in arrays)
        if self.data.num_classes == 2:
            coef, intercept = coef[1:] - coef[:1], intercept[1:] - intercept[:1]
        self._model.coef_, self._model.intercept_ = coef, intercept

    def _make_epoch(self, mu: float) -> Callable[[np.ndarray], float]:
        """The epoch function; SGD keeps no state between train() calls. sklearn's SGD has no
        proximal term, so mu must be 0."""
        if mu:
            raise ValueError(
                "the linear model has no FedProx proximal term: use a torch model, or proximal_mu = 0"
            )
        return self._epoch

    def _epoch(self, order: np.ndarray) -> float:
        """One partial_fit pass in the given order, then the log loss on the node's training data
        (sklearn updates per example, so task.batch_size does not apply)."""
        self._model.partial_fit(self._x_train[order], self.data.y_train[order])
        probabilities = self._model.predict_proba(self._x_train)
        loss, _ = _log_loss_and_accuracy(probabilities, self.data.y_train)
        return loss

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The most probable class of each row of `x`."""
        return self._model.predict_proba(x.astype(np.float64)).argmax(axis=1)

    def evaluate(self, whole: bool = False) -> tuple[float, float]:
        """Log loss and accuracy on the global test set (its subset unless `whole`)."""
        x, y = self._tests[whole]
        return _log_loss_and_accuracy(self._model.predict_proba(x), y)
