"""Compressed gossip's codecs (`schema/codecs.py`) and a peer's codec state
(`client/gossip/compression.py`), on their own and through the wire's checks: each codec within its
stated bound, top-k sending exactly k values with error feedback, CHOCO-gossip reaching the average
of the initial models on a ring, and the refusals of a wrong codec or a malformed payload."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedgossip.client.gossip.compression import PushCompression, mix
from fedgossip.client.gossip.merge import merge_models
from fedgossip.client.gossip.transport.wire import ModelAssembler, WireError, assemble, encode
from fedgossip.config import StrategySection, load_config
from fedgossip.schema.codecs import CODECS, INDEX, TopK, codec
from fedgossip.schema.tensors import ModelRejected, TensorSpec, specs_of
from tests.support.peers import messages

NAMES = ["w", "b", "steps"]


def model(seed: int, scale: float = 1.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        (rng.standard_normal((20, 30)) * scale).astype(np.float32),
        (rng.standard_normal(7) * scale).astype(np.float64),
        np.array([seed], dtype=np.int64),  # an integer tensor travels raw under every codec
    ]


SPECS = specs_of(NAMES, model(0))


@pytest.mark.parametrize("name", list(CODECS))
@pytest.mark.parametrize("dtype", ["<f2", "<f4", "<f8"])
@pytest.mark.parametrize("scale", [1e-6, 1.0, 300.0])
def test_each_codec_decodes_within_its_stated_bound(name, dtype, scale):
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((13, 17)) * scale).astype(dtype)
    x[0, :3] = 0.0
    spec = TensorSpec.of("x", x.shape, x.dtype)
    packer = codec(name, 0.1)
    payload = packer.pack(x, spec)
    assert len(payload) == packer.nbytes(spec)
    y = packer.unpack(payload, spec)
    assert (y.dtype, y.shape) == (x.dtype, x.shape)
    assert np.all(np.abs(y.astype(np.float64) - x.astype(np.float64)) <= packer.bound(x))


def test_the_bounds_are_the_codecs_own_hand_computed_ones():
    x = np.array([1.0, -0.5, 0.25, 2.0**-30, 0.0], dtype=np.float32)
    assert codec("none").bound(x).max() == 0
    np.testing.assert_allclose(codec("fp16").bound(x)[0], 2.0**-11 + 2.0**-25)
    int8 = codec("int8").bound(x)
    assert int8[0] >= 1 / 127 / 2 and int8[0] < 1 / 127 / 2 * 1.001  # half a step of max|x| / 127
    assert codec("topk", 0.4).bound(x)[0] == 0.5  # k = 2: the 2nd largest magnitude


@pytest.mark.parametrize("name", list(CODECS))
def test_integer_tensors_and_empty_or_zero_floats_pass_unchanged(name):
    packer = codec(name, 0.1)
    for array in (np.arange(5, dtype=np.int64), np.zeros((0, 3), np.float32), np.zeros(4, np.float32)):
        spec = TensorSpec.of("t", array.shape, array.dtype)
        np.testing.assert_array_equal(packer.unpack(packer.pack(array, spec), spec), array)


def test_payload_sizes_are_fixed_by_spec_and_ratio():
    spec = TensorSpec.of("w", (20, 30), np.float32)
    assert [codec(n, 0.1).nbytes(spec) for n in CODECS] == [2400, 1200, 604, 480, 480]
    assert TopK(ratio=0.001).k(spec) == 1 and TopK(ratio=1.0).k(spec) == 600


def test_top_k_refuses_indices_out_of_range_or_not_increasing():
    spec = TensorSpec.of("w", (10,), np.float32)
    values = np.ones(2, np.float32).tobytes()
    packer = TopK(ratio=0.2)
    for indices in ([3, 10], [4, 4], [5, 2]):
        with pytest.raises(ModelRejected, match="top-k indices"):
            packer.unpack(np.array(indices, INDEX).tobytes() + values, spec)


def test_int8_refuses_a_non_finite_scale():
    spec = TensorSpec.of("w", (3,), np.float32)
    with pytest.raises(ModelRejected, match="scale"):
        codec("int8").unpack(np.float32(np.nan).tobytes() + bytes(3), spec)


def sent_indices(chunks) -> list[np.ndarray]:
    """The indices each float tensor of a top-k push sends, read from its payload (k indices,
    then k values, per tensor; the integer tensor last, raw)."""
    specs = [TensorSpec(t.name, tuple(t.shape), t.dtype) for t in chunks[0].header.tensors]
    data = b"".join(c.data for c in chunks)
    assert len(data) == chunks[0].header.total_bytes == sum(TopK(ratio=0.1).nbytes(s) for s in specs)
    found, offset = [], 0
    for spec in specs:
        if spec.dtype != "<i8":
            found.append(np.frombuffer(data, INDEX, TopK(ratio=0.1).k(spec), offset))
        offset += TopK(ratio=0.1).nbytes(spec)
    return found


def test_top_k_with_error_feedback_sends_exactly_k_values_and_the_residual_later():
    packer = codec("topk", 0.1)
    sender, receiver = PushCompression(packer, SPECS, gamma=1.0), PushCompression(packer, SPECS, gamma=1.0)
    target = model(3)
    for round_ in range(1, 11):  # a fixed model: 10 pushes of 10% of the values send all of it
        residual = [t - p for t, p in zip(target[:2], sender.public, strict=False)]  # not sent yet
        chunks = sender.chunks(1, round_, 5, target)
        indices = sent_indices(chunks)
        assert [len(i) for i in indices] == [60, 1]  # k = ceil(10% of 600) and of 7
        for sent, left in zip(indices, residual, strict=True):  # the k largest of what is left
            largest = np.argsort(np.abs(left).reshape(-1))[-len(sent) :]
            assert set(sent.tolist()) == set(largest.tolist())
        checks = ModelAssembler(SPECS, senders=[1], rounds=(1, 20), max_bytes=1 << 20, codec=packer)
        copy = receiver.incoming(assemble(iter(chunks), checks)).arrays
        for mine, theirs in zip(sender.public, copy, strict=True):
            np.testing.assert_array_equal(mine, theirs)  # both ends add the very same values
    np.testing.assert_array_equal(copy[0], target[0])  # nothing left out for good
    np.testing.assert_array_equal(copy[2], target[2])


def consensus(rounds: int, gamma: float, name: str = "choco") -> tuple[list[list[np.ndarray]], list]:
    """CHOCO-gossip on a ring of 6 without training: each node pushes Q(x - x_hat) to both
    neighbours (through the wire's assembler), advances its copies and takes the consensus step
    with the average rule at uniform weights 1/3. Returns the initial and final models."""
    n, packer = 6, codec(name, 0.25)
    strategy = StrategySection(name="average", params={"own_weight": 1 / 3})
    models = [model(seed, scale=5.0) for seed in range(n)]
    initial = [[a.copy() for a in m] for m in models]
    states = [PushCompression(packer, SPECS, gamma) for _ in range(n)]
    ring = {i: [(i - 1) % n, (i + 1) % n] for i in range(n)}
    shared = [0, 1]
    for round_ in range(1, rounds + 1):
        pushes = [states[i].chunks(i, round_, 10, models[i]) for i in range(n)]
        inboxes = {i: [] for i in range(n)}
        for i in range(n):
            for j in ring[i]:
                checks = ModelAssembler(
                    SPECS, senders=[i], rounds=(1, rounds), max_bytes=1 << 20, codec=packer
                )
                inboxes[j].append(states[j].incoming(assemble(iter(pushes[i]), checks)))

        for i in range(n):
            received = [[m.arrays[k] for k in shared] for m in inboxes[i]]

            def merged(own, received=received, round_=round_):
                return merge_models(strategy, [own[k] for k in shared], received, [10, 10], round_)

            outcome = states[i].merge(merged, models[i], shared)
            models[i] = [*outcome.model, models[i][2]]
    return initial, models


def test_choco_gossip_on_a_ring_converges_to_the_average_of_the_initial_models():
    initial, final = consensus(rounds=150, gamma=0.4)
    for k in (0, 1):
        average = np.mean([m[k].astype(np.float64) for m in initial], axis=0)
        spread = max(float(np.abs(m[k] - average).max()) for m in final)
        start = max(float(np.abs(m[k] - average).max()) for m in initial)
        assert spread < 1e-3 * start, (k, spread, start)  # a ring of 6 mixes with rate ~ (1 - 1/3)
    moved = np.mean([m[0].astype(np.float64) for m in final], axis=0)
    np.testing.assert_allclose(moved, np.mean([m[0] for m in initial], axis=0), atol=1e-4)


def test_the_consensus_step_is_own_plus_gamma_times_the_public_merge_minus_the_own_copy():
    own, public, merged = [np.array([1.0, 2.0])], [np.array([0.0, 1.0])], [np.array([2.0, -1.0])]
    np.testing.assert_allclose(mix(own, public, merged, 0.25)[0], [1.5, 1.5])


def test_a_push_of_another_codec_is_invalid_argument_naming_both():
    arrays = model(1)
    checks = ModelAssembler(SPECS, senders=[1], rounds=(1, 5), max_bytes=1 << 20, codec=codec("int8"))
    with pytest.raises(WireError, match="codec 'none': this peer takes 'int8'") as err:
        assemble(iter(encode(1, 1, 5, NAMES, arrays)), checks)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    other = PushCompression(codec("topk", 0.2), SPECS, gamma=1.0).chunks(1, 1, 5, arrays)
    with pytest.raises(WireError, match="codec 'topk'"):
        assemble(iter(other), checks)


def test_a_malformed_payload_is_invalid_argument_and_an_infinite_one_refused():
    int8 = codec("int8")
    chunks = messages(PushCompression(int8, SPECS, gamma=1.0).chunks(1, 1, 5, model(1)))
    chunks[0].data = np.float32(np.inf).tobytes() + chunks[0].data[4:]  # the first tensor's scale
    checks = ModelAssembler(SPECS, senders=[1], rounds=(1, 5), max_bytes=1 << 20, codec=int8)
    with pytest.raises(WireError, match="scale") as err:
        assemble(iter(chunks), checks)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    huge = [a * 1e6 if a.dtype.kind == "f" else a for a in model(1)]  # beyond half precision
    chunks = PushCompression(codec("fp16"), SPECS, gamma=1.0).chunks(1, 1, 5, huge)
    checks = ModelAssembler(SPECS, senders=[1], rounds=(1, 5), max_bytes=1 << 20, codec=codec("fp16"))
    with pytest.raises(WireError, match="finite"):
        assemble(iter(chunks), checks)


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ("gossip.schedule=async", "gossip.schedule"),
        ("scenario.loss=0.1", "scenario.delay_ms/loss"),
        ("scenario.crash_round=3", "scenario.crash_round"),
        ("scenario.resample_every=2", "scenario.resample_every"),
        ("strategy.name=fair", "strategy.name"),
    ],
)
def test_differential_codecs_refuse_settings_that_lose_or_withhold_pushes(setting, key):
    with pytest.raises(ValueError, match=f"gossip.codec 'choco' cannot run with {key}"):
        load_config(None, ["gossip.codec=choco", setting])


def test_codec_keys_name_the_bad_value():
    with pytest.raises(ValueError, match=r"gossip\.codec must be one of none, fp16, int8, topk, choco"):
        load_config(None, ["gossip.codec=zip"])
    with pytest.raises(ValueError, match=r"flower\.codec must be one of none, fp16, int8, topk; got 'choco'"):
        load_config(None, ["flower.codec=choco"])


def test_the_compression_benchmark_times_every_codec_and_its_bytes_per_value():
    path = Path(__file__).parents[2] / "benchmarks" / "compression.py"
    spec = importlib.util.spec_from_file_location("compression_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    found = bench.timing(size=10_000, repeats=1)
    assert {name: f["bytes_per_value"] for name, f in found.items()} == {
        "none": 4.0,
        "fp16": 2.0,
        "int8": 1.0,  # and the 4-byte scale
        "topk": 0.8,  # 10% of the values, 4 bytes of index and 4 of value each
        "choco": 0.8,
    }
    assert all(f["pack_ms_per_mb"] >= 0 and f["unpack_ms_per_mb"] >= 0 for f in found.values())
