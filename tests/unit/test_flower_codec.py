"""Compressed Flower train replies (`flower.codec`): the ClientApp's packing
(`client/flower_codec.py`) and the ServerApp's unpacking and checks (`server/reply_codec.py`,
through `RecordingGrid`), on reply contents and in a whole in-process federation."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedgossip.base import flower_protocol as p
from fedgossip.client.flower_app import app as client_app
from fedgossip.client.flower_codec import pack_reply
from fedgossip.config import dump_toml, load_config
from fedgossip.schema.codecs import codec
from fedgossip.schema.tensors import specs_of
from fedgossip.server.federation import run_federation
from fedgossip.server.local_grid import LocalGrid
from fedgossip.server.reply_checks import check_train_reply
from fedgossip.server.reply_codec import unpack_reply
from tests.support.configs import inprocess_flower

NAMES = ["w", "b", "steps"]


def weights(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        rng.standard_normal((8, 5)).astype(np.float32),
        rng.standard_normal(5).astype(np.float32),
        np.array([seed], np.int64),
    ]


def record(arrays: list[np.ndarray]) -> ArrayRecord:
    return ArrayRecord({n: Array(a) for n, a in zip(NAMES, arrays, strict=True)})


def reply(arrays: list[np.ndarray]) -> RecordDict:
    return RecordDict(
        {
            p.ARRAYS: record(arrays),
            p.METRICS: MetricRecord({p.TRAIN_LOSS: 0.5, p.NUM_EXAMPLES: 10}),
            p.NODE: ConfigRecord({p.PARTITION_ID: 0}),
        }
    )


def flower(name: str, ratio: float = 0.2):
    return load_config(
        None, ['experiment.mode="flower"', f"flower.codec={name}", f"flower.codec_ratio={ratio}"]
    ).flower


def unpacked(content: RecordDict) -> list[np.ndarray]:
    return [a.numpy() for a in content.array_records[p.ARRAYS].values()]


@pytest.mark.parametrize("name", ["fp16", "int8", "topk"])
def test_a_packed_reply_unpacks_within_the_codec_bound_and_passes_the_reply_checks(name):
    sent, trained = weights(1), weights(2)
    content, state = reply(trained), RecordDict()
    pack_reply(flower(name), record(sent), content, state)
    assert content.config_records[p.NODE][p.CODEC] == name
    assert all(
        a.dtype == "<u1" or a.dtype == "|u1"
        for a in (x.numpy() for x in content.array_records[p.ARRAYS].values())
    )
    specs = specs_of(NAMES, trained)
    unpack_reply(content, codec(name, 0.2), specs, record(sent))
    check_train_reply(content, specs)
    got = unpacked(content)
    packer = codec(name, 0.2)
    for g, t, s in zip(got[:2], trained[:2], sent[:2], strict=True):  # top-k packs the update t - s
        target = t - s if packer.differential else t
        assert np.all(np.abs((g - s if packer.differential else g) - target) <= packer.bound(target) + 1e-6)
    assert got[2] == trained[2]


def test_top_k_replies_keep_the_residual_and_send_it_later():
    sent, trained = weights(1), weights(2)
    state = RecordDict()
    specs = specs_of(NAMES, trained)
    delivered = np.zeros((8, 5))
    for _ in range(5):  # the same update five times at 20%: all of it arrives in the end
        content = reply(trained)
        pack_reply(flower("topk"), record(sent), content, state)
        unpack_reply(content, codec("topk", 0.2), specs, record(sent))
        update = unpacked(content)[0] - sent[0]
        assert np.count_nonzero(update) <= 8  # k = 8 of 40 values
        delivered += update
        residual = state.array_records[p.RESIDUAL]["w"].numpy()
        np.testing.assert_allclose(delivered + residual, (trained[0] - sent[0]) * (_ + 1), atol=1e-5)


def test_the_server_refuses_another_codec_a_plain_reply_and_a_malformed_payload():
    sent, specs = weights(1), specs_of(NAMES, weights(1))
    content = reply(weights(2))
    pack_reply(flower("int8"), record(sent), content, RecordDict())
    with pytest.raises(ValueError, match="codec 'int8': this run takes 'fp16'"):
        unpack_reply(content, codec("fp16"), specs, record(sent))
    with pytest.raises(ValueError, match="codec 'none': this run takes 'int8'"):
        unpack_reply(reply(weights(2)), codec("int8"), specs, record(sent))
    cut = content.array_records[p.ARRAYS]["w"].numpy()[:-1]
    content[p.ARRAYS] = ArrayRecord(
        {n: Array(a.numpy()) for n, a in content.array_records[p.ARRAYS].items()} | {"w": Array(cut)}
    )
    with pytest.raises(ValueError, match="payload bytes"):
        unpack_reply(content, codec("int8"), specs, record(sent))


def test_a_federation_with_top_k_replies_sends_fewer_bytes_and_learns():
    config = inprocess_flower("flower.codec=topk")
    grid = LocalGrid(client_app, 3, {p.CONFIG_TOML: dump_toml(config)}, id_seed=0)
    events: list[dict] = []
    run_federation(grid, config, events.append)
    assert "error" not in [e["type"] for e in events]
    records = [e["record"] for e in events if e["type"] == "record"]
    nodes = [r for r in records if r["node"] != "server"]
    assert len(nodes) == 6 and all(not r.get("errors") for r in nodes)
    # a node receives the plain global model and sends 10% of its update's values (with indices)
    assert all(r["bytes_sent"] < 0.25 * r["bytes_received"] for r in nodes)
    assert records[-1]["node"] == "server" and records[-1]["test_accuracy"] > 0.5
