"""The one untrusted-model validator (fedgossip.schema.tensors): every check accepts a good model
and rejects each kind of bad one with a message naming the tensor; the gossip wire, the Flower
reply check and Learner.set_weights reject the same bad model with the same message."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest

from fedgossip.schema.tensors import (
    FINITE_BLOCK,
    MAX_TENSORS,
    NORM_BLOCK,
    ModelRejected,
    ModelTooLarge,
    TensorSpec,
    check_arrays,
    check_count,
    check_declared,
    check_norm,
    check_size,
    is_finite,
    model_norm,
    specs_of,
)

NAMES = ["w", "b", "steps"]


def model() -> list[np.ndarray]:
    return [
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.array([0.5, -1.5, 2.0], dtype=np.float32),
        np.array(7, dtype=np.int64),
    ]


SPECS = [TensorSpec("w", (2, 3), "<f4"), TensorSpec("b", (3,), "<f4"), TensorSpec("steps", (), "<i8")]


def test_specs_of_a_model_and_of_a_mapping():
    assert specs_of(NAMES, model()) == SPECS
    assert specs_of(dict(zip(NAMES, model(), strict=True))) == SPECS
    big_endian = [a.astype(a.dtype.newbyteorder(">")) for a in model()]
    assert specs_of(NAMES, big_endian) == SPECS  # specs are in the byte order models travel in
    assert [(s.size, s.nbytes) for s in SPECS] == [(6, 24), (3, 12), (1, 8)]
    assert TensorSpec.of("w", [2, 3], np.float32) == SPECS[0]
    with pytest.raises(TypeError, match="needs the arrays too"):
        specs_of(NAMES)


def test_model_rejected_is_a_value_error():
    assert issubclass(ModelRejected, ValueError) and issubclass(ModelTooLarge, ModelRejected)


def rejected(check, *args, **kwargs) -> str:
    with pytest.raises(ModelRejected) as err:
        check(*args, **kwargs)
    return str(err.value)


# --- what a message declares -------------------------------------------------------------------


def declared(**changes) -> list[TensorSpec]:
    """SPECS as a message would declare them, tensor 1 changed."""
    specs = list(SPECS)
    specs[1] = TensorSpec(**{"name": "b", "shape": (3,), "dtype": "<f4"} | changes)
    return specs


def test_check_declared_accepts_the_specs_and_the_dtype_names_flower_declares():
    check_declared(SPECS, SPECS)
    check_declared(declared(dtype="float32"), SPECS)  # a Flower Array's dtype string
    check_declared(SPECS, SPECS, allowed={"<f4", "<i8"})


@pytest.mark.parametrize(
    ("bad", "allowed", "message"),
    [
        pytest.param(SPECS[:2], None, "expected 3 weight arrays, got 2", id="count"),
        pytest.param(
            declared(name="c"),
            None,
            "weight b does not match: it must be at position 1, got 'c' in its place",
            id="name",
        ),
        pytest.param(
            declared(shape=(1, 3)),
            None,
            "weight b does not match: it must have shape (3,), got (1, 3)",
            id="shape",
        ),
        pytest.param(
            declared(dtype="<f8"),
            None,
            "weight b does not match: it must have dtype float32, got '<f8'",
            id="dtype",
        ),
        pytest.param(
            declared(dtype=">f4"),
            None,
            "weight b does not match: it must have dtype float32, got '>f4'",
            id="byte-order",
        ),
        pytest.param(
            declared(dtype="|O"), {"<f4", "<i8"}, "weight b: dtype '|O' not allowed", id="not-allowed"
        ),
        pytest.param(
            declared(name="x" * 200),
            None,
            f"weight b does not match: it must be at position 1, got '{'x' * 76}... in its place",
            id="long-untrusted-name",
        ),
    ],
)
def test_check_declared_rejects(bad, allowed, message):
    assert rejected(check_declared, bad, SPECS, allowed=allowed) == message


# --- the arrays themselves ---------------------------------------------------------------------


def test_check_arrays_accepts_a_good_model_without_copying():
    arrays = model()
    checked = check_arrays(arrays, SPECS)
    assert all(got is want for got, want in zip(checked, arrays, strict=True))
    assert all(
        isinstance(a, np.ndarray)
        for a in check_arrays([a.tolist() for a in arrays[:2]], SPECS[:2], exact_dtype=False)
    )


def with_tensor(index: int, value) -> list[np.ndarray]:
    arrays = model()
    arrays[index] = value
    return arrays


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        pytest.param(model()[:2], "expected 3 weight arrays, got 2", id="count"),
        pytest.param(
            with_tensor(0, np.zeros((3, 2), np.float32)),
            "weight w does not match: it must have shape (2, 3), got (3, 2)",
            id="shape",
        ),
        pytest.param(
            with_tensor(1, np.zeros(3, np.float64)),
            "weight b does not match: it must have dtype float32, got float64",
            id="dtype",
        ),
        pytest.param(
            with_tensor(1, np.zeros(3, ">f4")),
            "weight b does not match: it must have dtype float32, got >f4",
            id="byte-order",
        ),
        pytest.param(
            with_tensor(1, np.array([0.0, np.nan, 1.0], np.float32)),
            "weight b holds NaN or Inf: it must be finite",
            id="nan",
        ),
        pytest.param(
            with_tensor(0, np.full((2, 3), -np.inf, np.float32)),
            "weight w holds NaN or Inf: it must be finite",
            id="inf",
        ),
    ],
)
def test_check_arrays_rejects(arrays, message):
    assert rejected(check_arrays, arrays, SPECS) == message


def test_without_exact_dtypes_any_real_type_will_do_but_integers_stay_integers():
    arrays = with_tensor(0, np.ones((2, 3), np.float64))
    arrays[1] = np.array([1, 2, 3], np.int32)
    arrays[2] = np.array(3, np.int32)
    check_arrays(arrays, SPECS, exact_dtype=False)
    assert (
        rejected(check_arrays, with_tensor(2, np.array(2.5)), SPECS, exact_dtype=False)
        == "weight steps holds integers (int64); got float64"
    )
    assert (
        rejected(check_arrays, with_tensor(1, np.ones(3, np.complex64)), SPECS, exact_dtype=False)
        == "weight b must hold real numbers; got complex64"
    )
    assert "holds NaN or Inf" in rejected(
        check_arrays, with_tensor(1, np.array([np.inf, 0, 0])), SPECS, exact_dtype=False
    )


# --- limits ------------------------------------------------------------------------------------


def test_check_count_and_size():
    check_count(3, SPECS)
    assert rejected(check_count, 4, SPECS) == "expected 3 weight arrays, got 4"
    check_size(44, 44, tensors=3)
    assert rejected(check_size, 45, 44, tensors=3) == "model of 45 bytes exceeds the limit of 44"
    too_many = MAX_TENSORS + 1
    assert (
        rejected(check_size, 1, 44, tensors=too_many)
        == f"model of {too_many} tensors exceeds the limit of {MAX_TENSORS}"
    )
    with pytest.raises(ModelTooLarge):
        check_size(45, 44)


def test_a_non_finite_value_is_found_in_any_block_of_the_finiteness_check():
    """`is_finite` checks block by block: a NaN or Inf in the first, a middle or the short last
    block, of any float dtype and any layout, is found; integers and empty tensors are finite."""
    size = 3 * FINITE_BLOCK + 3
    for dtype in (np.float16, np.float32, np.float64):
        assert is_finite(np.ones(size, dtype=dtype)) and is_finite(np.zeros((0, 3), dtype=dtype))
        for where in (0, FINITE_BLOCK - 1, FINITE_BLOCK, 2 * FINITE_BLOCK + 7, size - 1):
            for bad in (np.nan, np.inf, -np.inf):
                values = np.ones(size, dtype=dtype)
                values[where] = bad
                assert not is_finite(values) and not is_finite(values.reshape(-1, 3).T)
    assert is_finite(np.full(size, np.iinfo(np.int64).max))


def test_model_norm_against_a_hand_computed_value():
    assert model_norm([np.array([3.0, 4.0]), np.array([[12.0]], np.float32)]) == 13.0
    ones = np.ones(NORM_BLOCK * 2 + 5, np.float32)  # several blocks, float32 squares summed in float64
    assert model_norm([ones, np.array(2, np.int64)]) == pytest.approx((ones.size + 4) ** 0.5, rel=1e-12)


def test_check_norm():
    arrays = [np.array([3.0, 4.0]), np.array([12.0])]  # norm 13
    check_norm(arrays, ratio=2, own_norm=6.5)
    assert rejected(check_norm, arrays, ratio=2, own_norm=6) == "norm 13 exceeds 2 x own norm 6"


# --- one validator for the wire, the Flower reply check and Learner.set_weights -----------------


def damaged(arrays: list[np.ndarray], damage: str) -> list[np.ndarray]:
    """A linear model (coef, intercept) with one kind of damage that all three callers reject."""
    arrays = [a.copy() for a in arrays]
    if damage == "count":
        return arrays[:1]
    if damage == "shape":
        arrays[0] = arrays[0].T.copy()
    elif damage == "nan":
        arrays[1][-1] = np.nan
    else:
        arrays[0][0, 0] = np.inf
    return arrays


@pytest.mark.parametrize("damage", ["count", "shape", "nan", "inf"])
def test_the_wire_the_flower_reply_check_and_the_learner_reject_alike(damage):
    from flwr.app import Array, ArrayRecord, Message, Metadata, MetricRecord, RecordDict

    from fedgossip.base import flower_protocol as p
    from fedgossip.client.gossip.transport.wire import ModelAssembler, WireError, assemble, encode
    from fedgossip.server.recording import RecordingGrid
    from fedgossip.tasks import TaskConfig, build_learner

    learner = build_learner(TaskConfig(model="linear"), 0, 2, seed=0)
    names, good = list(learner.names), learner.get_weights()
    specs = specs_of(names, good)
    assert learner.specs == specs
    arrays = damaged(good, damage)
    rows, columns = good[0].shape
    expected = {
        "count": "expected 2 weight arrays, got 1",
        "shape": f"weight coef does not match: it must have shape {(rows, columns)}, got {(columns, rows)}",
        "nan": "weight intercept holds NaN or Inf: it must be finite",
        "inf": "weight coef holds NaN or Inf: it must be finite",
    }[damage]

    with pytest.raises(ModelRejected) as by_learner:
        learner.set_weights(arrays)

    with pytest.raises(WireError) as by_wire:
        assembler = ModelAssembler(specs, senders=None, rounds=(1, 1), max_bytes=1 << 20)
        assemble(iter(encode(0, 1, 10, names[: len(arrays)], arrays)), assembler)

    global_model = ArrayRecord({n: Array(a) for n, a in zip(names, good, strict=True)})
    content = RecordDict(
        {
            p.ARRAYS: ArrayRecord({n: Array(a) for n, a in zip(names, arrays, strict=False)}),
            p.METRICS: MetricRecord({p.TRAIN_LOSS: 0.5, p.NUM_EXAMPLES: 10}),
        }
    )
    metadata = Metadata(
        run_id=1,
        message_id="r5",
        src_node_id=5,
        dst_node_id=1,
        reply_to_message_id="m5",
        group_id="",
        created_at=time.time(),
        ttl=60.0,
        message_type="train",
    )
    grid = RecordingGrid(None, {5: 0}, specs_of(global_model))
    by_flower = grid._check(Message(metadata=metadata, content=content))

    assert str(by_learner.value) == expected
    assert by_wire.value.code == grpc.StatusCode.INVALID_ARGUMENT and str(by_wire.value) == expected
    assert by_flower.has_error() and by_flower.error.reason == f"rejected reply: {expected}"
