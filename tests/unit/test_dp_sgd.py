"""Node-level DP-SGD (tasks/dp_sgd.py): the noisy clipped gradient against an independent
per-example computation, the noise's spread against what the accountant is told, epsilon against
published values, the target-epsilon calibration, and the refusals of what it cannot train."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from fedgossip.config import load_config
from fedgossip.tasks import TaskConfig, build_learner
from fedgossip.tasks.dp_accounting import DpSgdSpec
from fedgossip.tasks.dp_sgd import DpSgd, check_private_module

pytestmark = pytest.mark.timeout(60)

SPEC = DpSgdSpec(noise_multiplier=1.3, max_grad_norm=0.5, delta=1e-5, target_epsilon=0.0, rounds=1)


def _tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))


def _per_example_clipped_sum(module: nn.Module, x: torch.Tensor, y: torch.Tensor, clip: float):
    """Each example's gradient by its own backward pass, clipped to `clip`, summed; and the norms."""
    total = [torch.zeros_like(p) for p in module.parameters()]
    norms = []
    for i in range(len(y)):
        module.zero_grad()
        nn.functional.cross_entropy(module(x[i : i + 1]), y[i : i + 1]).backward()
        grads = [p.grad.detach().clone() for p in module.parameters()]
        norm = float(torch.sqrt(sum((g**2).sum() for g in grads)))
        norms.append(norm)
        scale = min(1.0, clip / norm)
        total = [t + scale * g for t, g in zip(total, grads, strict=True)]
    return total, np.array(norms)


def test_the_noisy_gradient_is_the_clipped_per_example_sum_plus_the_seeded_noise():
    module = _tiny()
    reference = _tiny()  # the same weights, never hooked
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 5, generator=generator) * 3, torch.tensor([0, 1, 2, 0, 1, 2])
    spec = dataclasses.replace(SPEC, max_grad_norm=2.0)
    clipped, norms = _per_example_clipped_sum(reference, x, y, spec.max_grad_norm)
    assert (norms > spec.max_grad_norm).any() and (norms < spec.max_grad_norm).any()  # both kinds
    dp = DpSgd(spec, module, examples=24, batch_size=6, steps=4)
    parameters = list(module.parameters())
    loss = dp.noisy_gradient(parameters, x, y, np.random.default_rng(7))
    replay = np.random.default_rng(7)  # the same draws, in parameter order
    std = spec.noise_multiplier * spec.max_grad_norm
    for p, total in zip(parameters, clipped, strict=True):
        noise = torch.from_numpy(replay.standard_normal(tuple(p.shape), dtype=np.float32))
        torch.testing.assert_close(p.grad, (total + std * noise) / 6, rtol=1e-5, atol=1e-6)
    assert loss == pytest.approx(nn.functional.cross_entropy(reference(x), y).item(), rel=1e-6)
    assert dp.accountant.history == [(SPEC.noise_multiplier, 6 / 24, 1)]


def test_the_noise_std_is_sigma_times_the_clipping_norm_over_the_expected_batch():
    module = nn.Linear(50, 40)
    dp = DpSgd(SPEC, module, examples=100, batch_size=10, steps=1)
    parameters = list(module.parameters())
    rng = np.random.default_rng(3)
    draws = []
    for _ in range(20):  # empty batches: the gradient is the noise alone
        dp.noisy_gradient(parameters, torch.zeros(0, 50), torch.zeros(0, dtype=torch.long), rng)
        draws.append(torch.cat([p.grad.ravel() for p in parameters]).numpy())
    spread = np.concatenate(draws).std() * dp.expected_batch  # 40,800 draws: ~0.4% standard error
    assert spread == pytest.approx(SPEC.noise_multiplier * SPEC.max_grad_norm, rel=0.02)
    assert dp.accountant.history == [(SPEC.noise_multiplier, 0.1, 20)]


@pytest.mark.parametrize(
    ("sigma", "epochs", "published"),
    [(1.12, 60, 2.92), (0.6, 30, 9.74), (1.2, 10, 1.20)],
)
def test_epsilon_against_the_tensorflow_privacy_mnist_table(sigma, epochs, published):
    """TF Privacy's MNIST tutorial table (q = 256/60000, 60000 // 256 steps an epoch, delta 1e-5),
    computed with the classic RDP-to-DP conversion eps = min_a rdp(a) + log(1/delta) / (a - 1);
    the node's accountant (Opacus' tighter conversion, Balle et al. 2020) may only be lower."""
    from opacus.accountants.analysis.rdp import compute_rdp

    from fedgossip.tasks.dp_accounting import ALPHAS

    spec = dataclasses.replace(SPEC, noise_multiplier=sigma, delta=1e-5)
    dp = DpSgd(spec, nn.Linear(2, 2), examples=60000, batch_size=256, steps=1)
    dp.restore(epochs * (60000 // 256))
    (noise, rate, steps), *_ = dp.accountant.history
    orders = np.array(ALPHAS)
    rdp = np.array(compute_rdp(q=rate, noise_multiplier=noise, steps=steps, orders=ALPHAS))
    classic = float(np.min(rdp + np.log(1 / 1e-5) / (orders - 1)))
    assert classic == pytest.approx(published, abs=0.01)
    assert 0.75 * published < dp.epsilon <= classic
    assert dp.epsilon == pytest.approx(dp.accountant.get_epsilon(delta=1e-5, alphas=list(ALPHAS)), rel=1e-12)


@pytest.mark.parametrize(("sigma", "releases"), [(0.7, 1), (1.1, 20), (4.0, 500)])
def test_the_gaussian_epsilon_is_opacus_accountant_without_subsampling(sigma, releases):
    from opacus.accountants import RDPAccountant

    from fedgossip.tasks.dp_accounting import ALPHAS, gaussian_epsilon

    accountant = RDPAccountant()
    accountant.history = [(sigma, 1.0, releases)]
    expected = accountant.get_epsilon(delta=1e-5, alphas=list(ALPHAS))
    assert gaussian_epsilon(sigma, releases, 1e-5) == pytest.approx(expected, rel=1e-12)


def test_a_target_epsilon_is_spent_by_the_planned_rounds_and_restored_across_learners():
    task = TaskConfig(model="mlp", hidden=8, batch_size=16)
    spec = dataclasses.replace(SPEC, target_epsilon=2.0, rounds=3)
    learner = build_learner(task, 0, 4, seed=0, dp_sgd=spec)
    epsilons = []
    for _ in range(3):
        learner.train()
        epsilons.append(learner.epsilon)
    assert epsilons[0] < epsilons[1] < epsilons[2] <= 2.0 and epsilons[2] > 1.95
    rebuilt = build_learner(task, 0, 4, seed=0, dp_sgd=spec)  # a Flower ClientApp's next learner
    rebuilt.privacy_steps = learner.privacy_steps
    assert rebuilt.epsilon == pytest.approx(epsilons[2])
    assert build_learner(task, 0, 4, seed=0).epsilon is None


def test_a_private_run_is_seeded():
    task = TaskConfig(model="mlp", hidden=8)

    def trained():
        learner = build_learner(task, 1, 4, seed=2, dp_sgd=SPEC)
        learner.train()
        return learner.get_weights()

    for first, second in zip(trained(), trained(), strict=True):
        np.testing.assert_array_equal(first, second)


def test_batchnorm_is_refused_naming_the_layer_and_groupnorm():
    module = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(144, 10))
    with pytest.raises(ValueError, match=r"layer '1' \(BatchNorm2d\).*use nn\.GroupNorm"):
        check_private_module(module, "user:bn_net")
    check_private_module(nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4)), "user:gn_net")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ('task.model="linear"', "cannot run with task.model 'linear': it needs a torch model"),
        ("task.stream_chunks=3", "cannot run with task.stream_chunks = 3"),
        ("privacy.delta=1.0", "privacy.delta"),
        ("privacy.target_epsilon=-1.0", "privacy.target_epsilon"),
        ("privacy.noise_multiplier=0.0", "privacy.noise_multiplier"),
    ],
)
def test_what_dp_sgd_cannot_run_is_refused_naming_the_key(setting, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, ['privacy.mechanism="dp-sgd"', setting])


def test_a_flower_federation_accounts_every_round_of_each_node():
    """In process (LocalGrid): the ClientApp, rebuilt per message, keeps its steps in
    context.state, so round 2's epsilon is that of two rounds' steps; the records say so."""
    from fedgossip.base import flower_protocol as p
    from fedgossip.client.flower_app import app as client_app
    from fedgossip.config import dump_toml
    from fedgossip.server.federation import run_federation
    from fedgossip.server.local_grid import LocalGrid

    config = load_config(
        None,
        [
            'experiment.mode="flower"',
            'strategy.name="average"',
            'flower.engine="inprocess"',
            "nodes.count=2",
            "experiment.rounds=2",
            "task.hidden=8",
            'privacy.mechanism="dp-sgd"',
        ],
    )
    grid = LocalGrid(client_app, 2, {p.CONFIG_TOML: dump_toml(config)})
    events: list[dict] = []
    run_federation(grid, config, events.append)
    records = [e["record"] for e in events if e["type"] == "record"]
    assert all(r["privacy"] == "dp-sgd" for r in records)
    spec = config.privacy.dp_sgd(config.experiment.rounds)
    for node in (0, 1):
        learner = build_learner(config.task, node, 2, config.experiment.seed, dp_sgd=spec)
        steps = round(learner.num_examples / config.task.batch_size)  # one epoch a round
        mine = {r["round"]: r["epsilon"] for r in records if r["node"] == node}
        for round_ in (1, 2):
            learner.privacy_steps = round_ * steps
            assert mine[round_] == pytest.approx(learner.epsilon, rel=1e-12)


def test_the_launcher_refuses_a_batchnorm_model_before_any_node_starts(tmp_path, monkeypatch):
    (tmp_path / "bn_user.py").write_text(
        "from torch import nn\n\n"
        "def bn_net(input_shape, num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(),\n"
        "                         nn.Linear(16, num_classes))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from rich.console import Console

    from fedgossip.launcher.experiments.run import run_experiment

    config = load_config(None, ['task.model="bn_user:bn_net"', 'privacy.mechanism="dp-sgd"', "nodes.count=2"])
    with pytest.raises(ValueError, match=r"layer '2' \(BatchNorm1d\).*use nn\.GroupNorm"):
        run_experiment(config, tmp_path / "run", Console(quiet=True))
    assert not (tmp_path / "run").exists()  # nothing started, no folder left
