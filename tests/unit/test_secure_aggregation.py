"""SecAgg+ in Flower mode (server/secure_aggregation.py, client/flower_secure.py), whole
federations in process on Flower's own protocol code: the secure aggregate against the weighted
average of the clients' models trained independently here, the records (no individual model seen),
a seeded run repeating itself, nodes dropping out at each stage of the protocol, the nodes'
refusals of what SecAgg+ would corrupt, and the config's refusals naming the key."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.common import FitRes, Parameters, Status, ndarray_to_bytes
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Stage
from flwr.common.secure_aggregation.secaggplus_constants import Key as SecAggKey
from typer.testing import CliRunner

from fedgossip.base import flower_protocol as p
from fedgossip.client.flower_app import app as client_app
from fedgossip.config import dump_toml
from fedgossip.launcher.cli import app
from fedgossip.schema.tensors import TensorSpec
from fedgossip.server.federation import run_federation
from fedgossip.server.local_grid import LocalGrid
from fedgossip.server.recording import RoundFailed
from fedgossip.server.reply_checks import check_masked_reply
from fedgossip.server.secure_aggregation import train_metrics, unmasked_arrays
from fedgossip.strategies.rules import vca
from fedgossip.strategies.variance_correction import correct_average
from fedgossip.tasks import build_learner
from tests.support.configs import inprocess_flower

pytestmark = pytest.mark.timeout(60)

NODES = 3
SECAGG = 'flower.secure_aggregation="secagg+"'
SKEWED = ('task.partition="quantity"', "task.alpha=0.5")  # 1010, 360 and 68 training examples


def _config(*settings: str):
    return inprocess_flower("task.hidden=8", *settings, nodes=NODES, rounds=1)


def _run(config) -> tuple[list[np.ndarray], list[dict]]:
    """The global model after the run and the records emitted (in process)."""
    events: list[dict] = []
    grid = LocalGrid(client_app, NODES, {p.CONFIG_TOML: dump_toml(config)})
    arrays = run_federation(grid, config, events.append)
    records = [event["record"] for event in events if event["type"] == "record"]
    return [arrays[name].numpy() for name in arrays], records


def _weighted_average(config, nodes=range(NODES), count: int = NODES) -> list[np.ndarray]:
    """sum n_i w_i / sum n_i of the models of `nodes` (of `count`) after one round, trained here as
    the ClientApps train theirs."""
    seed = config.experiment.seed
    initial = build_learner(config.task, 0, count, seed).get_weights()
    models, counts = [], []
    for node in nodes:
        learner = build_learner(config.task, node, count, seed)
        learner.set_weights(initial)
        learner.train()
        models.append([w.astype(np.float64) for w in learner.get_weights()])
        counts.append(learner.num_examples)
    return [
        sum(n * m[k] for n, m in zip(counts, models, strict=True)) / sum(counts) for k in range(len(initial))
    ]


def test_the_secure_aggregate_is_the_weighted_average_of_the_trained_models():
    config = _config(SECAGG, *SKEWED, "flower.secagg_max_weight=2000")
    secure, records = _run(config)
    expected = _weighted_average(config)  # 0.37 away from the unweighted mean
    # one weight of a node: 2 * 8 / 2^22 over its weight share (n / 2000), stochastically rounded
    for got, want in zip(secure, expected, strict=True):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)
    assert max(float(np.abs(g - w).max()) for g, w in zip(secure, expected, strict=True)) > 0  # quantized
    nodes = [r for r in records if r["node"] != "server" and r["round"] == 1]
    assert sorted(r["node"] for r in nodes) == [0, 1, 2]
    assert [r["num_examples"] for r in sorted(nodes, key=lambda r: r["node"])] == [1010, 360, 68]
    assert all(r["train_loss"] > 0 and not r.get("errors") for r in nodes)
    # each node sent its masked vector (int64 words: twice the float32 model), keys and shares
    model_bytes = sum(w.nbytes for w in secure)
    assert all(2 * model_bytes < r["bytes_sent"] < 2 * model_bytes + 4000 for r in nodes)
    server = next(r for r in records if r["node"] == "server" and r["round"] == 1)
    assert "consensus_distance" not in server  # the server never sees a client's model
    assert server["train_s"] > 0


def test_a_seeded_secure_run_repeats_itself_and_follows_the_plain_run():
    config = _config(SECAGG, "experiment.rounds=2")
    first, records = _run(config)
    second, again = _run(config)
    plain, _ = _run(_config("experiment.rounds=2"))
    assert all((a == b).all() for a, b in zip(first, second, strict=True))
    keys = ("node", "round", "train_loss", "test_loss", "bytes_sent", "bytes_received")
    assert [[r.get(k) for k in keys] for r in records] == [[r.get(k) for k in keys] for r in again]
    for got, want in zip(first, plain, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_vca_under_secagg_corrects_to_the_masked_mean_of_the_variances():
    vca = ('strategy.name="vca"', *SKEWED)
    secure, records = _run(_config(SECAGG, "flower.secagg_max_weight=2000", *vca))
    plain, _ = _run(_config(*vca))  # RuleStrategy's vca on the individual models
    average, _ = _run(_config(*SKEWED))
    assert max(float(np.abs(p - a).max()) for p, a in zip(plain, average, strict=True)) > 0.05
    # the variances are quantized too (a node's share of 68 / 2000 coarsens its steps)
    for got, want in zip(secure, plain, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-4)
    nodes = [r for r in records if r["node"] != "server"]
    assert len(nodes) == NODES and not any(r.get("errors") for r in nodes)


def test_vca_from_sums_is_vca_of_the_models():
    rng = np.random.default_rng(3)
    models = [[rng.normal(0, s, (4, 5)).astype(np.float32), rng.normal(1, s, 3)] for s in (0.2, 0.5, 1.0)]
    models = [[m[0], m[1].astype(np.float32), np.array([7.0], np.float32)] for m in models]
    weights = np.array([100.0, 300.0, 50.0])
    w = weights / weights.sum()
    average = [sum(wk * m[i].astype(np.float64) for wk, m in zip(w, models, strict=True)) for i in range(3)]
    targets = [
        sum(wk * float(np.var(m[i], dtype=np.float64)) for wk, m in zip(w, models, strict=True))
        for i in range(3)
    ]
    got = correct_average([a.astype(np.float32) for a in average], targets, eps=1e-8, ratio=1.0)
    want = vca(None, models, list(weights), own_weight=0.5, eps=1e-8, ratio=1.0)
    for g, r in zip(got, want, strict=True):
        np.testing.assert_allclose(g, r, rtol=0, atol=1e-6)
    assert float(np.var(got[0], dtype=np.float64)) == pytest.approx(targets[0], rel=1e-5)
    assert got[2] == pytest.approx(average[2])  # one element: averaged, not corrected
    with pytest.raises(ValueError, match="2 target variances for 3 tensors"):
        correct_average(average, targets[:2])


def _dropping(drops: dict[int, str]):
    """The ClientApp, but node `i` of `drops` drops out (an error reply) at SecAgg+'s stage `drops[i]`."""

    def app(message: Message, context: Context) -> Message:
        protocol = message.content.config_records.get(RECORD_KEY_CONFIGS)
        stage = None if protocol is None else protocol.get(SecAggKey.STAGE)
        if stage is not None and drops.get(context.node_config["partition-id"]) == stage:
            return Message(Error(code=0, reason="dropped out"), reply_to=message)
        return client_app(message, context)

    return app


@pytest.mark.parametrize(
    ("nodes", "drops"),
    [
        (3, {2: Stage.SETUP}),  # before its keys reach anyone: nobody masks with it
        (3, {2: Stage.SHARE_KEYS}),  # its keys reached the others, its shares did not
        (3, {2: Stage.COLLECT_MASKED_VECTORS}),  # shared its keys: its masks removed with its key
        (5, {3: Stage.COLLECT_MASKED_VECTORS, 4: Stage.COLLECT_MASKED_VECTORS}),  # masked with each other
        (5, {1: Stage.SHARE_KEYS, 4: Stage.COLLECT_MASKED_VECTORS}),
    ],
)
def test_nodes_dropping_out_at_any_stage_leave_the_weighted_average_of_the_others(nodes, drops):
    config = inprocess_flower("task.hidden=8", SECAGG, nodes=nodes, rounds=1)
    grid = LocalGrid(_dropping(drops), nodes, {p.CONFIG_TOML: dump_toml(config)})
    arrays = run_federation(grid, config, lambda event: None)
    expected = _weighted_average(config, [n for n in range(nodes) if n not in drops], nodes)
    for got, want in zip((arrays[name].numpy() for name in arrays), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)


def test_a_node_over_max_weight_refuses_and_secagg_aggregates_the_others():
    config = _config(SECAGG, *SKEWED)  # node 0's 1010 examples > flower.secagg_max_weight = 1000
    secure, records = _run(config)
    for got, want in zip(secure, _weighted_average(config, nodes=(1, 2)), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)
    refused = next(r for r in records if r["node"] == 0)
    assert "more than flower.secagg_max_weight = 1000: raise it" in refused["errors"][0]


def test_weights_beyond_the_clipping_range_are_refused_by_every_node_naming_the_key():
    with pytest.raises(RoundFailed, match=r"beyond flower\.secagg_clipping_range = 0\.01: raise it"):
        _run(_config(SECAGG, "flower.secagg_clipping_range=0.01"))


def test_a_masked_reply_is_checked_against_the_global_model():
    specs = [TensorSpec.of("w", (2, 3), np.float32)]
    metrics = MetricRecord({p.TRAIN_LOSS: 0.5, p.NUM_EXAMPLES: 7})
    good = [np.zeros(1, np.int64), np.zeros((2, 3), np.int64)]

    def reply(arrays: list[np.ndarray]) -> RecordDict:
        masked = ConfigRecord({"masked_params": [ndarray_to_bytes(a) for a in arrays]})
        return RecordDict({RECORD_KEY_CONFIGS: masked, p.METRICS: metrics})

    assert check_masked_reply(reply(good), specs) == (0.5, 7)
    assert check_masked_reply(RecordDict({RECORD_KEY_CONFIGS: ConfigRecord({"pk1": b"k"})}), specs) is None
    with pytest.raises(ValueError, match="must be 2 arrays"):
        check_masked_reply(reply(good[:1]), specs)
    with pytest.raises(ValueError, match=r"integers of shape \(2, 3\)"):
        check_masked_reply(reply([good[0], np.zeros((3, 2), np.int64)]), specs)
    with pytest.raises(ValueError, match=r"integers of shape \(2, 3\)"):
        check_masked_reply(reply([good[0], np.zeros((2, 3), np.float32)]), specs)


def test_the_unmasked_aggregate_takes_the_global_models_names_and_dtypes_and_its_checks():
    template = ArrayRecord({"w": Array(np.zeros((2, 2), np.float32)), "steps": Array(np.zeros(1, np.int64))})
    got = unmasked_arrays(template, [np.full((2, 2), 0.25), np.array([6.6])])
    assert list(got) == ["w", "steps"] and got["w"].numpy().dtype == np.float32
    assert got["steps"].numpy().tolist() == [7]
    with pytest.raises(ValueError, match="w"):
        unmasked_arrays(template, [np.full((2, 2), np.nan), np.array([6.6])])


def test_train_metrics_are_averaged_by_example_count():
    def result(examples: int, loss: float):
        return None, FitRes(Status(0, ""), Parameters([], ""), examples, {"train_loss": loss, "x": 1.0})

    metrics = train_metrics([result(100, 1.0), result(300, 2.0)])
    assert metrics["train_loss"] == pytest.approx((100 * 1.0 + 300 * 2.0) / 400)


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        (['strategy.name="median"'], "strategy.name 'median' needs the individual models"),
        (['strategy.name="fedmedian"'], "strategy.name 'fedmedian' needs the individual models"),
        (
            ['strategy.name="krum"'],
            "strategy.name 'krum' needs the individual models: use one of average, fedavg, vca",
        ),
        (['privacy.mechanism="central-fixed-server"'], "cannot run with privacy.mechanism"),
        (['flower.codec="int8"'], "flower.codec 'int8' would pack them first: use flower.codec = 'none'"),
        (["flower.secagg_num_shares=5"], "flower.secagg_num_shares = 5 must be 0 (every sampled node) or in"),
        (["flower.secagg_reconstruction_threshold=4"], "flower.secagg_reconstruction_threshold = 4 must"),
        (["flower.secagg_reconstruction_threshold=1"], "must be 0 (two thirds of the shares) or at least 2"),
        (["flower.secagg_quantization_range=2147483648"], "times the 3 nodes a round must be at most 2^32"),
    ],
)
def test_what_secagg_cannot_run_is_refused_naming_the_key(settings, says):
    with pytest.raises(ValueError, match=None) as error:
        _config(SECAGG, *settings)
    assert says in str(error.value)


def test_the_cli_exits_2_for_secagg_with_median_or_in_gossip_mode(tmp_path):
    base = ["run", "--out", str(tmp_path / "run"), "--set", SECAGG]
    median = CliRunner().invoke(
        app, [*base, "--set", 'experiment.mode="flower"', "--set", 'strategy.name="median"']
    )
    assert median.exit_code == 2, median.output
    assert "flower.secure_aggregation 'secagg+'" in " ".join(median.output.split())
    assert "strategy.name 'median' needs the individual models" in " ".join(median.output.split())
    gossip = CliRunner().invoke(app, base)
    assert gossip.exit_code == 2, gossip.output
    assert "is a Flower-mode feature" in " ".join(gossip.output.split())
    assert not (tmp_path / "run").exists()
