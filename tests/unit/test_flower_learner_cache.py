"""The Flower ClientApp's learner cache (`client/flower_learners.py`): clients that reuse their
learners reply exactly what clients building a fresh learner per message reply (the ClientApp
before the cache), also when the kept learners come from a finished run of the same nodes; a
learner is kept per key, dropped after a failed message, and the least recently used go first."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
from flwr.app import MessageType

from fedgossip.base import flower_protocol as p
from fedgossip.client import flower_app, flower_learners
from fedgossip.client.flower_app import app as client_app
from fedgossip.config import dump_toml
from fedgossip.server.federation import run_federation
from fedgossip.server.local_grid import LocalGrid
from fedgossip.tasks import TaskConfig, build_learner
from tests.support import USER_MODULE, fair_config
from tests.support.configs import inprocess_flower

TIMINGS = {"time_s", "train_s", "evaluate_s"}


def _small(*overrides: str):
    return inprocess_flower("task.momentum=0.9", *overrides, rounds=3)


def _federate(config, fresh: bool) -> list:
    """Every record (timings aside) and every reply's arrays and metrics, in order; `fresh`: the
    cache is emptied before each message, so every message builds its learner."""
    replies = []

    def app(message, context):
        if fresh:
            flower_learners.forget()
        reply = client_app(message, context)
        content = reply.content
        replies.append(
            (
                {n: a.numpy().tobytes() for n, a in content.array_records.get(p.ARRAYS, {}).items()},
                dict(content.metric_records.get(p.METRICS, {})),
            )
        )
        return reply

    events: list[dict] = []
    run_federation(
        LocalGrid(app, config.nodes.count, {p.CONFIG_TOML: dump_toml(config)}), config, events.append
    )
    records = [
        {k: v for k, v in e["record"].items() if k not in TIMINGS} for e in events if e["type"] == "record"
    ]
    assert "error" not in [e["type"] for e in events]
    return [
        records,
        [(arrays, {k: v for k, v in m.items() if k != "train_seconds"}) for arrays, m in replies],
    ]


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "cache_nets.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "cache_nets"
    sys.modules.pop("cache_nets", None)


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "overrides",
    [
        ("task.keep_momentum=true",),  # momentum buffers in context.state
        ('task.model="linear"',),  # sklearn's learner
        ('task.model="cache_nets:dropout_net"',),  # draws from torch's RNG while training
        ('task.model="cache_nets:bn_net"', "flower.fraction_evaluate=1.0"),  # each node's local tensors
    ],
    ids=["momentum", "linear", "dropout", "batchnorm"],
)
def test_kept_learners_reply_what_fresh_ones_reply(overrides, user_module):
    """Bit-identical replies and records; `again` reuses learners a whole run has moved on."""
    config = _small(*overrides)
    flower_learners.forget()
    fresh = _federate(config, fresh=True)
    flower_learners.forget()
    kept = _federate(config, fresh=False)
    again = _federate(config, fresh=False)  # the same nodes' learners, left at the end of a run
    assert kept == fresh
    assert again == fresh
    assert len(fresh[1]) >= 3 * 3


@pytest.mark.timeout(180)
def test_a_dropout_model_draws_new_masks_each_round_as_one_kept_learner_does(user_module):
    """Clients rebuilt at every message (their generators carried over in `context.state`) train as
    one learner kept across the rounds, as a gossip peer's: dropout draws new masks each round
    instead of round 1's again."""
    config = _small(f'task.model="{user_module}:dropout_net"', "nodes.count=2")
    trained = []  # node 0's (model received, model replied) in each train message

    def app(message, context):
        flower_learners.forget()  # every message builds its learner
        reply = client_app(message, context)
        if message.metadata.message_type == MessageType.TRAIN and context.node_config["partition-id"] == 0:
            trained.append(
                [[a.numpy() for a in m.content.array_records[p.ARRAYS].values()] for m in (message, reply)]
            )
        return reply

    run_federation(LocalGrid(app, 2, {p.CONFIG_TOML: dump_toml(config)}), config, lambda event: None)
    assert len(trained) == config.experiment.rounds
    learner = flower_app._build(config, 0, None)
    for received, replied in trained:
        learner.set_weights(received)
        learner.train()
        assert all(np.array_equal(a, b) for a, b in zip(learner.get_weights(), replied, strict=True))


@pytest.mark.timeout(180)
def test_a_fair_streamed_federation_is_unchanged_by_kept_learners():
    config = fair_config("experiment.rounds=5")
    flower_learners.forget()
    fresh = _federate(config, fresh=True)
    flower_learners.forget()
    assert _federate(config, fresh=False) == fresh


def _learner(node: int = 0):
    return build_learner(TaskConfig(), node, 3, seed=0)


def test_a_lent_learner_starts_as_built_and_is_kept_per_key():
    flower_learners.forget()
    built = []

    def build():
        built.append(_learner())
        return built[-1]

    with flower_learners.lent("a", build) as learner:
        start = learner.shuffle_state
        learner.train()
    with flower_learners.lent("a", build) as again:
        assert again is learner and again.shuffle_state == start
    with flower_learners.lent("b", build) as other:
        assert other is not learner
    assert len(built) == 2


def test_a_failed_message_drops_its_learner():
    flower_learners.forget()
    with pytest.raises(RuntimeError), flower_learners.lent("a", _learner) as learner:
        raise RuntimeError("the message failed")
    with flower_learners.lent("a", _learner) as again:
        assert again is not learner


def test_the_least_recently_used_learners_go_past_the_byte_budget(monkeypatch):
    flower_learners.forget()
    size = flower_learners.size_of(_learner())
    monkeypatch.setattr(flower_learners, "KEPT_BYTES", 2 * size)
    learners = {}
    for key in ("a", "b", "a", "c"):  # "b" is then the least recently used
        with flower_learners.lent(key, _learner) as learner:
            learners.setdefault(key, learner)
    for key, kept in (("a", True), ("c", True), ("b", False)):
        with flower_learners.lent(key, _learner) as learner:
            assert (learner is learners[key]) is kept, key


def test_a_learner_of_another_stage_is_replaced_not_kept_beside():
    flower_learners.forget()
    with flower_learners.lent("a", _learner, stage=1) as first:
        pass
    with flower_learners.lent("a", _learner, stage=2) as second:
        assert second is not first
    with flower_learners.lent("a", _learner, stage=2) as again:
        assert again is second
    assert len(flower_learners._KEPT) == 1
