"""task.keep_momentum: a learner trained two rounds (a merge replacing its weights in between) is
one continuous torch.optim.SGD run with momentum over the same batches, the buffers kept as they
were; without it, two fresh optimisers. Streamed gossip learners and Flower clients (rebuilt every
round) carry the buffers over."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from torch.nn import functional

from fedgossip.base import flower_protocol as p
from fedgossip.client.flower_app import app as client_app
from fedgossip.config import dump_toml
from fedgossip.server.federation import run_federation
from fedgossip.server.local_grid import LocalGrid
from fedgossip.tasks import TaskConfig, build_learner, stream_learner
from tests.support.configs import inprocess_flower

TASK = TaskConfig(model="mlp", learning_rate=0.05, momentum=0.9, batch_size=32)


def _reference(learner, keep: bool, merged: list[np.ndarray]) -> list[np.ndarray]:
    """Round 1, the merge, round 2, by torch.optim.SGD on a copy of the learner's network, over the
    batches the learner draws (its shuffle stream: one permutation per epoch)."""
    model = copy.deepcopy(learner._model)
    rng = np.random.default_rng()
    rng.bit_generator.state = learner.shuffle_state
    x = torch.from_numpy(learner.data.x_train)
    y = torch.from_numpy(learner.data.y_train)
    optimiser = torch.optim.SGD(model.parameters(), lr=TASK.learning_rate, momentum=TASK.momentum)
    for round_ in (1, 2):
        if round_ == 2:
            names = list(model.state_dict())
            model.load_state_dict({n: torch.from_numpy(a) for n, a in zip(names, merged, strict=True)})
            if not keep:
                optimiser = torch.optim.SGD(model.parameters(), lr=TASK.learning_rate, momentum=TASK.momentum)
        order = rng.permutation(len(y))
        for batch in np.split(order, range(TASK.batch_size, len(y), TASK.batch_size)):
            index = torch.from_numpy(batch)
            optimiser.zero_grad()
            functional.cross_entropy(model(x[index]), y[index]).backward()
            optimiser.step()
    return [t.detach().numpy() for t in model.state_dict().values()]


def _two_rounds(keep: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(the learner's weights, the reference's) after round 1, a merge with a neighbour's model
    (the mean of the two), and round 2."""
    task = dataclasses.replace(TASK, keep_momentum=keep)
    learner = build_learner(task, 1, 4, seed=3)
    probe = build_learner(task, 1, 4, seed=3)  # the same node: its model after round 1
    probe.train()
    neighbour = build_learner(TASK, 2, 4, seed=3).get_weights()
    merged = [(a + b) / 2 for a, b in zip(probe.get_weights(), neighbour, strict=True)]
    expected = _reference(learner, keep, merged)
    learner.train()
    learner.set_weights(merged)  # a merge replaces the weights; kept buffers stay as they are
    learner.train()
    return learner.get_weights(), expected


@pytest.mark.timeout(60)
@pytest.mark.parametrize("keep", [True, False])
def test_two_rounds_equal_torch_sgd_with_kept_or_fresh_momentum(keep):
    got, expected = _two_rounds(keep)
    for ours, theirs in zip(got, expected, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.timeout(60)
def test_kept_and_fresh_buffers_give_different_models():
    kept, fresh = _two_rounds(True)[0], _two_rounds(False)[0]
    assert max(np.abs(a - b).max() for a, b in zip(kept, fresh, strict=True)) > 1e-3


@pytest.mark.timeout(60)
def test_a_streamed_learner_carries_its_buffers_to_the_next_round():
    task = dataclasses.replace(TASK, keep_momentum=True, stream_chunks=4)
    first = build_learner(task, 0, 3, seed=2, stream_round=1)
    assert first.momentum_state == {}
    first.train()
    second = stream_learner(task, 0, 3, 2, 2, first)
    assert second.momentum_state.keys() == first.momentum_state.keys() == {str(i) for i in range(6)}
    for index, buffer in first.momentum_state.items():
        np.testing.assert_array_equal(second.momentum_state[index], buffer)
    unkept = stream_learner(
        dataclasses.replace(task, keep_momentum=False), 0, 3, 2, 2, build_learner(TASK, 0, 3, 2)
    )
    assert unkept.momentum_state == {}
    with pytest.raises(ValueError, match=r"only with task\.keep_momentum = true"):
        build_learner(TASK, 0, 3, 2).momentum_state = first.momentum_state


def _federate(*overrides: str) -> tuple[list[dict], LocalGrid]:
    config = inprocess_flower("task.momentum=0.9", *overrides)
    grid = LocalGrid(client_app, 3, {p.CONFIG_TOML: dump_toml(config)})
    events: list[dict] = []
    run_federation(grid, config, events.append)
    records = [
        {k: v for k, v in e["record"].items() if k not in {"time_s", "train_s", "evaluate_s"}}
        for e in events
        if e["type"] == "record"
    ]
    return records, grid


@pytest.mark.timeout(120)
def test_flower_clients_keep_their_buffers_in_their_state_between_rounds():
    kept, grid = _federate("task.keep_momentum=true")
    fresh, fresh_grid = _federate()
    assert [r for r in kept if r["round"] <= 1] == [r for r in fresh if r["round"] <= 1]  # fresh start
    assert [r for r in kept if r["round"] == 2] != [r for r in fresh if r["round"] == 2]
    for context in grid.contexts.values():
        assert len(context.state.array_records[p.MOMENTUM]) == 6  # the MLP's 6 parameters
    assert all(p.MOMENTUM not in c.state.array_records for c in fresh_grid.contexts.values())
