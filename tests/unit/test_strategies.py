"""Tests of fedgossip.strategies: hand-computed values, a plain numpy reference, properties."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedgossip.strategies import (
    coordinate_median,
    trimmed_mean,
    variance_corrected_average,
    weighted_average,
)
from tests.support import small_blocks

scipy_stats = pytest.importorskip("scipy.stats")

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference_vca(own, received, *, own_weight=0.5, eps=1e-8, ratio=1.0, weights=None, skip=()):
    """VCA written straight from the formula on whole float64 arrays (no blocks)."""
    w = np.ones(len(received)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    result = []
    for index, like in enumerate(received[0]):
        tensors = [np.asarray(model[index], dtype=np.float64) for model in received]
        avg = sum(wk * x for wk, x in zip(w, tensors, strict=True))
        if index in skip:
            result.append(own[index].copy() if own is not None else avg.astype(like.dtype))
            continue
        merged = avg if own is None else own_weight * own[index] + (1 - own_weight) * avg
        if merged.size > 1:
            target = sum(wk * np.var(x) for wk, x in zip(w, tensors, strict=True))
            mu, cur = np.mean(merged), np.var(merged)
            if cur > 0:
                k = np.sqrt((target + eps) / (cur + eps))
                k = 1 + ratio * (k - 1)
                merged = (merged - mu) * k + mu
        result.append(np.asarray(merged).astype(like.dtype))
    return result


def assert_models_close(actual, expected, ulps: float = 32) -> None:
    """Same dtypes and shapes; values within `ulps` units of the largest magnitude."""
    assert len(actual) == len(expected)
    for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert a.dtype == e.dtype, index
        assert a.shape == e.shape, index
        if e.size:
            scale = max(1.0, float(np.max(np.abs(e.astype(np.float64)))))
            atol = ulps * float(np.finfo(e.dtype).eps) * scale
            np.testing.assert_allclose(a, e, rtol=0, atol=atol, err_msg=f"tensor {index}")


SHAPES = [(3, 30_000), (100,), (1,), (4, 5), (7, 3), (), (0, 3)]
"""Tensor 0 spans two blocks of the default size, 2 and 5 have one element, 6 none."""


def random_models(rng, count, shapes=SHAPES, dtype=np.float32):
    """Models whose tensors have different means and spreads per model."""
    models = []
    for _ in range(count):
        model = []
        for shape in shapes:
            loc, scale = rng.normal(0, 0.5), rng.uniform(0.1, 2.0)
            model.append(rng.normal(loc, scale, size=shape).astype(dtype))
        models.append(model)
    return models


# ---------------------------------------------------------------- hand-computed values


A = [np.array([1.0, 2.0, 3.0], np.float32), np.array([5.0], np.float32)]
B = [np.array([3.0, 2.0, 7.0], np.float32), np.array([1.0], np.float32)]


def test_weighted_average_by_hand():
    expected = [np.array([2.0, 2.0, 5.0], np.float32), np.array([3.0], np.float32)]
    assert_models_close(weighted_average([A, B]), expected, ulps=0)
    result = weighted_average([A, B], weights=[3, 1])
    expected = [np.array([1.5, 2.0, 4.0], np.float32), np.array([4.0], np.float32)]
    assert_models_close(result, expected, ulps=0)


def test_weighted_average_zero_weight_model_is_ignored():
    result = weighted_average([A, B], weights=[0.0, 2.0])
    assert_models_close(result, B)


def test_vca_pure_average_by_hand():
    # avg = [2, 2, 5]: mean 3, var 2; var(A) = 2/3, var(B) = 14/3, target = 8/3
    # k = sqrt(8/3 / 2) = sqrt(4/3); result = 3 + [-1, -1, 2] * k; [5], [1] -> 3 (1 element)
    result = variance_corrected_average(None, [A, B], eps=0.0)
    k = 1.1547005383792515
    expected = [np.array([3 - k, 3 - k, 3 + 2 * k], np.float32), np.array([3.0], np.float32)]
    assert_models_close(result, expected, ulps=2)
    np.testing.assert_allclose(result[0], [1.8452995, 1.8452995, 5.3094006], rtol=1e-7)


def test_vca_with_own_by_hand():
    # merged = 0.5 A + 0.5 B = [2, 2, 5]; target = var(B) = 14/3; k = sqrt(7/3)
    result = variance_corrected_average(A, [B], own_weight=0.5, eps=0.0)
    np.testing.assert_allclose(result[0], [1.4724747, 1.4724747, 6.0550505], rtol=1e-7)
    np.testing.assert_allclose(result[1], [3.0])


def test_vca_ratio_and_eps_by_hand():
    # ratio 0.5: k = 1 + 0.5 (sqrt(4/3) - 1); eps 1: k = sqrt((8/3 + 1) / (2 + 1))
    half = variance_corrected_average(None, [A, B], eps=0.0, ratio=0.5)
    k = 1 + 0.5 * (math.sqrt(4 / 3) - 1)
    np.testing.assert_allclose(half[0], [3 - k, 3 - k, 3 + 2 * k], rtol=1e-6)
    regularised = variance_corrected_average(None, [A, B], eps=1.0)
    k = math.sqrt((8 / 3 + 1) / 3)
    np.testing.assert_allclose(regularised[0], [3 - k, 3 - k, 3 + 2 * k], rtol=1e-6)
    plain = variance_corrected_average(None, [A, B], ratio=0.0)
    np.testing.assert_array_equal(plain[0], [2.0, 2.0, 5.0])


def test_vca_weighted_target_by_hand():
    # weights 3:1 -> avg = [1.5, 2, 4] (mean 2.5, var 7/6), target = (3 * 2/3 + 14/3) / 4 = 5/3
    result = variance_corrected_average(None, [A, B], eps=0.0, weights=[3, 1])
    k = math.sqrt((5 / 3) / (7 / 6))
    expected = 2.5 + (np.array([1.5, 2.0, 4.0]) - 2.5) * k
    np.testing.assert_allclose(result[0], expected, rtol=1e-6)


def test_vca_skip_copies_own_or_averages():
    own = [np.array([0.0, 1.0]), np.array([9.0, 9.0]), np.array(7, dtype=np.int64)]
    received = [
        [np.array([2.0, 3.0]), np.array([1.0, 3.0]), np.array(2, dtype=np.int64)],
        [np.array([4.0, 9.0]), np.array([3.0, 5.0]), np.array(4, dtype=np.int64)],
    ]
    result = variance_corrected_average(own, received, skip={1, 2})
    np.testing.assert_array_equal(result[1], [9.0, 9.0])
    assert result[1] is not own[1]
    assert result[2].dtype == np.int64 and result[2] == 7
    pure = variance_corrected_average(None, [m[:2] for m in received], skip=[1])
    np.testing.assert_array_equal(pure[1], [2.0, 4.0])


def test_vca_constant_merged_tensor_is_left_alone():
    # avg of [1, 2] and [2, 1] is constant: nothing to rescale, even with eps = 0
    result = variance_corrected_average(None, [[np.array([1.0, 2.0])], [np.array([2.0, 1.0])]], eps=0)
    np.testing.assert_array_equal(result[0], [1.5, 1.5])
    zeros = [np.zeros(4, np.float32)]
    np.testing.assert_array_equal(variance_corrected_average(zeros, [zeros], eps=0)[0], zeros[0])
    # constant up to float64 rounding: the rounding noise must not be blown up to var = 1
    d = np.random.default_rng(0).normal(size=1000)
    result = variance_corrected_average(None, [[1.1 + d], [1.1 - d]], eps=0)[0]
    np.testing.assert_allclose(result, 1.1, rtol=1e-15)


def test_median_and_trimmed_mean_by_hand():
    models = [[np.array([1.0, 10.0])], [np.array([2.0, -5.0])], [np.array([9.0, 0.0])]]
    np.testing.assert_array_equal(coordinate_median(models)[0], [2.0, 0.0])
    np.testing.assert_array_equal(coordinate_median(models[:2])[0], [1.5, 2.5])
    four = [*models, [np.array([3.0, 1.0])]]
    # drop 1 smallest and 1 largest of 4: [2, 3] -> 2.5 and [0, 1] -> 0.5
    np.testing.assert_array_equal(trimmed_mean(four, 0.25)[0], [2.5, 0.5])
    np.testing.assert_array_equal(trimmed_mean(four, 0.2)[0], [3.75, 1.5])  # floor(0.8) = 0


# ---------------------------------------------------------------- plain numpy reference


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"own_weight": 0.3, "eps": 1e-4, "skip": {3}},
        {"own_weight": 0.0, "ratio": 0.5, "weights": [1.0, 0.0, 2.0, 5.0]},
        {"own_weight": 1.0, "eps": 0.0, "weights": [2, 1, 1, 3], "skip": [3, 5]},
        {"ratio": 2.0, "eps": 0.0},
        {"ratio": 0.0},
    ],
)
@pytest.mark.parametrize("with_own", [True, False])
def test_vca_matches_reference(dtype, options, with_own):
    rng = np.random.default_rng(7)
    own, *received = random_models(rng, 5, dtype=dtype)
    own = own if with_own else None
    result = variance_corrected_average(own, received, **options)
    expected = reference_vca(own, received, **options)
    assert_models_close(result, expected)


def test_vca_matches_reference_in_small_blocks():
    rng = np.random.default_rng(8)
    own, *received = random_models(rng, 4, shapes=[(50, 13), (64,), (3,)], dtype=np.float64)
    for block in (1, 7, 64, 650):
        with small_blocks(block):
            result = variance_corrected_average(own, received, weights=[1, 2, 3])
        assert_models_close(result, reference_vca(own, received, weights=[1, 2, 3]), ulps=64)


def test_vca_large_mean_small_spread_is_accurate():
    # mean / std = 1e9: the one-pass variance formula cancels, the two-pass fallback must not
    rng = np.random.default_rng(9)
    received = [[1e6 + rng.normal(0, 1e-3 * (i + 1), 200_000)] for i in range(3)]
    result = variance_corrected_average(None, received, eps=0.0)[0]
    target = np.mean([np.var(model[0]) for model in received])
    np.testing.assert_allclose(np.var(result), target, rtol=1e-6)
    np.testing.assert_allclose(np.mean(result), np.mean([m[0] for m in received]), rtol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weighted_average_matches_reference(dtype):
    rng = np.random.default_rng(10)
    models = random_models(rng, 4, dtype=dtype)
    weights = [1.0, 3.0, 0.5, 2.0]
    expected = reference_vca(None, models, weights=weights, ratio=0.0)
    assert_models_close(weighted_average(models, weights), expected, ulps=2)


@pytest.mark.parametrize("count", [1, 2, 5, 6])
def test_robust_rules_match_numpy_and_scipy(count):
    rng = np.random.default_rng(count)
    models = random_models(rng, count)
    median = coordinate_median(models)
    for index, tensor in enumerate(median):
        stack = np.stack([model[index] for model in models])
        np.testing.assert_array_equal(tensor, np.median(stack, axis=0))
    for fraction in (0.0, 0.2, 0.34, 0.49):
        trimmed = trimmed_mean(models, fraction)
        for index, tensor in enumerate(trimmed):
            stack = np.stack([model[index] for model in models])
            expected = scipy_stats.trim_mean(stack.astype(np.float64), fraction, axis=0)
            assert tensor.dtype == np.float32
            np.testing.assert_allclose(tensor, expected, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- properties


finite = st.floats(-100, 100, allow_nan=False, allow_infinity=False, allow_subnormal=False)


@st.composite
def model_sets(draw, min_models=1, max_models=5, with_weights=False):
    """(models, weights): 1-D float64 single-tensor models, optional non-negative weights."""
    count = draw(st.integers(min_models, max_models))
    length = draw(st.integers(2, 40))
    tensors = [draw(hnp.arrays(np.float64, length, elements=finite)) for _ in range(count)]
    weights = None
    if with_weights:
        weights = draw(st.lists(st.floats(0, 10), min_size=count, max_size=count))
        assume(sum(weights) > 1e-3)
    return [[tensor] for tensor in tensors], weights


def merged_of(own, received, own_weight, weights):
    w = np.ones(len(received)) if weights is None else np.asarray(weights)
    avg = sum(wk * m[0] for wk, m in zip(w / w.sum(), received, strict=True))
    return avg if own is None else own_weight * own[0] + (1 - own_weight) * avg


@SETTINGS
@given(
    sets=model_sets(min_models=2, with_weights=True),
    own_weight=st.sampled_from([0.0, 0.25, 0.5, 1.0]),
    block=st.sampled_from([3, 64]),
)
def test_vca_preserves_mean_and_hits_target_variance(sets, own_weight, block):
    (own, *received), weights = sets
    weights = weights[1:]
    assume(sum(weights) > 1e-3)
    merged = merged_of(own, received, own_weight, weights)
    assume(np.var(merged) > 1e-8 * max(1.0, float(np.mean(merged**2))))
    with small_blocks(block):
        result = variance_corrected_average(own, received, own_weight=own_weight, eps=0.0, weights=weights)[0]
    w = np.asarray(weights) / sum(weights)
    target = sum(wk * np.var(m[0]) for wk, m in zip(w, received, strict=True))
    # rounding of merged is amplified by k, so compare against the result's own spread
    mean = float(np.mean(merged))
    atol = 1e-10 * (float(np.std(result)) + abs(mean)) + 1e-300
    np.testing.assert_allclose(np.mean(result), mean, rtol=0, atol=atol)
    # Absolute rounding noise of var(result), with u = eps_64 and s = max |input|:
    # each result value is rounded by ~u * s (cross term 2 * sqrt(target) * u * s) and
    # np.var's own mean is off by up to n * u * s (squared; all of var(result) when the
    # result is constant, target = 0). Ordinary inputs are held to rtol alone.
    u = float(np.finfo(np.float64).eps)
    s = max(float(np.max(np.abs(m[0]))) for m in [own, *received])
    atol = 4 * u * s * math.sqrt(target) + (result.size * u * s) ** 2
    np.testing.assert_allclose(np.var(result), target, rtol=1e-8, atol=atol)


@SETTINGS
@given(
    tensor=hnp.arrays(np.float64, st.integers(1, 30), elements=finite),
    count=st.integers(1, 4),
    with_own=st.booleans(),
)
def test_vca_of_identical_models_is_plain_average(tensor, count, with_own):
    own = [tensor.copy()] if with_own else None
    result = variance_corrected_average(own, [[tensor.copy()] for _ in range(count)])[0]
    np.testing.assert_allclose(result, tensor, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(sets=model_sets(min_models=2, with_weights=True), data=st.data())
def test_vca_ignores_order_of_received_models(sets, data):
    models, weights = sets
    merged = merged_of(None, models, 0.0, weights)
    assume(np.var(merged) > 1e-8 * max(1.0, float(np.mean(merged**2))))
    order = data.draw(st.permutations(range(len(models))))
    result = variance_corrected_average(None, models, weights=weights)[0]
    shuffled = variance_corrected_average(
        None, [models[i] for i in order], weights=[weights[i] for i in order]
    )[0]
    # summation order changes merged by rounding only, amplified by at most k
    atol = 1e-9 * (float(np.std(result)) + float(np.max(np.abs(result)))) + 1e-300
    np.testing.assert_allclose(shuffled, result, rtol=0, atol=atol)


@SETTINGS
@given(sets=model_sets(), block=st.sampled_from([2, 64]))
def test_weighted_average_with_equal_weights_is_mean(sets, block):
    models, _ = sets
    with small_blocks(block):
        result = weighted_average(models)[0]
        explicit = weighted_average(models, weights=[2.5] * len(models))[0]
    expected = np.mean([model[0] for model in models], axis=0)
    np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(explicit, expected, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(
    sets=model_sets(max_models=7),
    fraction=st.floats(0, 0.5, exclude_max=True),
    block=st.sampled_from([3, 64]),
)
def test_median_and_trimmed_mean_agree_with_numpy_and_scipy(sets, fraction, block):
    models, _ = sets
    stack = np.stack([model[0] for model in models])
    with small_blocks(block):
        median = coordinate_median(models)[0]
        trimmed = trimmed_mean(models, fraction)[0]
    np.testing.assert_array_equal(median, np.median(stack, axis=0))
    expected = scipy_stats.trim_mean(stack, fraction, axis=0)
    np.testing.assert_allclose(trimmed, expected, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- dtypes and immutability


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_output_dtypes_and_shapes_are_preserved(dtype):
    rng = np.random.default_rng(11)
    own, *models = random_models(rng, 4, shapes=[(5, 4), (1,), (), (0,)], dtype=dtype)
    results = [
        weighted_average(models),
        variance_corrected_average(own, models),
        variance_corrected_average(None, models, skip=[0]),
        coordinate_median(models),
        trimmed_mean(models, 0.25),
    ]
    for result in results:
        assert [t.dtype for t in result] == [np.dtype(dtype)] * 4
        assert [t.shape for t in result] == [(5, 4), (1,), (), (0,)]


def test_inputs_are_not_modified():
    rng = np.random.default_rng(12)
    own, *models = random_models(rng, 4, shapes=[(3, 30_000), (10,), (1,)])
    models[1][1] = rng.normal(size=20).astype(np.float32)[::2]  # a strided view
    own_before, models_before = copy.deepcopy(own), copy.deepcopy(models)
    weights = [1.0, 2.0, 3.0]
    variance_corrected_average(own, models, weights=weights, skip=[2])
    variance_corrected_average(None, models, weights=weights)
    weighted_average(models, weights)
    coordinate_median(models)
    trimmed_mean(models, 0.34)
    for after, before in zip([own, *models], [own_before, *models_before], strict=True):
        for a, b in zip(after, before, strict=True):
            np.testing.assert_array_equal(a, b)
    assert weights == [1.0, 2.0, 3.0]


def test_non_contiguous_tensors_are_handled():
    rng = np.random.default_rng(13)
    base = [rng.normal(size=(6, 8)) for _ in range(3)]
    views = [[tensor.T] for tensor in base]  # Fortran-ordered views
    expected = reference_vca(None, [[np.ascontiguousarray(v[0])] for v in views])
    assert_models_close(variance_corrected_average(None, views), expected)
    np.testing.assert_allclose(weighted_average(views)[0], np.mean([v[0] for v in views], axis=0))
