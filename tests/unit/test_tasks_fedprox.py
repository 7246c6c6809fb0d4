"""FedProx's proximal term: the SGD step against torch's autograd and optimiser, the learner's
train(mu), and the ClientApp taking `proximal-mu` from Flower's FedProx."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedgossip.base import flower_protocol as p
from fedgossip.client.flower_app import app as client_app
from fedgossip.config import dump_toml, load_config
from fedgossip.server.federation import run_federation
from fedgossip.server.local_grid import LocalGrid
from fedgossip.tasks import TaskConfig, build_learner
from fedgossip.tasks.torch_learner import _sgd_step


@pytest.mark.parametrize(("momentum", "weight_decay"), [(0.0, 0.0), (0.9, 0.0), (0.9, 1e-2)])
@pytest.mark.parametrize("mu", [0.0, 0.5])
def test_sgd_step_matches_torch_sgd_on_the_proximal_loss(momentum, weight_decay, mu):
    """Our step with mu equals torch.optim.SGD on loss + mu/2 ||w - w0||^2 (autograd)."""
    torch.manual_seed(0)
    ours, reference = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    reference.load_state_dict(ours.state_dict())
    anchors = [p.detach().clone() for p in ours.parameters()]
    optimiser = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=momentum, weight_decay=weight_decay)
    buffers: dict = {}
    for _ in range(4):
        x = torch.randn(8, 5)
        ours.zero_grad()
        ours(x).square().sum().backward()
        _sgd_step(
            list(ours.parameters()), buffers, 0.1, momentum, weight_decay=weight_decay, mu=mu, anchors=anchors
        )
        reference.zero_grad()
        proximal = sum((p - a).square().sum() for p, a in zip(reference.parameters(), anchors, strict=True))
        (reference(x).square().sum() + mu / 2 * proximal).backward()
        optimiser.step()
    exact = mu == 0  # the same operations as torch's optimiser; autograd's proximal gradient rounds otherwise
    for a, b in zip(ours.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0 if exact else 1e-6, atol=0 if exact else 1e-6)


def _trained(mu: float | None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(start, end) weights of node 0 of 4 after one train() call with the given mu."""
    learner = build_learner(TaskConfig(momentum=0.9, local_epochs=3), 0, 4, seed=2)
    start = learner.get_weights()
    if mu is None:
        learner.train()
    else:
        learner.train(mu=mu)
    return start, learner.get_weights()


def _distance(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(np.sqrt(sum(np.sum((x.astype(np.float64) - y) ** 2) for x, y in zip(a, b, strict=True))))


def test_mu_zero_is_plain_training_bit_for_bit_and_mu_pulls_towards_the_start():
    start, plain = _trained(None)
    _, zero = _trained(0.0)
    for a, b in zip(plain, zero, strict=True):
        np.testing.assert_array_equal(a, b)
    _, proximal = _trained(1.0)
    assert not np.array_equal(proximal[0], plain[0])
    assert _distance(proximal, start) < 0.8 * _distance(plain, start)


def test_mu_is_validated_and_the_linear_model_has_no_proximal_term():
    learner = build_learner(TaskConfig(), 0, 2, seed=0)
    with pytest.raises(ValueError, match=r"^mu must be a finite number >= 0\.0; got -1\.0$"):
        learner.train(mu=-1.0)
    linear = build_learner(TaskConfig(model="linear"), 0, 2, seed=0)
    with pytest.raises(ValueError, match="the linear model has no FedProx proximal term"):
        linear.train(mu=0.1)
    with pytest.raises(ValueError, match=r"strategy\.name 'fedprox' .* task\.model 'linear'"):
        load_config(None, ['experiment.mode="flower"', 'strategy.name="fedprox"', 'task.model="linear"'])
    load_config(None, ['experiment.mode="flower"', 'strategy.name="fedprox"', "flower.proximal_mu=0"])


def _federated(strategy: str, mu: float) -> list[dict]:
    """The node records of a 2-node, 2-round in-process federation (timings removed). Two nodes:
    the replies arrive in no fixed order, and only a sum of two models is order-independent."""
    config = load_config(
        None,
        [
            'experiment.mode="flower"',
            f'strategy.name="{strategy}"',
            f"flower.proximal_mu={mu}",
            "nodes.count=2",
            "experiment.rounds=2",
            'flower.engine="inprocess"',
            "task.local_epochs=2",
            "task.momentum=0.9",
        ],
    )
    grid = LocalGrid(client_app, 2, {p.CONFIG_TOML: dump_toml(config)}, id_seed=0)
    events: list[dict] = []
    run_federation(grid, config, events.append)
    assert "error" not in [e["type"] for e in events]
    timings = {"time_s", "train_s", "evaluate_s"}
    return [
        {k: v for k, v in e["record"].items() if k not in timings} for e in events if e["type"] == "record"
    ]


@pytest.mark.timeout(180)
def test_the_client_app_trains_with_fedprox_mu():
    fedavg, prox_zero, prox = (
        _federated("fedavg", 0.01),
        _federated("fedprox", 0.0),
        _federated("fedprox", 1.0),
    )
    assert prox_zero == fedavg
    round_one = [r for r in prox if r["round"] == 1 and r["node"] != "server"]
    plain_one = [r for r in fedavg if r["round"] == 1 and r["node"] != "server"]
    assert [r["train_loss"] for r in round_one] != [r["train_loss"] for r in plain_one]
