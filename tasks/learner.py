"""Learner: one node's model and local data, behind the interface that peers and strategies use."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from numbers import Integral, Real

import numpy as np

from fedgossip.base.constraints import Interval
from fedgossip.schema.tensors import TensorSpec, check_arrays

from . import compute_gate
from .config import TaskConfig
from .data import Dataset


class Learner(abc.ABC):
    """One node's model with its training partition and the global test set.

    Subclasses set `names`, `shapes` and `dtypes` (the weight tensors, in a stable order) and
    implement get_weights, assign, _make_epoch and evaluate; validation and epoch order live here.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[np.dtype, ...]

    def __init__(
        self, task: TaskConfig, data: Dataset, *, node: int, shuffle_rng: np.random.Generator
    ) -> None:
        self.task = task
        self.data = data
        self.node = node
        self.num_examples = len(data.y_train)
        self._shuffle_rng = shuffle_rng
        self._step_epoch: Callable[[np.ndarray], float] | None = None  # train_step's optimiser
        self._step_order = np.empty(0, dtype=np.int64)  # the examples left in train_step's epoch

    @property
    def shuffle_state(self) -> dict:
        """State of the minibatch-order generator (JSON-ready), for runtimes that rebuild the learner
        every round (a Flower ClientApp) yet want each epoch's order to differ as in one process."""
        return self._shuffle_rng.bit_generator.state

    @shuffle_state.setter
    def shuffle_state(self, state: dict) -> None:
        self._shuffle_rng.bit_generator.state = state

    @property
    def rng_state(self) -> dict:
        """The state of every generator training draws from: "shuffle", the minibatch order's
        (JSON-ready), and any other as a numpy array (a torch learner's "torch": dropout...); for a
        runtime that reuses one learner yet starts each message where a freshly built one starts
        (the Flower ClientApp's learner cache), or that rebuilds it each message and carries these
        over (its `context.state`)."""
        return {"shuffle": self.shuffle_state}

    @rng_state.setter
    def rng_state(self, state: dict) -> None:
        self.shuffle_state = state["shuffle"]

    @property
    def momentum_state(self) -> dict[str, np.ndarray]:
        """The momentum buffers kept across train() calls (task.keep_momentum), by parameter
        position, for runtimes that rebuild the learner every round (a Flower ClientApp, a
        streamed task); empty when none are kept or the learner has no momentum."""
        return {}

    @momentum_state.setter
    def momentum_state(self, state: dict[str, np.ndarray]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} keeps no momentum buffers")

    @property
    def epsilon(self) -> float | None:
        """The privacy budget training has spent so far (DP-SGD's epsilon at privacy.delta); None
        for a learner that does not train privately."""
        return None

    @property
    def privacy_steps(self) -> int:
        """The private training steps taken so far, for runtimes that rebuild the learner every
        round (a Flower ClientApp) yet account for all of them; 0 without private training."""
        return 0

    @privacy_steps.setter
    def privacy_steps(self, steps: int) -> None:
        if steps:
            raise ValueError(f"{type(self).__name__} does not train privately (privacy.mechanism)")

    @property
    def local_names(self) -> frozenset[str]:
        """Names of the tensors that are local statistics, not trained weights (BatchNorm running
        statistics): they travel with the model, but a merge should keep the node's own copy.
        Empty unless the model has such buffers."""
        return frozenset()

    @abc.abstractmethod
    def get_weights(self) -> list[np.ndarray]:
        """Fresh copies of the weight tensors in `names` order."""

    @property
    def specs(self) -> list[TensorSpec]:
        """The weight tensors' specs (names, shapes, dtypes), what set_weights checks against."""
        return list(map(TensorSpec.of, self.names, self.shapes, self.dtypes))

    def set_weights(self, arrays: Sequence[np.ndarray]) -> None:
        """Replace the weights with an untrusted model, after the shared checks: count, shapes,
        real dtypes (integers for integer tensors such as num_batches_tracked) and finiteness.
        ValueError (ModelRejected) names the first bad tensor."""
        self.assign(check_arrays(arrays, self.specs, exact_dtype=False))

    @abc.abstractmethod
    def assign(self, arrays: list[np.ndarray]) -> None:
        """Replace the weights with a trusted model, not checked again: the node's own, or one
        that passed the checks where it entered (a gossip peer's wire, `set_weights`)."""

    def train(self, epochs: int | None = None, *, mu: float = 0.0) -> float:
        """Train task.local_epochs (or `epochs`) epochs, each in a fresh order drawn from the node's
        shuffle stream (`_epoch_order`), and return the training loss of the last epoch; with
        task.local_steps (and no `epochs`), that many minibatches instead (`_next_batch`), returning
        the last one's loss. mu > 0 adds FedProx's proximal term mu/2 * ||w - w_start||^2 (w_start:
        the weights when train() is called)."""
        mu = Interval(Real, 0.0).check("mu", mu)
        run_epoch = self._make_epoch(mu)
        if epochs is None and self.task.local_steps:
            with compute_gate.held():
                for _ in range(self.task.local_steps):
                    loss = run_epoch(self._next_batch())
            return loss
        epochs = self.task.local_epochs if epochs is None else Interval(Integral, 1).check("epochs", epochs)
        with compute_gate.held():
            for _ in range(epochs):
                loss = run_epoch(self._epoch_order())
        return loss

    def _epoch_order(self) -> np.ndarray:
        """The examples of one epoch, from the node's shuffle stream: a permutation, or with
        sampling weights (`Dataset.train_weights`) as many draws with replacement."""
        weights = self.data.train_weights
        if weights is None:
            return self._shuffle_rng.permutation(self.num_examples)
        return self._shuffle_rng.choice(self.num_examples, self.num_examples, p=weights)

    def train_step(self) -> float:
        """Train on one minibatch (`_next_batch`: asynchronous gossip's "step", the tick
        schedule's training). The optimiser state (momentum) carries over from step to step, as
        within one epoch. Returns the batch's training loss."""
        if self._step_epoch is None:
            self._step_epoch = self._make_epoch(0.0)
        with compute_gate.held():
            return self._step_epoch(self._next_batch())

    def _next_batch(self) -> np.ndarray:
        """The next minibatch of task.batch_size examples of an epoch order drawn from the node's
        shuffle stream, a new order once one is used up (a single example left over joins the
        batch before it)."""
        if not self._step_order.size:
            self._step_order = self._epoch_order()
        size = self.task.batch_size + int(self._step_order.size == self.task.batch_size + 1)
        batch, self._step_order = self._step_order[:size], self._step_order[size:]
        return batch

    @abc.abstractmethod
    def _make_epoch(self, mu: float) -> Callable[[np.ndarray], float]:
        """Epoch function for one train() call (fresh optimiser state, proximal weight mu): trains
        over the training examples in the given order and returns the epoch's training loss."""

    @abc.abstractmethod
    def predict(self, x: np.ndarray) -> np.ndarray:
        """The predicted class of each row of `x` (flat float32 features, as in `data`)."""

    def test_examples(self, whole: bool = False) -> int:
        """How many test examples `evaluate(whole)` scores."""
        rows = self.data.eval_rows
        return len(self.data.y_test) if whole or rows is None else len(rows)

    def local_accuracy(self, test_accuracy: float) -> float | None:
        """Accuracy on the node's own test split (task.eval, `local_eval`): scored on
        `Dataset.x_local` ("both"), `test_accuracy` itself ("local": the test set is the local
        split), None ("global"). With task.finetune_epochs, the accuracy of the model fine-tuned
        that many epochs on the node's training data (FedAvg + local adaptation); the learner is
        then put back as it was (weights, minibatch order, momentum buffers)."""
        data = self.data
        if self.task.eval == "global":
            return None
        x, y = (data.x_local, data.y_local) if data.y_local is not None else (data.x_test, data.y_test)
        if not self.task.finetune_epochs:
            return float(np.mean(self.predict(x) == y)) if data.y_local is not None else test_accuracy
        weights, order, momentum = self.get_weights(), self.shuffle_state, self.momentum_state
        self.train(self.task.finetune_epochs)
        accuracy = float(np.mean(self.predict(x) == y))
        self.assign(weights)
        self.shuffle_state, self.momentum_state = order, momentum
        return accuracy

    @abc.abstractmethod
    def evaluate(self, whole: bool = False) -> tuple[float, float]:
        """(loss, accuracy) on the global held-out test set, the same for every node: on its
        class-balanced subset (`Dataset.eval_rows`, task.eval_examples) unless `whole` (the
        final round's evaluation)."""
