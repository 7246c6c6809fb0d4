"""Learners: reach the accuracy bar, move weights faithfully, start and train deterministically."""

import numpy as np
import pytest
import torch

from fedgossip.tasks import Learner, TaskConfig, build_learner
from fedgossip.tasks.torch_learner import _sgd_step

# Settings that reach 0.9 test accuracy on digits from one node holding the whole training set.
RECIPES = {
    "mlp": TaskConfig(model="mlp", learning_rate=0.05, momentum=0.9, local_epochs=8),
    "cnn": TaskConfig(model="cnn", learning_rate=0.05, momentum=0.9, local_epochs=8),
    "linear": TaskConfig(model="linear", learning_rate=0.05, local_epochs=3),
}
MODELS = list(RECIPES)


@pytest.mark.parametrize("model", MODELS)
def test_reaches_the_accuracy_bar_on_digits(model):
    learner = build_learner(RECIPES[model], node=0, num_nodes=1, seed=0)
    _, before = learner.evaluate()
    loss = learner.train()
    test_loss, accuracy = learner.evaluate()
    assert before < 0.3 and accuracy >= 0.9
    assert 0 < loss < 0.5 and 0 < test_loss < 0.5


@pytest.mark.parametrize("model", MODELS)
def test_weights_round_trip(model):
    learner = build_learner(TaskConfig(model=model), 0, 4, seed=1)
    assert isinstance(learner, Learner) and learner.num_examples == 1437 // 4 + 1
    weights = learner.get_weights()
    assert len(weights) == len(learner.names) == len(learner.shapes)
    assert [w.shape for w in weights] == list(learner.shapes)
    changed = [w + 0.5 for w in weights]
    learner.set_weights(changed)
    for got, sent in zip(learner.get_weights(), changed, strict=True):
        np.testing.assert_array_equal(got, sent)
    got = learner.get_weights()
    got[0][...] = 7.0
    assert not np.any(learner.get_weights()[0] == 7.0)


def test_torch_names_and_dtype():
    learner = build_learner(TaskConfig(), 0, 2, seed=0)
    assert learner.names[:2] == ("net.0.weight", "net.0.bias")
    assert all(w.dtype == np.float32 for w in learner.get_weights())


def test_binary_linear_weights_travel_as_a_zero_sum_pair():
    learner = build_learner(TaskConfig(dataset="breast_cancer", model="linear"), 0, 2, seed=0)
    assert learner.names == ("coef", "intercept") and learner.shapes == ((2, 30), (2,))
    coef, intercept = learner.get_weights()
    np.testing.assert_allclose(coef[0], -coef[1])
    assert np.std(coef) > 0.1
    learner.set_weights([np.stack([coef[0] + 1.0, coef[1] + 1.0]), intercept])
    np.testing.assert_allclose(learner.get_weights()[0], coef)
    learner.train()
    assert learner.evaluate()[1] > 0.9


@pytest.mark.parametrize("model", MODELS)
def test_set_weights_validates(model):
    learner = build_learner(TaskConfig(model=model), 0, 2, seed=0)
    weights = learner.get_weights()
    with pytest.raises(ValueError, match=f"expected {len(weights)} weight arrays"):
        learner.set_weights(weights[:-1])
    with pytest.raises(ValueError, match="must have shape"):
        learner.set_weights([weights[0][:-1], *weights[1:]])
    with pytest.raises(ValueError, match="finite"):
        learner.set_weights([np.full_like(weights[0], np.nan), *weights[1:]])


@pytest.mark.parametrize("model", MODELS)
def test_shared_init_is_identical_and_own_init_differs(model):
    def initial(node, init):
        return build_learner(TaskConfig(model=model, init=init), node, 3, seed=2).get_weights()

    for a, b in zip(initial(0, "shared"), initial(2, "shared"), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(initial(0, "own")[0], initial(2, "own")[0])
    assert not np.array_equal(
        initial(0, "own")[0], build_learner(TaskConfig(model=model), 0, 3, seed=3).get_weights()[0]
    )


@pytest.mark.parametrize("model", MODELS)
def test_initial_weights_are_glorot_with_zero_biases(model):
    learner = build_learner(TaskConfig(model=model), 0, 2, seed=0)
    for name, weight in zip(learner.names, learner.get_weights(), strict=True):
        if weight.ndim == 1:
            assert not weight.any(), name
        elif model != "linear":
            receptive = int(np.prod(weight.shape[2:]))
            limit = np.sqrt(6 / ((weight.shape[0] + weight.shape[1]) * receptive))
            assert np.abs(weight).max() <= limit and np.abs(weight).max() > 0.9 * limit, name


@pytest.mark.parametrize("model", MODELS)
def test_training_is_deterministic(model):
    task = TaskConfig(model=model, partition="dirichlet", label_noise=0.2, feature_noise=0.1)

    def trained(seed):
        learner = build_learner(task, 1, 4, seed=seed)
        losses = [learner.train(), learner.train(epochs=2)]
        return losses, learner.get_weights()

    (losses, weights), (losses_again, weights_again) = trained(5), trained(5)
    assert losses == losses_again
    for a, b in zip(weights, weights_again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(trained(6)[1][0], weights[0])


def test_evaluation_uses_the_global_test_set():
    task = TaskConfig(init="shared", partition="shards")
    assert build_learner(task, 0, 4, seed=0).evaluate() == build_learner(task, 3, 4, seed=0).evaluate()


@pytest.mark.parametrize("model", ["mlp", "linear"])
def test_other_datasets_learn(model):
    for dataset in ("breast_cancer", "synthetic"):
        learner = build_learner(TaskConfig(dataset=dataset, model=model), 0, 1, seed=0)
        learner.train(epochs=5)
        assert learner.evaluate()[1] > 0.75, dataset


def test_build_learner_validates_node():
    with pytest.raises(ValueError, match=r"node must be an integer in \[0, 3\]"):
        build_learner(TaskConfig(), 4, 4, seed=0)
    with pytest.raises(ValueError, match=r"task\.label_noise has 2 values"):
        build_learner(TaskConfig(label_noise=(0.1, 0.2)), 0, 3, seed=0)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_step_matches_torch_optim(momentum):
    torch.manual_seed(0)
    ours, reference = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    reference.load_state_dict(ours.state_dict())
    optimiser = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=momentum)
    buffers = {}
    for _ in range(3):
        x = torch.randn(8, 5)
        for model in (ours, reference):
            model.zero_grad()
            model(x).square().sum().backward()
        _sgd_step(list(ours.parameters()), buffers, 0.1, momentum)
        optimiser.step()
    for a, b in zip(ours.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_torch_global_random_state_is_untouched():
    state = torch.get_rng_state()
    learner = build_learner(TaskConfig(model="cnn"), 0, 2, seed=0)
    learner.train()
    assert torch.equal(state, torch.get_rng_state())


def test_shuffle_state_carries_the_epoch_order_across_rebuilt_learners():
    """A learner rebuilt with the saved shuffle state trains exactly as the one that kept going."""
    from fedgossip.tasks import TaskConfig, build_learner

    task = TaskConfig(model="linear")
    kept = build_learner(task, 0, 4, seed=3)
    kept.train()
    rebuilt = build_learner(task, 0, 4, seed=3)
    rebuilt.set_weights(kept.get_weights())
    rebuilt.shuffle_state = kept.shuffle_state
    kept.train()
    rebuilt.train()
    for a, b in zip(kept.get_weights(), rebuilt.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("seed", [0, 7, 2**40 + 3])
def test_seeding_for_the_cpu_gives_torch_manual_seeds_generator_state_bit_for_bit(seed):
    from fedgossip.tasks.torch_build import seed_global

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        expected = torch.get_rng_state()
        seed_global(seed + 1, torch.device("cpu"))
        assert not torch.equal(torch.get_rng_state(), expected)
        seed_global(seed, torch.device("cpu"))
        assert torch.equal(torch.get_rng_state(), expected)
        first = torch.rand(5)
        torch.manual_seed(seed)
        assert torch.equal(torch.rand(5), first)
