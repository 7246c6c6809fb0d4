"""The fused kernels (strategies/_fused.py, numba): against the numpy path and a float64 reference.

Tests that run the kernel are skipped when numba is not installed (``pip install ".[fast]"``);
the gating tests (small tensors never import numba, the numpy path without numba) always run.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

import fedgossip.strategies
from fedgossip.strategies import _fused, variance_corrected_average, weighted_average
from tests.unit.test_strategies import assert_models_close, random_models, reference_vca

needs_numba = pytest.mark.skipif(
    importlib.util.find_spec("numba") is None, reason="numba is not installed (pip install '.[fast]')"
)


@pytest.fixture
def kernel(monkeypatch):
    """Every float32/float64 tensor takes the fused kernel, whatever its size."""
    monkeypatch.setattr(_fused, "MIN_SIZE", 0)
    monkeypatch.setattr(_fused, "enabled", True)


def numpy_path(own, received, **options):
    """VCA with the kernel switched off: the numpy path the kernel must agree with."""
    return without_kernel(variance_corrected_average, own, received, **options)


def without_kernel(function, *args, **options):
    enabled = _fused.enabled
    _fused.enabled = False
    try:
        return function(*args, **options)
    finally:
        _fused.enabled = enabled


def merge(sources, coefficients, first, block_size):
    """:func:`_fused.merge_moments` on flat sources: (out, mean, variance, bad)."""
    out = np.empty(sources[0].size, dtype=sources[0].dtype)
    merged = np.empty(max(1, min(out.size, block_size)))
    mean, m2, bad = _fused.merge_moments(sources, np.asarray(coefficients), first, out, merged, block_size)
    return out, mean, m2 / out.size, bad


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("block_size", [1, 7, 1000, 1 << 16])
@pytest.mark.parametrize("first", [0, 1])
def test_kernel_moments_match_float64_formulas(dtype, block_size, first):
    rng = np.random.default_rng(block_size + first)
    size = 10_007  # odd: a short last block
    sources = [rng.normal(rng.normal(0, 2), rng.uniform(0.1, 3), size).astype(dtype) for _ in range(5)]
    coefficients = [0.4, 0.05, 0.25, 0.0, 0.3]
    out, mean, variance, bad = merge(sources, coefficients, first, block_size)
    assert bad is None
    wide = [source.astype(np.float64) for source in sources]
    merged = sum(c * x for c, x in zip(coefficients, wide, strict=True))
    series = [*wide[first:], merged]
    np.testing.assert_allclose(mean, [np.mean(x) for x in series], rtol=1e-12)
    np.testing.assert_allclose(variance, [np.mean((x - np.mean(x)) ** 2) for x in series], rtol=1e-12)
    assert_rounded_sum(out, coefficients, sources)


def assert_rounded_sum(out, coefficients, sources):
    """``out`` is ``sum_i c_i sources[i]`` summed in float64 in any order, rounded once.

    One unit of the output dtype's rounding, plus float64 rounding of the terms (what is left
    where the terms cancel).
    """
    wide = [np.asarray(source, dtype=np.float64) for source in sources]
    exact = sum(c * x for c, x in zip(coefficients, wide, strict=True))
    terms = sum(abs(c) * np.abs(x) for c, x in zip(coefficients, wide, strict=True))
    tolerance = np.finfo(out.dtype).eps * np.abs(exact) + 8 * np.finfo(np.float64).eps * terms
    assert np.all(np.abs(out - exact) <= tolerance)


@needs_numba
def test_kernel_cancelling_blocks_take_two_passes():
    # mean / std = 1e9: the one-pass formula loses every digit; the two-pass recomputation keeps them
    rng = np.random.default_rng(3)
    sources = [1e6 + rng.normal(0, 1e-3 * (i + 1), 300_001) for i in range(3)]
    _, mean, variance, _ = merge(sources, [0.2, 0.3, 0.5], 0, 1 << 16)
    merged = 0.2 * sources[0] + 0.3 * sources[1] + 0.5 * sources[2]
    expected = [np.var(x) for x in [*sources, merged]]
    # the block means carry float64 rounding of 1e6-sized sums into the combination: ~1e-9 relative
    # here, as in the numpy path (6e-10); the one-pass formula alone would have no digit left
    np.testing.assert_allclose(variance, expected, rtol=1e-8)
    np.testing.assert_allclose(mean[-1], np.mean(merged), rtol=1e-15)


@needs_numba
def test_kernel_results_do_not_depend_on_where_the_arrays_are():
    # the same values at other addresses, the merge buffer apart or right after a source (where
    # index wraparound once sent the loops to their scalar version: other sums, other last bits)
    rng = np.random.default_rng(4)
    size, block = 70_001, 1 << 14
    values = [rng.normal(1.0, 0.5, size).astype(np.float32) for _ in range(3)]
    coefficients = np.array([0.5, 0.2, 0.3])
    results = set()
    for shift in (0, 8, 24):
        raw = np.zeros(3 * 4 * size + 8 * block + 64, np.uint8)
        sources = []
        for i, row in enumerate(values):
            start = shift + i * 4 * size + (4 * size) % 8 * i
            sources.append(raw[start : start + 4 * size].view(np.float32))
            sources[-1][:] = row
        end = shift + 3 * 4 * size + (4 * size) % 8 * 3
        end += -end % 8
        for merged in (np.empty(block), raw[end : end + 8 * block].view(np.float64)):
            out = np.empty(size, np.float32)
            mean, m2, _ = _fused.merge_moments(sources, coefficients, 1, out, merged, block)
            results.add((mean.tobytes(), m2.tobytes(), out.tobytes()))
    assert len(results) == 1


SHAPES = [(301, 17), (4099,), (2, 3, 5, 7), (1,), (0, 4)]

OPTIONS = [
    {},
    {"weights": [3.0, 0.0, 1.0, 2.0]},
    {"own_weight": 0.0, "ratio": 0.5},
    {"own_weight": 1.0, "eps": 0.0, "skip": [1]},
    {"ratio": 2.0, "eps": 0.0},
    {"eps": 1e-2},
]


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("with_own", [True, False])
def test_vca_with_kernel_matches_numpy_path_and_reference(kernel, dtype, options, with_own):
    rng = np.random.default_rng(11)
    own, *received = random_models(rng, 5, shapes=SHAPES, dtype=dtype)
    own = own if with_own else None
    result = variance_corrected_average(own, received, **options)
    numpy_result = numpy_path(own, received, **options)
    # a merged value one unit of rounding apart is rescaled by k (up to 4 here) and rounded again;
    # float64 outputs keep the float64 sums' own differences (a few units, times k)
    assert_models_close(result, numpy_result, ulps=4 if dtype == np.float32 else 32)
    assert_models_close(result, reference_vca(own, received, **options))


@needs_numba
def test_vca_with_kernel_on_non_contiguous_tensors(kernel):
    rng = np.random.default_rng(12)
    base = random_models(rng, 4, shapes=[(64, 90), (3001,)])
    # transposed (copied once by the flat view) and strided (flat but not contiguous)
    models = [[model[0].T, model[1][::3]] for model in base]
    result = variance_corrected_average(models[0], models[1:], weights=[1, 2, 3])
    assert_models_close(result, numpy_path(models[0], models[1:], weights=[1, 2, 3]), ulps=4)
    assert_models_close(result, reference_vca(models[0], models[1:], weights=[1, 2, 3]))


@needs_numba
@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        (0, np.nan, r"tensor 0: own contains NaN or Inf"),
        (2, np.inf, r"tensor 0: received\[1\] contains NaN or Inf"),
        (3, -np.inf, r"tensor 0: received\[2\] contains NaN or Inf"),
    ],
)
@pytest.mark.parametrize("position", [0, 5000, 9999])  # first, a middle and the last block
def test_kernel_rejects_nan_and_inf_like_the_numpy_path(kernel, where, value, message, position):
    rng = np.random.default_rng(13)
    models = [[rng.normal(0, 1, 10_000).astype(np.float32)] for _ in range(4)]
    models[where][0][position] = value
    for path in (variance_corrected_average, numpy_path):
        with pytest.raises(ValueError, match=message):
            path(models[0], models[1:], own_weight=0.0 if where == 0 else 0.5)


@needs_numba
def test_kernel_reports_overflow_like_the_numpy_path(kernel):
    big = [np.full(100, 1e308), np.full(100, 1e308)]
    for path in (variance_corrected_average, numpy_path):
        with pytest.raises(ValueError, match="tensor 0: overflow while aggregating"):
            path(None, [[big[0]], [big[1]]])


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weights", [None, [3.0, 0.0, 1.0, 2.0, 0.5]])
def test_averaging_with_kernel_matches_numpy_path_and_float64_sum(kernel, dtype, weights):
    rng = np.random.default_rng(15)
    models = random_models(rng, 5, shapes=SHAPES, dtype=dtype)
    models = [[model[0].T, *model[1:]] for model in models]  # one non-contiguous tensor
    result = weighted_average(models, weights)
    # float32: one unit of rounding; float64 keeps the float64 sums' own differences
    assert_models_close(
        result, without_kernel(weighted_average, models, weights), ulps=1 if dtype == np.float32 else 4
    )
    w = np.ones(5) if weights is None else np.asarray(weights)
    for index, tensor in enumerate(result):
        assert_rounded_sum(tensor, w / w.sum(), [model[index] for model in models])


@needs_numba
@pytest.mark.parametrize("position", [0, 5000, 9999])
def test_averaging_kernel_rejects_nan_and_inf_like_the_numpy_path(kernel, position):
    rng = np.random.default_rng(16)
    models = [[rng.normal(0, 1, 10_000).astype(np.float32)] for _ in range(3)]
    models[1][0][position] = np.nan
    models[2][0][9999 - position] = np.inf
    for path in (weighted_average, lambda m: without_kernel(weighted_average, m)):
        with pytest.raises(ValueError, match=r"tensor 0: models\[1\] contains NaN or Inf"):
            path(models)
    # a zero-weight model is only checked, outside the kernel; a block sum that overflows is no error
    models[1][0][position] = 1.0
    with pytest.raises(ValueError, match=r"tensor 0: models\[2\] contains NaN or Inf"):
        weighted_average(models, [1.0, 1.0, 0.0])
    huge = [[np.full(100, 1e308)], [np.full(100, 1e308)]]
    np.testing.assert_array_equal(weighted_average(huge)[0], huge[0][0])


def test_small_tensors_and_other_dtypes_do_not_use_the_kernel(monkeypatch):
    assert not _fused.usable(_fused.MIN_SIZE - 1, np.dtype(np.float32))
    monkeypatch.setattr(_fused, "MIN_SIZE", 0)
    assert not _fused.usable(10, np.dtype(np.float16))
    monkeypatch.setattr(_fused, "enabled", False)
    assert not _fused.usable(10, np.dtype(np.float32))


def test_small_models_never_import_numba():
    code = (
        "import sys, numpy as np\n"
        "from fedgossip.strategies import variance_corrected_average, weighted_average\n"
        "models = [[np.random.default_rng(i).normal(size=(256, 256)).astype(np.float32)] for i in range(4)]\n"
        "variance_corrected_average(models[0], models[1:])\n"
        "weighted_average(models)\n"
        "assert 'numba' not in sys.modules, 'numba imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_without_numba_the_numpy_path_runs(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` raises ImportError
    monkeypatch.delitem(sys.modules, "fedgossip.strategies._fused_kernels", raising=False)
    monkeypatch.delattr(fedgossip.strategies, "_fused_kernels", raising=False)
    monkeypatch.setattr(_fused, "_kernels", None)
    monkeypatch.setattr(_fused, "_missing", False)
    monkeypatch.setattr(_fused, "MIN_SIZE", 0)
    assert _fused.kernels() is None
    assert not _fused.usable(10, np.dtype(np.float32))
    rng = np.random.default_rng(14)
    own, *received = random_models(rng, 3)
    assert_models_close(variance_corrected_average(own, received), reference_vca(own, received))
