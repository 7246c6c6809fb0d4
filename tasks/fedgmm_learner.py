"""FedGMMLearner (task.model = "fedgmm"): one node's FedGMM mixture (`fedgmm_em`) of
task.gmm_components Gaussian input components and task.gmm_learners softmax-regression learners.
The learners see the node's raw features; the Gaussians see them too, or with task.gmm_embedding =
E > 0 their first E principal components, fitted on (at most EMBED_ROWS of) the global test inputs:
unlabelled, held by every node alike, in no node's training or local test split, so every node has
the same fixed embedding without sharing data (the authors: a frozen 32-d autoencoder).

A round (train) is the authors' client step: one E-step and local M-step (mixing weights, means,
covariances), then task.local_epochs of minibatch SGD for every learner, each example weighted by
its responsibility for that learner (mean of weight * cross-entropy over the batch).

The weights travel as responsibility-weighted sums, so that any weighted mean of them (FedAvg's by
example count, a gossip average) followed by `assign`'s division is FedGMM's aggregation:
"component_mass" pi_k = sum_m pi[k, m], "means" pi_k mu_k, "covariances" pi_k Sigma_k,
"learner_mass" rho_m = sum_k pi[k, m], "coef" rho_m W_m, "intercept" rho_m b_m. With FedAvg's
weights n_c, mu_k = sum_c n_c pi_ck mu_ck / sum_c n_c pi_ck: the authors' mix. The joint mixing
weights "mixing" (K x M) are a local tensor: a merge keeps the node's own (personalisation).
With 1 component and 1 learner this is FedAvg of a softmax regression: the baseline's model.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import fedgmm_em as fedgmm
from .config import TaskConfig
from .data import Dataset
from .learner import Learner

_TINY = 1e-300
EMBED_ROWS = 2000  # how many of the global test inputs (the first ones) the embedding is fitted on


class FedGMMLearner(Learner):
    """The node's mixture; see the module docstring. FedProx's proximal term does not apply."""

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
        k, m, d, c = task.gmm_components, task.gmm_learners, data.x_train.shape[1], data.num_classes
        e = task.gmm_embedding or d  # the Gaussians' dimensions
        if e > min(d, len(data.x_test)):
            raise ValueError(
                f"task.gmm_embedding = {e} is more than the {d} features (or the test inputs) of "
                f"task.dataset {task.dataset!r}"
            )
        public = data.x_test[:EMBED_ROWS].astype(np.float64)
        self._embedding = fedgmm.principal_axes(public, e) if task.gmm_embedding else None
        if k > len(data.y_train):
            raise ValueError(
                f"task.gmm_components = {k} is more than node {node}'s {len(data.y_train)} training examples"
            )
        self.names = ("component_mass", "means", "covariances", "learner_mass", "coef", "intercept", "mixing")
        self.shapes = ((k,), (k, e), (k, e, e), (m,), (m, d, c), (m, c), (k, m))
        self.dtypes = (np.dtype(np.float64),) * len(self.names)
        self._x = data.x_train.astype(np.float64)
        whole = (data.x_test.astype(np.float64), data.y_test)
        rows = data.eval_rows
        self._tests = {False: whole if rows is None else (whole[0][rows], whole[1][rows]), True: whole}
        self.means = init_rng.normal(size=(k, e))
        self.covs = np.repeat(np.eye(e)[None], k, axis=0)
        self.coef = init_rng.normal(scale=0.01, size=(m, d, c))
        self.intercept = np.zeros((m, c))
        self.mixing = np.full((k, m), 1.0 / (k * m))
        self._sample_weights: np.ndarray | None = None  # (n, M), set by each EM step

    @property
    def local_names(self) -> frozenset[str]:
        """The joint mixing weights stay the node's own."""
        return frozenset({"mixing"})

    def get_weights(self) -> list[np.ndarray]:
        """Responsibility-weighted sums (module docstring) and the own mixing weights."""
        component, learner = self.mixing.sum(axis=1), self.mixing.sum(axis=0)
        return [
            component.copy(),
            component[:, None] * self.means,
            component[:, None, None] * self.covs,
            learner.copy(),
            learner[:, None, None] * self.coef,
            learner[:, None] * self.intercept,
            self.mixing.copy(),
        ]

    def assign(self, arrays: list[np.ndarray]) -> None:
        """Divide the (averaged) sums by their (averaged) masses; install the mixing weights."""
        component, means, covs, learner, coef, intercept, mixing = (np.asarray(a, np.float64) for a in arrays)
        component, learner = np.maximum(component, _TINY), np.maximum(learner, _TINY)
        self.means = means / component[:, None]
        self.covs = covs / component[:, None, None]
        self.coef = coef / learner[:, None, None]
        self.intercept = intercept / learner[:, None]
        self.mixing = mixing / mixing.sum()

    # ---- the model ------------------------------------------------------------------------------

    def _log_probabilities(self, x: np.ndarray) -> np.ndarray:
        """log p_m(y | x) for every class: (n, M, C)."""
        logits = np.einsum("nd,mdc->nmc", x, self.coef) + self.intercept[None]
        return logits - fedgmm.logsumexp(logits, axis=2)[:, :, None]

    def _log_py(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """log p_m(y_i | x_i): (n, M)."""
        return self._log_probabilities(x)[np.arange(len(y)), :, y]

    def embed(self, x: np.ndarray) -> np.ndarray:
        """The inputs as the Gaussians see them: raw, or their principal components."""
        if self._embedding is None:
            return x
        mean, axes = self._embedding
        return (x - mean) @ axes

    def log_px(self, x: np.ndarray) -> np.ndarray:
        """log N(z_i; mu_k, Sigma_k) of the embedded inputs z: (n, K)."""
        return fedgmm.log_gaussian(self.embed(x), self.means, self.covs)

    def e_step(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The responsibilities q[i, k, m] of the node's examples."""
        return fedgmm.responsibilities(self.log_px(x), self._log_py(x, y), np.log(self.mixing + _TINY))

    def em_step(self) -> np.ndarray:
        """The authors' `update_sample_weights` + `update_learners_weights`: E-step, then the local
        M-step of the mixing weights, means and covariances; returns q."""
        resp = self.e_step(self._x, self.data.y_train)
        self.mixing = fedgmm.mixing_m_step(resp)
        self.means, self.covs = fedgmm.gaussian_m_step(self.embed(self._x), resp.sum(axis=2))
        self._sample_weights = resp.sum(axis=1)  # (n, M): each learner's weight of each example
        return resp

    def adapt(self, x: np.ndarray, y: np.ndarray, iterations: int = 10) -> np.ndarray:
        """A new node's adaptation by the E-step only: the shared components and learners stay
        fixed; the mixing weights become the mean responsibility, `iterations` times. Returns them."""
        for _ in range(iterations):
            self.mixing = fedgmm.mixing_m_step(self.e_step(x, y))
        return self.mixing

    def novelty(self, x: np.ndarray) -> np.ndarray:
        """-log p(x) under the node's mixture: high for inputs unlike those it was fitted on."""
        return -fedgmm.input_log_likelihood(self.log_px(x), np.log(self.mixing + _TINY))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """p(y | x) = sum_m p(m | x) p_m(y | x)."""
        x = np.asarray(x, np.float64)
        weights = fedgmm.learner_posterior(self.log_px(x), np.log(self.mixing + _TINY))
        return np.einsum("nm,nmc->nc", weights, np.exp(self._log_probabilities(x)))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.predict_proba(x).argmax(axis=1)

    def evaluate(self, whole: bool = False) -> tuple[float, float]:
        """Log loss and accuracy of the mixture's prediction on the test set (subset unless whole)."""
        x, y = self._tests[whole]
        picked = self.predict_proba(x)[np.arange(len(y)), y]
        loss = float(-np.log(np.clip(picked, np.finfo(np.float64).eps, 1.0)).mean())
        return loss, float((self.predict(x) == y).mean())

    # ---- training -------------------------------------------------------------------------------

    def train(self, epochs: int | None = None, *, mu: float = 0.0) -> float:
        """One client step: the EM step, then the learners' weighted SGD epochs."""
        self.em_step()
        return super().train(epochs, mu=mu)

    def _make_epoch(self, mu: float) -> Callable[[np.ndarray], float]:
        if mu:
            raise ValueError("the fedgmm model has no FedProx proximal term: use proximal_mu = 0")
        if self._sample_weights is None:  # train_step before any train(): weights of an EM step
            self.em_step()
        return self._epoch

    def _epoch(self, order: np.ndarray) -> float:
        """Minibatch SGD of every learner over `order`; the mean weighted loss of the epoch."""
        lr, size, total = self.task.learning_rate, self.task.batch_size, 0.0
        for start in range(0, len(order), size):
            batch = order[start : start + size]
            x, y = self._x[batch], self.data.y_train[batch]
            w = self._sample_weights[batch]  # type: ignore[index]
            probabilities = np.exp(self._log_probabilities(x))  # (b, M, C)
            total -= float((w * np.log(probabilities[np.arange(len(y)), :, y] + _TINY)).sum())
            grad = probabilities
            grad[np.arange(len(y)), :, y] -= 1.0
            grad *= w[:, :, None] / len(y)
            self.coef -= lr * np.einsum("nd,nmc->mdc", x, grad)
            self.intercept -= lr * grad.sum(axis=0)
        return total / max(len(order), 1)
