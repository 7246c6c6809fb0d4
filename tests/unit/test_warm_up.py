"""The fork server's warm-up of the run's model (`forkserver_process.warm_up`, the torch family's
`torch_learner.warm_up`): it runs the model in training (with gradients) and in evaluation at the
nodes' batch sizes, leaves the global random state and the thread count as they were, runs only
when the preload carries a task, and a model that fails in it is skipped, not fatal."""

from __future__ import annotations

import dataclasses
import json
import os
import threading

import numpy as np
import pytest
import torch

from fedgossip.launcher.supervision.forkserver import preload_for
from fedgossip.launcher.supervision.forkserver_process import warm_up
from fedgossip.tasks import TaskConfig
from fedgossip.tasks import registry as model_registry
from fedgossip.tasks.torch_learner import _EVAL_BATCH

CALLS: list[tuple[bool, bool, tuple[int, ...]]] = []  # (training, gradients on, batch shape) per forward


class Recording(torch.nn.Module):
    """One linear layer that records each forward call in CALLS; `fail` raises in training."""

    def __init__(self, features: int, num_classes: int, fail: bool) -> None:
        super().__init__()
        self.fail = fail
        self.linear = torch.nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        CALLS.append((self.training, torch.is_grad_enabled(), tuple(x.shape)))
        if self.fail and self.training:
            raise RuntimeError("no training here")
        return self.linear(x.flatten(1))


def recording_net(input_shape, num_classes):
    return Recording(int(np.prod(input_shape)), num_classes, fail=False)


def failing_net(input_shape, num_classes):
    return Recording(int(np.prod(input_shape)), num_classes, fail=True)


@pytest.fixture
def models(monkeypatch):
    """The two factories above registered as models "recording" and "failing"; CALLS emptied."""
    for name, factory in (("recording", "recording_net"), ("failing", "failing_net")):
        entry = model_registry.ModelEntry(f"tests.unit.test_warm_up:{factory}", images=True)
        monkeypatch.setitem(model_registry.MODELS, name, entry)
    CALLS.clear()


def threads() -> tuple[int, int]:
    return threading.active_count(), len(os.listdir("/proc/self/task"))


def test_the_warm_up_trains_and_evaluates_the_model_leaving_rng_and_threads_alone(models):
    task = TaskConfig(model="recording", dataset="digits", batch_size=16, momentum=0.9, weight_decay=1e-4)
    torch.manual_seed(7)
    np.random.seed(7)
    torch_state, numpy_state, before = torch.get_rng_state(), np.random.get_state(), threads()
    warm_up(preload_for("recording", "digits", warm=task))
    training = [shape for trains, grads, shape in CALLS if trains and grads]
    evaluation = [shape for trains, grads, shape in CALLS if not trains and not grads]
    assert training == [(16, 1, 8, 8)]  # one epoch of one minibatch of task.batch_size
    assert (_EVAL_BATCH, 1, 8, 8) in evaluation  # an evaluation batch (beside the build's check)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), numpy_state, strict=True))
    assert threads() == before


def test_the_preload_carries_the_task_only_for_a_bundled_dataset_and_a_family_with_a_warm_up():
    task = TaskConfig(model="lenet5", dataset="mnist-5k", batch_size=64)
    carried = preload_for("lenet5", "mnist-5k", warm=task).warm
    assert TaskConfig.from_dict(json.loads(carried)) == task
    assert preload_for("lenet5", "mnist-5k").warm == ""  # no task given
    synthetic = dataclasses.replace(task, model="mlp", dataset="synthetic")
    assert preload_for("mlp", "synthetic", warm=synthetic).warm == ""  # the shape needs the data
    linear = dataclasses.replace(task, model="linear", dataset="digits")
    assert preload_for("linear", "digits", warm=linear).warm == ""  # its family has no warm-up


def test_no_warm_up_runs_without_a_task_or_with_several_threads(models):
    warm_up(preload_for("recording", "digits"))
    several = TaskConfig(model="recording", dataset="digits", threads=2)
    warm_up(preload_for("recording", "digits", warm=several))  # would start torch's thread pool
    assert CALLS == []


def test_a_model_failing_in_the_warm_up_is_reported_and_skipped(models, capsys):
    warm_up(preload_for("failing", "digits", warm=TaskConfig(model="failing", dataset="digits")))
    assert (True, True, (32, 1, 8, 8)) in CALLS  # it did try to train
    assert "warm-up of 'failing' skipped: no training here" in capsys.readouterr().err
