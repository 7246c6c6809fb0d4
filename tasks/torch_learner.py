"""TorchLearner: a torch network trained with plain SGD and cross-entropy on one node's data."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.nn import functional

from .config import TaskConfig
from .data import Dataset
from .initializers import initial_weights
from .learner import Learner
from .torch_models import build_module


@torch.no_grad()
def _sgd_step(
    parameters: list[torch.Tensor], buffers: list[torch.Tensor], lr: float, momentum: float
) -> None:
    """torch.optim.SGD's update (no dampening, weight decay or Nesterov), written out because
    constructing a torch.optim optimiser imports torch._dynamo: 1 s and ~75 MB per process."""
    steps = [p.grad for p in parameters]
    if momentum:
        if buffers:
            for buffer, grad in zip(buffers, steps, strict=True):
                buffer.mul_(momentum).add_(grad)
        else:
            buffers.extend(grad.clone() for grad in steps)
        steps = buffers
    for p, step in zip(parameters, steps, strict=True):
        p.add_(step, alpha=-lr)


class TorchLearner(Learner):
    """MLP or CNN; weights travel as the state_dict tensors (float32), named by their keys."""

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
        torch.set_num_threads(task.threads)
        self._model = build_module(task.model, data.x_train.shape[1], data.num_classes, task.hidden)
        state = self._model.state_dict()
        self.names = tuple(state)
        # numpy views sharing the parameters' memory: reads and writes need no torch conversion
        self._views = [tensor.numpy() for tensor in state.values()]
        self.shapes = tuple(view.shape for view in self._views)
        self._x_train, self._x_test = torch.from_numpy(data.x_train), torch.from_numpy(data.x_test)
        self._y_train, self._y_test = torch.from_numpy(data.y_train), torch.from_numpy(data.y_test)
        self.set_weights(initial_weights(self.shapes, init_rng))

    def get_weights(self) -> list[np.ndarray]:
        """Fresh float32 copies of the state_dict tensors."""
        return [view.copy() for view in self._views]

    def _assign(self, arrays: list[np.ndarray]) -> None:
        """Copy the arrays into the parameters in place (cast to float32)."""
        for view, array in zip(self._views, arrays, strict=True):
            view[...] = array

    def _make_epoch(self) -> Callable[[np.ndarray], float]:
        """Minibatch SGD with fresh momentum buffers (none carried across train() calls); an epoch
        returns the mean of its batch losses, each taken before that batch's update."""
        parameters = list(self._model.parameters())
        buffers: list[torch.Tensor] = []

        def epoch(order: np.ndarray) -> float:
            self._model.train()
            total = 0.0
            for start in range(0, len(order), self.task.batch_size):
                index = torch.from_numpy(order[start : start + self.task.batch_size])
                self._model.zero_grad(set_to_none=True)
                logits = self._model(self._x_train[index])
                loss = functional.cross_entropy(logits, self._y_train[index])
                loss.backward()
                _sgd_step(parameters, buffers, self.task.learning_rate, self.task.momentum)
                total += loss.item() * len(index)
            return total / len(order)

        return epoch

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """Cross-entropy and accuracy on the global test set."""
        self._model.eval()
        logits = self._model(self._x_test)
        loss = functional.cross_entropy(logits, self._y_test).item()
        accuracy = (logits.argmax(dim=1) == self._y_test).float().mean().item()
        return loss, accuracy
