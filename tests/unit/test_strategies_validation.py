"""Bad inputs to fedgossip.strategies raise ValueError with a message naming the problem."""

from __future__ import annotations

import numpy as np
import pytest

from fedgossip.strategies import (
    coordinate_median,
    trimmed_mean,
    variance_corrected_average,
    weighted_average,
)


def model(*values, dtype=np.float32):
    return [np.asarray(v, dtype=dtype) for v in values]


GOOD = model([1.0, 2.0, 3.0], [0.5])
OTHER = model([2.0, 0.0, 1.0], [1.5])
NAN = model([1.0, np.nan, 3.0], [0.5])
INF = model([1.0, 2.0, 3.0], [-np.inf])


def first(models):
    """The first model as `own`, or a valid model when there is none."""
    return models[0] if isinstance(models, list) and models else GOOD


def vca(own, received, **options):
    return variance_corrected_average(own, received, **options)


AVERAGING = [
    pytest.param(weighted_average, id="weighted_average"),
    pytest.param(lambda models: vca(None, models), id="vca"),
    pytest.param(lambda models: vca(first(models), models), id="vca_own"),
    pytest.param(coordinate_median, id="median"),
    pytest.param(lambda models: trimmed_mean(models, 0.2), id="trimmed_mean"),
]

BAD_MODELS = [
    pytest.param([], "non-empty", id="empty"),
    pytest.param(np.zeros((2, 3)), "non-empty sequence", id="ndarray-not-list"),
    pytest.param([GOOD, "abc"], "sequence of numpy arrays", id="model-not-list"),
    pytest.param([GOOD, GOOD[:1]], "has 1 tensors", id="different-lengths"),
    pytest.param([GOOD, model([1.0, 2.0], [0.5])], r"tensor 0: .*shape \(2,\)", id="shape"),
    pytest.param([GOOD, model([[1.0, 2.0, 3.0]], [0.5])], r"tensor 0: .*shape", id="ndim"),
    pytest.param([GOOD, [GOOD[0], np.array([0.5], np.float64)]], r"tensor 1: .*dtype float64", id="dtype"),
    pytest.param([model([1, 2], dtype=np.int64)] * 2, "floating-point", id="int-dtype"),
    pytest.param([[np.array([True, False])]] * 2, "floating-point", id="bool-dtype"),
    pytest.param([GOOD, NAN], r"tensor 0: .*\[1\] contains NaN or Inf", id="nan"),
    pytest.param([INF, GOOD], r"tensor 1: .*contains NaN or Inf", id="inf"),
]


@pytest.mark.parametrize("function", AVERAGING)
@pytest.mark.parametrize(("models", "message"), BAD_MODELS)
def test_bad_models_raise(function, models, message):
    with pytest.raises(ValueError, match=message):
        function(models)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        pytest.param([1.0], "expected 2 weights", id="too-few"),
        pytest.param([1.0, 2.0, 3.0], "expected 2 weights", id="too-many"),
        pytest.param([[1.0, 2.0]], "expected 2 weights", id="2-d"),
        pytest.param([1.0, -0.5], "non-negative", id="negative"),
        pytest.param([0.0, 0.0], "not all be zero", id="all-zero"),
        pytest.param([1.0, np.nan], "finite", id="nan"),
        pytest.param([np.inf, 1.0], "finite", id="inf"),
        pytest.param(["a", 1.0], "real numbers", id="not-numbers"),
    ],
)
@pytest.mark.parametrize(
    "function",
    [
        pytest.param(weighted_average, id="weighted_average"),
        pytest.param(lambda models, weights: vca(None, models, weights=weights), id="vca"),
    ],
)
def test_bad_weights_raise(function, weights, message):
    with pytest.raises(ValueError, match=message):
        function([GOOD, OTHER], weights)


@pytest.mark.parametrize(
    ("own", "options", "message"),
    [
        pytest.param(GOOD[:1], {}, "own has 1 tensors", id="own-length"),
        pytest.param(model([1.0, 2.0], [0.5]), {}, r"tensor 0: own has shape", id="own-shape"),
        pytest.param(model([1.0, 2.0, 3.0], [0.5], dtype=np.float64), {}, "own has dtype", id="own-dtype"),
        pytest.param(NAN, {}, r"tensor 0: own contains NaN", id="own-nan"),
        pytest.param(NAN, {"own_weight": 0.0}, "own contains NaN", id="own-nan-weight-0"),
        pytest.param(INF, {"skip": [1]}, r"tensor 1: own contains NaN", id="own-inf-skipped"),
        pytest.param(GOOD, {"own_weight": -0.1}, "own_weight", id="own-weight-negative"),
        pytest.param(GOOD, {"own_weight": 1.5}, "own_weight", id="own-weight-above-1"),
        pytest.param(GOOD, {"own_weight": float("nan")}, "own_weight", id="own-weight-nan"),
        pytest.param(GOOD, {"own_weight": "0.5"}, "own_weight", id="own-weight-str"),
        pytest.param(GOOD, {"eps": -1e-8}, "eps", id="eps-negative"),
        pytest.param(GOOD, {"eps": float("inf")}, "eps", id="eps-inf"),
        pytest.param(GOOD, {"ratio": -1.0}, "ratio", id="ratio-negative"),
        pytest.param(GOOD, {"ratio": float("nan")}, "ratio", id="ratio-nan"),
        pytest.param(GOOD, {"ratio": float("inf")}, "ratio", id="ratio-inf"),
        pytest.param(GOOD, {"ratio": True}, "ratio", id="ratio-bool"),
        pytest.param(GOOD, {"skip": [2]}, "out of range", id="skip-too-big"),
        pytest.param(GOOD, {"skip": [-1]}, "out of range", id="skip-negative"),
        pytest.param(GOOD, {"skip": [0.5]}, "integer tensor indices", id="skip-float"),
        pytest.param(GOOD, {"skip": "01"}, "collection of tensor indices", id="skip-str"),
        pytest.param(GOOD, {"skip": 1}, "collection of tensor indices", id="skip-int"),
        pytest.param(GOOD, {"weights": [1.0, 0.0]}, "expected 3 weights", id="weights-count"),
    ],
)
def test_bad_vca_arguments_raise(own, options, message):
    with pytest.raises(ValueError, match=message):
        variance_corrected_average(own, [GOOD, OTHER, GOOD], **options)


def test_nan_in_a_zero_weight_model_raises():
    for function in (weighted_average, lambda m, weights: vca(None, m, weights=weights)):
        with pytest.raises(ValueError, match=r"\[1\] contains NaN"):
            function([GOOD, NAN], weights=[1.0, 0.0])


def test_nan_in_received_skipped_tensor_raises():
    bad = model([1.0, 2.0, 3.0], [np.nan])
    for own in (GOOD, None):
        with pytest.raises(ValueError, match=r"tensor 1: received\[1\] contains NaN"):
            vca(own, [GOOD, bad], skip={1})


def test_integer_tensor_must_be_skipped_and_needs_own():
    counter = [np.array([1.0, 2.0]), np.array(3, dtype=np.int64)]
    with pytest.raises(ValueError, match="tensor 1: dtype int64 is not a floating-point"):
        vca(counter, [counter, counter])
    with pytest.raises(ValueError, match="tensor 1: dtype int64 is not a floating-point"):
        vca(None, [counter, counter], skip={1})
    assert vca(counter, [counter, counter], skip={1})[1] == 3


@pytest.mark.parametrize("fraction", [0.5, -0.1, 1.0, float("nan"), None])
def test_bad_trim_fraction_raises(fraction):
    with pytest.raises(ValueError, match="trim_fraction"):
        trimmed_mean([GOOD, OTHER], fraction)


def test_correction_that_overflows_raises():
    # merged = own: one tiny outlier; target = (3e38)^2: the outlier lands beyond float32 max
    own = [np.zeros(16, np.float32)]
    own[0][0] = 1e-20
    received = [[np.tile(np.array([3e38, -3e38], np.float32), 8)]]
    with pytest.raises(ValueError, match="overflows float32"):
        vca(own, received, own_weight=1.0, eps=0.0)
    # k ~ 3e42 does not fit float32 but the result does (deviations ~3e22)
    result = vca(own, received, own_weight=1.0, eps=1e-8)[0]
    assert np.isfinite(result).all() and abs(result[0]) > 1e22


def test_overflowing_factor_raises():
    # k itself overflows float64: (target + 0) / cur with cur ~ 1e-300
    own = [np.array([0.0, 1e-150])]
    received = [[np.array([1e150, -1e150])]]
    with pytest.raises(ValueError, match=r"not finite|overflows"):
        vca(own, received, own_weight=1.0, eps=0.0)
