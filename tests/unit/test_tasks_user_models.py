"""Users' torch models (`task.model = "module:function"`): trained by our learner, BatchNorm
buffers exchanged and marked local, every mistake in the factory a clear ValueError."""

from __future__ import annotations

import dataclasses
import sys
import textwrap

import numpy as np
import pytest
import torch

from fedgossip.client.gossip.transport.wire import ModelAssembler, assemble, encode
from fedgossip.schema.tensors import specs_of
from fedgossip.tasks import TaskConfig, build_learner
from tests.support import USER_MODULE


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module `user_nets` on sys.path, written into a temporary folder."""
    (tmp_path / "user_nets.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "user_nets"
    sys.modules.pop("user_nets", None)


BN_BUFFERS = {
    f"{layer}.{name}"
    for layer in ("1", "5")
    for name in ("running_mean", "running_var", "num_batches_tracked")
}


def test_a_batchnorm_user_model_learns_digits_and_its_buffers_travel(user_module):
    task = TaskConfig(model=f"{user_module}:bn_net", learning_rate=0.05, momentum=0.9, local_epochs=4)
    learner = build_learner(task, node=0, num_nodes=1, seed=0)
    assert learner.local_names == BN_BUFFERS
    dtypes = dict(zip(learner.names, (w.dtype for w in learner.get_weights()), strict=True))
    assert dtypes["1.num_batches_tracked"] == np.int64 and dtypes["0.weight"] == np.float32
    initial = dict(zip(learner.names, learner.get_weights(), strict=True))
    np.testing.assert_array_equal(initial["1.running_var"], np.ones(8))  # the factory's BatchNorm init
    np.testing.assert_array_equal(initial["1.weight"], np.ones(8))
    assert not initial["0.bias"].any() and initial["1.num_batches_tracked"] == 0
    learner.train()
    _, accuracy = learner.evaluate()
    assert accuracy >= 0.85  # about 0.95 after 4 epochs
    trained = dict(zip(learner.names, learner.get_weights(), strict=True))
    batches = -(-learner.num_examples // task.batch_size)
    assert trained["1.num_batches_tracked"] == 4 * batches  # the buffers were trained, not frozen
    assert not np.allclose(trained["1.running_mean"], 0)

    # every tensor, buffers included, survives the gossip wire and set_weights into a fresh learner
    chunks = encode(0, 1, learner.num_examples, learner.names, learner.get_weights())
    specs = specs_of(learner.names, learner.get_weights())
    received = assemble(iter(chunks), ModelAssembler(specs, senders=None, rounds=(1, 1), max_bytes=1 << 20))
    other = build_learner(dataclasses.replace(task, init="shared"), node=0, num_nodes=1, seed=0)
    assert not np.array_equal(other.get_weights()[0], trained["0.weight"])
    other.set_weights(received.arrays)
    for name, got in zip(other.names, other.get_weights(), strict=True):
        np.testing.assert_array_equal(got, trained[name], err_msg=name)
        assert got.dtype == trained[name].dtype
    assert other.evaluate() == learner.evaluate()


def test_integer_buffers_refuse_non_integer_values(user_module):
    learner = build_learner(TaskConfig(model=f"{user_module}:bn_net"), 0, 2, seed=0)
    weights = learner.get_weights()
    index = learner.names.index("1.num_batches_tracked")
    weights[index] = np.array(2.5)
    with pytest.raises(
        ValueError, match=r"weight 1\.num_batches_tracked holds integers \(int64\); got float64"
    ):
        learner.set_weights(weights)


def test_our_models_resolve_through_the_same_path_as_users():
    by_name = build_learner(TaskConfig(model="mlp"), 0, 2, seed=0)
    by_path = build_learner(TaskConfig(model="fedgossip.tasks.torch_models:mlp"), 0, 2, seed=0)
    assert by_name.names == by_path.names
    for a, b in zip(by_name.get_weights(), by_path.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_dropout_is_seeded_per_node_and_leaves_torch_global_state(user_module):
    task = TaskConfig(model=f"{user_module}:dropout_net", init="shared")
    state = torch.get_rng_state()

    def trained(node):
        learner = build_learner(task, node, 2, seed=0)
        learner.train()
        return learner.get_weights()

    first, again, other = trained(0), trained(0), trained(1)
    assert torch.equal(state, torch.get_rng_state())
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("no_such_module:net", r"cannot import module 'no_such_module' \(ModuleNotFoundError"),
        ("{m}:missing", r"module 'user_nets' has no attribute 'missing'"),
        ("{m}:NOT_CALLABLE", r"'NOT_CALLABLE' is not callable"),
        ("{m}:raises", r"the factory raised RuntimeError: no GPU here"),
        ("{m}:not_a_module", r"the factory returned str, not a torch\.nn\.Module"),
        ("{m}:wrong_output", r"must be \(batch, num_classes\) = \(2, 10\) logits; got \(2, 11\)"),
        ("{m}:wrong_input", r"forward on a batch of shape \(2, 1, 8, 8\) raised RuntimeError"),
        ("{m}:no_parameters", r"the module has no trainable parameters"),
        ("{m}:float64", r"are not float32"),
    ],
)
def test_factory_mistakes_are_clear_errors(user_module, model, message):
    spec = model.format(m=user_module)
    with pytest.raises(ValueError, match=rf"task\.model '{spec}': .*{message}"):
        build_learner(TaskConfig(model=spec), 0, 2, seed=0)


def test_image_models_refuse_non_image_data(tmp_path):
    path = tmp_path / "tabular.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.normal(size=(100, 5)).astype(np.float32), y=np.arange(100) % 2)
    for model in ("cnn", "lenet5"):
        with pytest.raises(ValueError, match=rf"the {model} model needs images .*have shape \(5,\)"):
            build_learner(TaskConfig(dataset="npz", path=str(path), model=model), 0, 1, seed=0)
    with pytest.raises(ValueError, match=r"the lenet5 model needs images of at least 12x12; got 8x8"):
        build_learner(TaskConfig(model="lenet5"), 0, 1, seed=0)


def test_device_cpu_auto_and_missing_cuda():
    assert build_learner(TaskConfig(device="auto"), 0, 2, seed=0).device.type == (
        "cuda" if torch.cuda.is_available() else "cpu"
    )
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r'task\.device is "cuda" but torch sees no CUDA device'):
            build_learner(TaskConfig(device="cuda"), 0, 2, seed=0)


@pytest.mark.parametrize("model", ["{m}:dropout_net", "mlp"])
def test_learners_trained_in_threads_at_once_equal_those_trained_one_by_one(user_module, model):
    """Peers of one process train in threads: a model that draws from torch's RNG (dropout) swaps
    in its own state under the lock; one that draws nothing (found in its first epoch) trains
    without the lock, at once with the others; the weights are those of one-by-one training."""
    from concurrent.futures import ThreadPoolExecutor

    task = TaskConfig(model=model.format(m=user_module), local_epochs=2)

    def learners():
        return [build_learner(task, node, 4, seed=3) for node in range(4)]

    alone = learners()
    for learner in alone:
        learner.train()
        learner.train()
    together = learners()
    with ThreadPoolExecutor(4) as pool:
        for _ in range(2):
            list(pool.map(lambda learner: learner.train(), together))
    for a, b in zip(alone, together, strict=True):
        for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
            np.testing.assert_array_equal(x, y)
    assert {learner._draws for learner in together} == {model != "mlp"}
