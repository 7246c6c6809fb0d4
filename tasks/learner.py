"""Learner: one node's model and local data, behind the interface that peers and strategies use."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence

import numpy as np

from .config import TaskConfig
from .data import Dataset
from .validation import check_int


class Learner(abc.ABC):
    """One node's model with its training partition and the global test set.

    Subclasses set `names` and `shapes` (the weight tensors, in a stable order) and implement
    get_weights, _assign, _make_epoch and evaluate; validation and epoch order live here.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    def __init__(
        self, task: TaskConfig, data: Dataset, *, node: int, shuffle_rng: np.random.Generator
    ) -> None:
        self.task = task
        self.data = data
        self.node = node
        self.num_examples = len(data.y_train)
        self._shuffle_rng = shuffle_rng

    @property
    def shuffle_state(self) -> dict:
        """State of the minibatch-order generator (JSON-ready), for runtimes that rebuild the learner
        every round (a Flower ClientApp) yet want each epoch's order to differ as in one process."""
        return self._shuffle_rng.bit_generator.state

    @shuffle_state.setter
    def shuffle_state(self, state: dict) -> None:
        self._shuffle_rng.bit_generator.state = state

    @abc.abstractmethod
    def get_weights(self) -> list[np.ndarray]:
        """Fresh copies of the weight tensors in `names` order."""

    def set_weights(self, arrays: Sequence[np.ndarray]) -> None:
        """Replace the weights after checking count, shapes, numeric dtype and finiteness."""
        if len(arrays) != len(self.shapes):
            raise ValueError(f"expected {len(self.shapes)} weight arrays, got {len(arrays)}")
        checked = [np.asarray(array) for array in arrays]
        for name, shape, array in zip(self.names, self.shapes, checked, strict=True):
            if array.shape != shape:
                raise ValueError(f"weight {name} must have shape {shape}; got {array.shape}")
            if array.dtype.kind not in "fiu" or not np.isfinite(array).all():
                raise ValueError(f"weight {name} must hold finite real numbers")
        self._assign(checked)

    @abc.abstractmethod
    def _assign(self, arrays: list[np.ndarray]) -> None:
        """Install already validated weight arrays."""

    def train(self, epochs: int | None = None) -> float:
        """Train task.local_epochs (or `epochs`) epochs, each in a fresh order drawn from the node's
        shuffle stream, and return the training loss of the last epoch."""
        epochs = self.task.local_epochs if epochs is None else check_int("epochs", epochs, low=1)
        run_epoch = self._make_epoch()
        for _ in range(epochs):
            loss = run_epoch(self._shuffle_rng.permutation(self.num_examples))
        return loss

    @abc.abstractmethod
    def _make_epoch(self) -> Callable[[np.ndarray], float]:
        """Epoch function for one train() call (fresh optimiser state): trains over the training
        examples in the given order and returns the epoch's training loss."""

    @abc.abstractmethod
    def evaluate(self) -> tuple[float, float]:
        """(loss, accuracy) on the global held-out test set, the same for every node."""
