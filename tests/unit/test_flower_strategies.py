"""Our Flower strategies on reply Messages fed straight into aggregate_train, the reply checks of
the ServerApp, seeded sampling and the handshake: no engine, no processes."""

from __future__ import annotations

import random
import re
import time

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Bulyan, FedAvg, FedAvgM, FedProx, FedTrimmedAvg, Krum

from fedgossip.base import flower_protocol as p
from fedgossip.config import FLOWER_STRATEGIES, load_config
from fedgossip.schema.tensors import specs_of
from fedgossip.server.fair import FairStrategy
from fedgossip.server.flower_strategies import Average, RuleStrategy, VarianceCorrected, build_strategy
from fedgossip.server.handshake import HandshakeFailed, discover_nodes
from fedgossip.server.local_grid import LocalGrid, claim_server_identity
from fedgossip.server.recording import (
    IN_MEMORY_PULL_INTERVAL,
    PULL_INTERVAL,
    RecordingGrid,
    RoundFailed,
    pull_interval,
)
from fedgossip.strategies import variance_corrected_average, weighted_average
from fedgossip.strategies.mechanisms import mechanism
from fedgossip.strategies.registry import RULES
from tests.support import NAMES, model, reply


@pytest.fixture
def replies():
    rng = np.random.default_rng(7)
    models = [model(rng, scale) for scale in (0.5, 1.0, 2.0)]
    examples = [10, 30, 60]
    return (
        models,
        examples,
        [reply(100 + i, m, n) for i, (m, n) in enumerate(zip(models, examples, strict=True))],
    )


def arrays_of(record: ArrayRecord) -> list[np.ndarray]:
    assert list(record.keys()) == NAMES
    return [record[n].numpy() for n in NAMES]


def test_average_is_weighted_average_of_the_replies(replies):
    models, examples, messages = replies
    arrays, metrics = Average().aggregate_train(1, messages)
    expected = weighted_average(models, examples)
    for got, want in zip(arrays_of(arrays), expected, strict=True):
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    assert metrics[p.TRAIN_LOSS] == pytest.approx(0.5)


def test_average_gives_flowers_fedavg_arrays(replies):
    _, _, messages = replies
    ours, _ = Average().aggregate_train(1, messages)
    stock, _ = FedAvg().aggregate_train(1, messages)
    for got, want in zip(arrays_of(ours), arrays_of(stock), strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)  # float64 vs float32 sums


@pytest.mark.parametrize(("eps", "ratio"), [(1e-8, 1.0), (0.0, 0.5)])
def test_vca_is_variance_corrected_average_of_the_replies(replies, eps, ratio):
    models, examples, messages = replies
    arrays, _ = VarianceCorrected(eps=eps, ratio=ratio).aggregate_train(1, messages)
    expected = variance_corrected_average(None, models, weights=examples, eps=eps, ratio=ratio)
    for got, want in zip(arrays_of(arrays), expected, strict=True):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)
    plain = weighted_average(models, examples)
    assert not np.allclose(arrays_of(arrays)[0], plain[0])  # the correction did something


def test_error_replies_are_left_out_of_the_aggregate(replies):
    models, examples, messages = replies
    arrays, _ = Average().aggregate_train(1, [*messages[:2], reply(999, None, 1, error="boom")])
    for got, want in zip(arrays_of(arrays), weighted_average(models[:2], examples[:2]), strict=True):
        np.testing.assert_array_equal(got, want)
    assert Average().aggregate_train(1, [reply(999, None, 1, error="boom")]) == (None, None)


@pytest.mark.parametrize(
    "name",
    # a mechanism with a task of its own is tested on it (dp-bayesian-regression: test_dp_regression*)
    [n for n in FLOWER_STRATEGIES if getattr(mechanism(n), "task_model", None) is None],
)
def test_every_configured_strategy_builds_and_aggregates(name, replies):
    models, _, _ = replies
    nodes = 7 if name == "bulyan" else 4
    config = load_config(
        None, ['experiment.mode="flower"', f'strategy.name="{name}"', f"nodes.count={nodes}"]
    )
    strategy = build_strategy(config, labels={10 + i: i for i in range(nodes)})
    expected_base = {
        "fair": FairStrategy,
        "average": Average,
        "vca": VarianceCorrected,
        "fedavgm": FedAvgM,
        "fedprox": FedProx,
        "fedtrimmedavg": FedTrimmedAvg,
        "flwr-krum": Krum,
        "bulyan": Bulyan,
    }.get(name, RuleStrategy if name in RULES else FedAvg)
    assert isinstance(strategy, expected_base)
    rng = np.random.default_rng(1)
    messages = [reply(10 + i, model(rng), 20) for i in range(nodes)]
    if name in ("fedavgm", "fedadam", "fedyogi", "fedadagrad", "fair"):  # they need the global model
        strategy.configure_train(
            1,
            ArrayRecord({n: Array(a) for n, a in zip(NAMES, models[0], strict=True)}),
            ConfigRecord(),
            _StaticGrid(list(range(10, 10 + nodes))),
        )
    arrays, _ = strategy.aggregate_train(1, messages)
    assert list(arrays.keys()) == NAMES


class _StaticGrid(Grid):
    """A grid that only lists node ids (sampling tests); nothing is ever delivered."""

    def __init__(self, node_ids: list[int]) -> None:
        claim_server_identity(1)
        self.ids = node_ids

    def set_run(self, run) -> None:
        pass

    @property
    def run(self):
        return None

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        return Message(content, dst_node_id, message_type)

    def get_node_ids(self):
        return list(self.ids)

    def push_messages(self, messages):
        return []

    def pull_messages(self, message_ids):
        return []

    def send_and_receive(self, messages, *, timeout=None):
        return []


def _sampled_partitions(seed: int, labels: dict[int, int], fraction: float, server_round: int) -> list[int]:
    config = load_config(
        None,
        [
            'experiment.mode="flower"',
            'strategy.name="average"',
            "nodes.count=10",
            f"flower.fraction_train={fraction}",
            f"experiment.seed={seed}",
        ],
    )
    strategy = build_strategy(config, labels, node_wait=1.0)
    arrays = ArrayRecord({n: Array(a) for n, a in zip(NAMES, model(np.random.default_rng(0)), strict=True)})
    messages = strategy.configure_train(server_round, arrays, ConfigRecord(), _StaticGrid(list(labels)))
    return [labels[m.metadata.dst_node_id] for m in messages]


def test_sampling_is_seeded_by_partition_not_by_node_id_or_global_random():
    ids_a = random.Random(1).sample(range(2, 1 << 62), 10)
    ids_b = random.Random(2).sample(range(2, 1 << 62), 10)
    labels_a = dict(zip(ids_a, range(10), strict=True))
    labels_b = dict(zip(ids_b, reversed(range(10)), strict=True))
    random.seed(123)
    first = _sampled_partitions(5, labels_a, 0.3, 1)
    random.seed(456)  # Flower's sampling would follow the global random module
    assert _sampled_partitions(5, labels_b, 0.3, 1) == first
    assert len(first) == 3 and first == sorted(first)
    rounds = {tuple(_sampled_partitions(5, labels_a, 0.3, r)) for r in range(1, 6)}
    assert len(rounds) > 1  # a new draw every round
    assert (
        _sampled_partitions(6, labels_a, 0.3, 1) != first or _sampled_partitions(7, labels_a, 0.3, 1) != first
    )


def test_waiting_for_missing_nodes_has_a_deadline():
    from fedgossip.server.flower_strategies import NodesMissing

    config = load_config(None, ['experiment.mode="flower"', 'strategy.name="fedavg"', "nodes.count=4"])
    strategy = build_strategy(config, {}, node_wait=0.3)
    started = time.monotonic()
    with pytest.raises(NodesMissing, match="only 1 of the 2"):
        strategy.configure_train(1, ArrayRecord(), ConfigRecord(), _StaticGrid([5]))
    assert time.monotonic() - started < 5


def test_replies_are_pulled_often_from_the_simulations_in_memory_grid_only():
    # in the simulation process a pull is a look-up in memory (the round waited 0.1 s a phase for
    # nothing at PULL_INTERVAL); a SuperLink is asked over the network, as rarely as before
    from flwr.server.superlink.linkstate import LinkStateFactory
    from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME
    from flwr.supercore.object_store import ObjectStoreFactory
    from flwr.superlink.federation import NoOpFederationManager
    from flwr.superlink.grid import InMemoryGrid

    state = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory())
    assert pull_interval(InMemoryGrid(state_factory=state)) == IN_MEMORY_PULL_INTERVAL < PULL_INTERVAL / 5
    assert pull_interval(_StaticGrid([])) == PULL_INTERVAL


# --- the ServerApp's checks of untrusted replies -------------------------------------------------


def _recording(models) -> RecordingGrid:
    global_model = ArrayRecord({n: Array(a) for n, a in zip(NAMES, models[0], strict=True)})
    return RecordingGrid(_StaticGrid([]), {100: 0, 101: 1, 102: 2}, specs_of(global_model))


@pytest.mark.parametrize("damage", ["nan", "shape", "dtype", "names", "examples"])
def test_bad_train_replies_become_error_replies(replies, damage):
    models, _, messages = replies
    grid = _recording(models)
    bad = [a.copy() for a in models[1]]
    examples = 30
    if damage == "nan":
        bad[0][0, 0] = np.nan
    elif damage == "shape":
        bad[1] = bad[1][:-1]
    elif damage == "dtype":
        bad[2] = bad[2].astype(np.float64)
    elif damage == "examples":
        examples = -3
    broken = reply(101, bad, examples)
    if damage == "names":
        broken.content[p.ARRAYS] = ArrayRecord({f"x{i}": Array(a) for i, a in enumerate(bad)})
    checked = [grid._check(m) for m in (messages[0], broken)]
    assert not checked[0].has_error() and checked[1].has_error()
    assert "rejected reply" in checked[1].error.reason
    assert [(label, phase) for label, phase, _ in grid.take_errors()] == [(1, "train")]


def test_a_round_without_a_usable_model_fails_with_the_reasons(replies):
    models, _, _ = replies

    class Failing(_StaticGrid):
        def push_messages(self, messages):
            return [f"m{m.metadata.dst_node_id}" for m in messages]

        def pull_messages(self, message_ids):
            return [
                reply(int(i[1:]), None, 1, error=f"node {int(i[1:]) - 100}: ValueError: broken data")
                for i in sorted(message_ids)
            ]

    grid = _recording(models)
    grid.grid = Failing([100, 101])
    messages = [
        Message(RecordDict({p.ARRAYS: ArrayRecord()}), dst_node_id=n, message_type=MessageType.TRAIN)
        for n in (100, 101)
    ]
    with pytest.raises(RoundFailed, match="nodes 0, 1: ValueError: broken data"):
        grid.send_and_receive(messages, timeout=1)


def test_handshake_maps_node_ids_to_partitions_and_refuses_duplicates():
    from fedgossip.client.flower_app import app

    grid = LocalGrid(app, 4, {p.OVERRIDES: "nodes.count=4"}, id_seed=3)
    labels = discover_nodes(grid, 4, timeout=5)
    assert sorted(labels.values()) == [0, 1, 2, 3]
    assert all(grid.contexts[node].node_config[p.PARTITION_ID] == part for node, part in labels.items())
    duplicate = next(iter(grid.contexts.values()))
    duplicate.node_config[p.PARTITION_ID] = 3 if duplicate.node_config[p.PARTITION_ID] != 3 else 2
    with pytest.raises(HandshakeFailed, match="hold partition-id"):
        discover_nodes(grid, 4, timeout=5)


def test_handshake_refuses_a_node_of_another_experiment():
    from fedgossip.client.flower_app import app

    grid = LocalGrid(app, 3, {p.OVERRIDES: "nodes.count=3"}, id_seed=4)
    next(iter(grid.contexts.values())).node_config[p.NUM_PARTITIONS] = 5
    with pytest.raises(HandshakeFailed, match="num-partitions=5 does not match"):
        discover_nodes(grid, 3, timeout=5)


@pytest.mark.parametrize(
    ("partition", "partitions", "problem"),
    [
        (7, 3, "partition-id=7 must be an integer in [0, 3)"),
        (True, 3, "partition-id=True must be an integer in [0, 3)"),
        (1, 5, "num-partitions=5 does not match the experiment's nodes.count=3"),
    ],
)
def test_the_server_and_the_supernode_refuse_a_bad_partition_with_the_same_words(
    partition, partitions, problem
):
    def liar(message: Message, context) -> Message:  # a ClientApp that skips its own check
        record = ConfigRecord({p.PARTITION_ID: partition, p.NUM_PARTITIONS: partitions})
        return Message(RecordDict({p.NODE: record}), reply_to=message)

    grid = LocalGrid(liar, 3, {}, id_seed=5)
    with pytest.raises(HandshakeFailed, match=r"node \d+ reports " + re.escape(problem)):
        discover_nodes(grid, 3, timeout=5)
    with pytest.raises(ValueError, match="^node config " + re.escape(problem)):
        p.node_partition({p.PARTITION_ID: partition, p.NUM_PARTITIONS: partitions}, 3)
    assert p.partition_problem(1, 3, 3) is None


def test_array_view_reads_the_payload_in_place():
    from fedgossip.server.arrays import array_view

    for value in (
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.asfortranarray(np.ones((2, 5))),
        np.int64(7),
    ):
        array = Array(np.asarray(value))
        view = array_view(array)
        np.testing.assert_array_equal(view, array.numpy())
        assert view.dtype == array.numpy().dtype and not view.flags.writeable
    broken = Array(
        dtype="float32", shape=(3, 4), stype="numpy.ndarray", data=Array(np.ones(12, np.float32)).data[:-4]
    )
    with pytest.raises(ValueError, match="payload holds"):
        array_view(broken)
