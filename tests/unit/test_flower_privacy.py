"""Flower's own DP from `[privacy]` (server/flower_privacy.py, client/flower_privacy.py), whole
federations in process: the central-DP aggregate against the clients' clipped updates computed
independently, the noise against the seeded draws, server- and client-side clipping agreeing,
and the refusals."""

from __future__ import annotations

import numpy as np
import pytest

from fedgossip.base import flower_protocol as p
from fedgossip.base.seeding import stream
from fedgossip.client.flower_app import app as client_app
from fedgossip.config import dump_toml, load_config
from fedgossip.server.federation import run_federation
from fedgossip.server.local_grid import LocalGrid
from fedgossip.tasks import build_learner
from tests.support.configs import inprocess_flower

pytestmark = pytest.mark.timeout(60)

NODES = 2
FLOWER = 'experiment.mode="flower"'


def _config(*settings: str):
    return inprocess_flower("task.hidden=8", *settings, nodes=NODES, rounds=1)


def _global_model(config) -> list[np.ndarray]:
    """The global model after round 1 (in process)."""
    grid = LocalGrid(client_app, NODES, {p.CONFIG_TOML: dump_toml(config)})
    arrays = run_federation(grid, config, lambda event: None)
    return [arrays[name].numpy() for name in arrays]


def _clipped_mean_update(config, clip: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The initial global model and the mean of the clients' updates each clipped to `clip`
    (flat L2 norm), computed from learners built here, as the ClientApps build theirs."""
    seed = config.experiment.seed
    initial = build_learner(config.task, 0, NODES, seed).get_weights()  # the server's start
    updates = []
    for node in range(NODES):
        learner = build_learner(config.task, node, NODES, seed)
        learner.set_weights(initial)
        learner.train()
        update = [w - i for w, i in zip(learner.get_weights(), initial, strict=True)]
        norm = np.sqrt(sum(float((u.astype(np.float64) ** 2).sum()) for u in update))
        updates.append([u * min(1.0, clip / norm) for u in update])
    return initial, [np.mean(parts, axis=0) for parts in zip(*updates, strict=True)]


@pytest.mark.parametrize("side", ["server", "client"])
def test_fixed_clipping_averages_the_clipped_updates(side):
    clip = 0.05  # well below the updates' norms (about 1 after an epoch)
    config = _config(
        f'privacy.mechanism="central-fixed-{side}"',
        f"privacy.max_grad_norm={clip}",
        "privacy.noise_multiplier=1e-9",
    )  # noise std 2.5e-11: negligible
    initial, mean_update = _clipped_mean_update(config, clip)
    for got, start, update in zip(_global_model(config), initial, mean_update, strict=True):
        np.testing.assert_allclose(got, start + update, rtol=0, atol=2e-6)


def test_the_noise_is_the_seeded_gaussian_of_std_sigma_clip_over_sampled():
    sigma, clip = 1e-6, 1e5  # nothing is clipped; noise std = sigma * clip / 2 = 0.05
    plain = _global_model(_config())
    private = _global_model(
        _config(
            'privacy.mechanism="central-fixed-server"',
            f"privacy.max_grad_norm={clip}",
            f"privacy.noise_multiplier={sigma}",
        )
    )
    np.random.seed(int(stream(0, "central-dp", 1).integers(2**32)))  # the server's round-1 draws
    for got, base in zip(private, plain, strict=True):
        noise = np.random.normal(0, sigma * clip / NODES, base.shape).astype(base.dtype)
        np.testing.assert_allclose(got - base, noise, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (['privacy.mechanism="central-fixed-server"'], "is Flower's: it needs experiment.mode 'flower'"),
        (
            [FLOWER, 'strategy.name="fair"', "nodes.count=4", 'privacy.mechanism="local"'],
            "strategy.name 'fair' is a mechanism",
        ),
        (
            [FLOWER, "nodes.count=4", 'privacy.mechanism="central-adaptive-client"'],
            r"privacy.noise_multiplier = 1.0 must be below 2 \* privacy.clipped_count_stddev = 0.4",
        ),
    ],
)
def test_what_flower_dp_cannot_run_is_refused_naming_the_key(settings, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, settings)
