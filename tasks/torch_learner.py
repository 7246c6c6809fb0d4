"""TorchLearner: a torch network trained with plain SGD and cross-entropy on one node's data."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.nn import functional

from . import compute_gate
from .config import TaskConfig
from .data import Dataset, bundled_source
from .dp_accounting import DpSgdSpec
from .dp_sgd import DpSgd, check_private_module
from .learner import Learner
from .torch_build import RNG_LOCK, build_module, initial_state, select_device

# Test examples per forward pass in evaluate(): bounds the activation memory on large test sets
# (LeNet-5 on a 10,000-image test set: 2048 at a time peaks ~180 MB higher than 128, which costs
# ~25% more time than 256).
_EVAL_BATCH = 128


def _child_seed(rng: np.random.Generator) -> int:
    """A torch seed from a child of `rng`'s seed sequence; rng's own stream is not advanced."""
    return int(rng.spawn(1)[0].integers(2**63))


@torch.no_grad()
def _sgd_step(
    parameters: Sequence[torch.Tensor],
    buffers: dict[int, torch.Tensor],
    lr: float,
    momentum: float,
    *,
    weight_decay: float = 0.0,
    mu: float = 0.0,
    anchors: Sequence[torch.Tensor] = (),
) -> None:
    """torch.optim.SGD's update (no dampening or Nesterov; parameters without a gradient are
    skipped), with FedProx's proximal gradient mu * (p - anchor) added to the weight-decayed
    gradient (the gradient of mu/2 * ||p - anchor||^2). Written out because constructing a
    torch.optim optimiser imports torch._dynamo: 1 s and ~75 MB per process. Momentum buffers
    live in `buffers`, by parameter index."""
    for index, p in enumerate(parameters):
        step = p.grad
        if step is None:
            continue
        if weight_decay:
            step = step.add(p, alpha=weight_decay)
        if mu:
            step = step.add(p - anchors[index], alpha=mu)
        if momentum:
            buffer = buffers.get(index)
            if buffer is None:
                buffer = buffers[index] = step.clone()
            else:
                buffer.mul_(momentum).add_(step)
            step = buffer
        p.add_(step, alpha=-lr)


class TorchLearner(Learner):
    """Any torch network of task.model; its weights travel as the state_dict tensors, named by
    their keys, in their dtypes (float32; int64 for BatchNorm's num_batches_tracked). The
    buffers among them (BatchNorm running statistics) are `local_names`."""

    def __init__(
        self,
        task: TaskConfig,
        data: Dataset,
        *,
        node: int,
        init_rng: np.random.Generator,
        shuffle_rng: np.random.Generator,
        dp_sgd: DpSgdSpec | None = None,
    ) -> None:
        super().__init__(task, data, node=node, shuffle_rng=shuffle_rng)
        torch.set_num_threads(task.threads)
        self.device = select_device(task.device)
        shape = (-1, *data.input_shape)
        x_train = torch.from_numpy(data.x_train).view(shape)
        module = build_module(task, x_train, data.num_classes, _child_seed(init_rng))
        initial = initial_state(module, init_rng)
        self._model = module.to(self.device)
        state = self._model.state_dict()  # detached tensors sharing the parameters' memory
        self.names = tuple(state)
        self._state = list(state.values())
        # on the CPU, numpy views of the same memory: reads and writes need no torch conversion
        self._views = [t.numpy() for t in self._state] if self.device.type == "cpu" else None
        self.shapes = tuple(tuple(t.shape) for t in self._state)
        self.dtypes = tuple(np.dtype(str(t.dtype).removeprefix("torch.")) for t in self._state)
        buffers = {name for name, _ in self._model.named_buffers()}
        self._local_names = frozenset(name for name in self.names if name in buffers)
        self._parameters = [p for p in self._model.parameters() if p.requires_grad]
        self._x_train = x_train.to(self.device)
        self._y_train = torch.from_numpy(data.y_train).to(self.device)
        # (x, y) of evaluate(whole): the evaluation subset and the whole test set (the same
        # tensors when there is no subset)
        self._tests = {
            whole: (torch.from_numpy(x).view(shape).to(self.device), torch.from_numpy(y).to(self.device))
            for whole, (x, y) in ((w, data.test_set(w)) for w in (False, True))
        }
        # the training RNG (dropout and the like): seeded per node, kept apart from torch's global one
        self._torch_rng = torch.Generator().manual_seed(_child_seed(shuffle_rng)).get_state()
        # whether training draws from torch's RNG (dropout...): None until the first epoch tells.
        # A model whose first epoch drew nothing trains without swapping the global RNG state,
        # so peers of one process (threads) train at once instead of one at a time (RNG_LOCK).
        self._draws: bool | None = None
        self._kept_buffers: dict[int, torch.Tensor] = {}  # momentum across train() calls (keep_momentum)
        self._dp = None if dp_sgd is None else self._private(dp_sgd, module)
        self.set_weights(initial)

    def _private(self, spec: DpSgdSpec, module: torch.nn.Module) -> DpSgd:
        """The node's DP-SGD (its layers checked), calibrated to the steps of one round."""
        check_private_module(module, self.task.model)
        batches = max(1, round(self.num_examples / self.task.batch_size))  # as many as `_batches` draws
        steps = self.task.local_steps or self.task.local_epochs * batches
        return DpSgd(spec, module, self.num_examples, self.task.batch_size, steps)

    @property
    def epsilon(self) -> float | None:
        """The epsilon DP-SGD has spent so far (at privacy.delta); None without DP-SGD."""
        return None if self._dp is None else self._dp.epsilon

    @property
    def privacy_steps(self) -> int:
        """The DP-SGD steps taken so far (0 without DP-SGD)."""
        return 0 if self._dp is None else self._dp.steps

    @privacy_steps.setter
    def privacy_steps(self, steps: int) -> None:
        if self._dp is None:
            Learner.privacy_steps.fset(self, steps)  # type: ignore[attr-defined]
        else:
            self._dp.restore(steps)

    @property
    def local_names(self) -> frozenset[str]:
        """The state_dict tensors that are buffers, not trained parameters (BatchNorm running_mean,
        running_var, num_batches_tracked): local statistics that merges should keep own."""
        return self._local_names

    @property
    def rng_state(self) -> dict:
        """The minibatch order's generator state and a copy of the training RNG's (dropout...)."""
        return {**super().rng_state, "torch": self._torch_rng.numpy().copy()}

    @rng_state.setter
    def rng_state(self, state: dict) -> None:
        Learner.rng_state.fset(self, state)
        self._torch_rng = torch.from_numpy(np.array(state["torch"], dtype=np.uint8))

    @property
    def momentum_state(self) -> dict[str, np.ndarray]:
        """Copies of the momentum buffers kept across train() calls (task.keep_momentum), by the
        parameter's position; empty without keep_momentum or before the first training step."""
        return {str(index): buffer.cpu().numpy().copy() for index, buffer in self._kept_buffers.items()}

    @momentum_state.setter
    def momentum_state(self, state: dict[str, np.ndarray]) -> None:
        """Take over kept buffers (the node's own, from its previous round's learner): trusted."""
        if state and not self.task.keep_momentum:
            raise ValueError("momentum buffers are kept only with task.keep_momentum = true")
        self._kept_buffers.clear()  # in place: an epoch function made before sees them
        for index, buffer in state.items():
            kept = torch.from_numpy(np.array(buffer, dtype=np.float32))
            self._kept_buffers[int(index)] = kept.to(self.device)

    def get_weights(self) -> list[np.ndarray]:
        """Fresh CPU copies of the state_dict tensors, in their dtypes."""
        if self._views is not None:
            return [view.copy() for view in self._views]
        return [t.cpu().numpy() for t in self._state]

    def assign(self, arrays: list[np.ndarray]) -> None:
        """Copy the arrays into the state tensors in place (cast to their dtypes)."""
        if self._views is not None:
            for view, array in zip(self._views, arrays, strict=True):
                view[...] = array
            return
        for tensor, dtype, array in zip(self._state, self.dtypes, arrays, strict=True):
            tensor.copy_(torch.from_numpy(np.array(array, dtype=dtype)))

    def _make_epoch(self, mu: float) -> Callable[[np.ndarray], float]:
        """Minibatch SGD with fresh momentum buffers (with task.keep_momentum, the learner's kept
        ones, carried across train() calls) and, for mu > 0, the proximal term towards the
        weights at the start of this call; an epoch returns the mean of its batch losses, each
        taken before that batch's update (without the proximal term)."""
        task = self.task
        buffers: dict[int, torch.Tensor] = self._kept_buffers if task.keep_momentum else {}
        anchors = [p.detach().clone() for p in self._parameters] if mu else []

        def batches(order: np.ndarray) -> float:
            total, seen = 0.0, 0
            for batch in self._batches(order):
                index = torch.from_numpy(batch).to(self.device)
                self._model.zero_grad(set_to_none=True)
                if self._dp is not None:  # the batch's noisy clipped gradient, its mean loss
                    loss = self._dp.noisy_gradient(
                        self._parameters, self._x_train[index], self._y_train[index], self._shuffle_rng
                    )
                else:
                    mean = functional.cross_entropy(self._model(self._x_train[index]), self._y_train[index])
                    mean.backward()
                    loss = mean.item()
                _sgd_step(
                    self._parameters,
                    buffers,
                    task.learning_rate,
                    task.momentum,
                    weight_decay=task.weight_decay,
                    mu=mu,
                    anchors=anchors,
                )
                total += loss * len(index)
                seen += len(index)
            return total / max(1, seen)

        def epoch(order: np.ndarray) -> float:
            self._model.train()
            if self._draws is False:  # draws nothing from torch's RNG: no swap, no lock
                return batches(order)
            with RNG_LOCK, torch.random.fork_rng(devices=[]):
                torch.set_rng_state(self._torch_rng)
                loss = batches(order)
                state = torch.get_rng_state()
                self._draws = self._draws or not torch.equal(state, self._torch_rng)
                self._torch_rng = state
            return loss

        return epoch

    def _batches(self, order: np.ndarray) -> list[np.ndarray]:
        """Minibatches of task.batch_size in `order`; with batch statistics (a model with buffers,
        such as BatchNorm) a last batch of one example joins the one before (BatchNorm cannot
        train on a single example). With DP-SGD, as many Poisson-sampled batches instead (drawn
        from the shuffle stream: what its accountant assumes)."""
        size = self.task.batch_size
        if self._dp is not None:
            return self._dp.epoch_batches(self._shuffle_rng, max(1, round(len(order) / size)))
        starts = list(range(0, len(order), size))
        if self._local_names and len(starts) > 1 and len(order) - starts[-1] == 1:
            starts.pop()
        return np.split(order, starts[1:])

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> np.ndarray:
        """The arg-max class of each row of `x` (eval mode, in batches)."""
        self._model.eval()
        inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).view(-1, *self.data.input_shape)
        return np.concatenate(
            [
                self._model(inputs[start : start + _EVAL_BATCH].to(self.device)).argmax(dim=1).cpu().numpy()
                for start in range(0, len(inputs), _EVAL_BATCH)
            ]
            or [np.zeros(0, dtype=np.int64)]
        )

    @torch.no_grad()
    def evaluate(self, whole: bool = False) -> tuple[float, float]:
        """Cross-entropy and accuracy on the global test set, its subset unless `whole` (eval
        mode: BatchNorm uses its running statistics)."""
        self._model.eval()
        x_test, y_test = self._tests[whole]
        loss, correct = 0.0, 0
        with compute_gate.held():
            for start in range(0, len(y_test), _EVAL_BATCH):
                logits = self._model(x_test[start : start + _EVAL_BATCH])
                labels = y_test[start : start + _EVAL_BATCH]
                loss += functional.cross_entropy(logits, labels, reduction="sum").item()
                correct += int((logits.argmax(dim=1) == labels).sum().item())
        return loss / len(y_test), correct / len(y_test)


def warm_up(task: TaskConfig) -> None:
    """Run task.model once as a node does, on zeros shaped as task.dataset's examples (a bundled
    dataset): a training epoch of one minibatch of task.batch_size and an evaluation batch of
    _EVAL_BATCH, through a TorchLearner. A fork server calls it before forking (the torch family's
    `warm_up`, `tasks.registry`): torch's first-use work (its kernels' setup, the dispatcher's,
    autograd's and the allocator's caches) is then done once and inherited by every node instead
    of paid on each one's first calls. Only single-threaded on the CPU (more threads would start
    torch's thread pool, which a fork must not copy): otherwise it does nothing. Torch's global
    random state is left as it was (the learner draws from generators of its own; fork_rng
    restores the global one); numpy's global one is never drawn from."""
    if task.threads != 1 or select_device(task.device).type != "cpu":
        return
    source = bundled_source(task, 0)
    features = int(np.prod(source.input_shape))
    labels = np.arange(max(task.batch_size, _EVAL_BATCH)) % source.num_classes
    data = Dataset(
        x_train=np.zeros((task.batch_size, features), dtype=np.float32),
        y_train=labels[: task.batch_size],
        x_test=np.zeros((_EVAL_BATCH, features), dtype=np.float32),
        y_test=labels[:_EVAL_BATCH],
        num_classes=source.num_classes,
        input_shape=source.input_shape,
    )
    with torch.random.fork_rng(devices=[]):
        rng = np.random.default_rng(0)
        learner = TorchLearner(task, data, node=0, init_rng=rng, shuffle_rng=rng)
        learner.train(epochs=1)
        learner.evaluate()
