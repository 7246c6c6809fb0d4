"""Krum and Multi-Krum against a brute-force reference written from the paper's definitions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedgossip.strategies import krum, krum_scores, multi_krum, squared_distances
from tests.support import small_blocks

SHAPES = [(3, 4), (5,), (2, 2, 2)]


def models_of(rng: np.random.Generator, count: int, dtype=np.float32, scale: float = 1.0) -> list:
    return [[(scale * rng.standard_normal(s)).astype(dtype) for s in SHAPES] for _ in range(count)]


def brute_scores(models: list, f: int) -> list[float]:
    """Score of model i: the sum of its n - f - 2 smallest squared distances to other models,
    computed with plain Python loops over the flattened models in float64."""
    flat = [np.concatenate([np.asarray(t, dtype=np.float64).ravel() for t in m]) for m in models]
    n = len(flat)
    scores = []
    for i in range(n):
        distances = sorted(
            float(sum((a - b) ** 2 for a, b in zip(flat[i], flat[j], strict=True)))
            for j in range(n)
            if j != i
        )
        scores.append(sum(distances[: n - f - 2]))
    return scores


def brute_multi_krum(models: list, f: int, m: int) -> list[np.ndarray]:
    """The plain mean of the m lowest-scored models (ties to the lower index), tensor by tensor."""
    scores = brute_scores(models, f)
    chosen = sorted(sorted(range(len(models)), key=lambda i: (scores[i], i))[:m])
    return [
        (sum(np.asarray(models[i][t], dtype=np.float64) for i in chosen) / m).astype(models[0][t].dtype)
        for t in range(len(models[0]))
    ]


def test_distances_match_pairwise_brute_force_also_across_blocks():
    rng = np.random.default_rng(0)
    models = models_of(rng, 5, np.float64)
    flat = [np.concatenate([t.ravel() for t in m]) for m in models]
    expected = np.array([[np.sum((a - b) ** 2) for b in flat] for a in flat])
    np.testing.assert_allclose(squared_distances(models), expected, rtol=1e-12)
    with small_blocks(3):  # tensors of 12, 5 and 8 elements in blocks of 3
        np.testing.assert_allclose(squared_distances(models), expected, rtol=1e-12)


def test_close_models_far_from_the_origin_keep_their_distances():
    # |x|^2 + |y|^2 - 2 x.y would lose these differences entirely to cancellation
    base = np.full(1000, 1e6)
    models = [[base + k * 1e-3] for k in range(3)]
    distances = squared_distances(models)
    np.testing.assert_allclose(distances[0], [0.0, 1000 * 1e-6, 1000 * 4e-6], rtol=1e-6)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    count=st.integers(3, 9),
    f=st.integers(0, 3),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_krum_and_multi_krum_match_the_brute_force_reference(seed, count, f, dtype):
    if count <= 2 * f + 2:
        with pytest.raises(ValueError, match=r"more than 2f \+ 2"):
            krum(models_of(np.random.default_rng(seed), count, dtype), f)
        return
    models = models_of(np.random.default_rng(seed), count, dtype)
    np.testing.assert_allclose(krum_scores(models, f), brute_scores(models, f), rtol=1e-9)
    for got, want in zip(krum(models, f), brute_multi_krum(models, f, 1), strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)  # Krum returns one of the inputs, unchanged
    for m in {1, count - f, count}:
        for got, want in zip(multi_krum(models, f, m), brute_multi_krum(models, f, m), strict=True):
            assert got.dtype == want.dtype
            np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize(("honest", "f"), [(5, 1), (7, 2), (9, 3)])
def test_byzantine_outliers_are_never_selected(honest, f):
    rng = np.random.default_rng(honest)
    centre = models_of(rng, 1)[0]
    good = [
        [c + 0.1 * rng.standard_normal(c.shape).astype(np.float32) for c in centre] for _ in range(honest)
    ]
    bad = [[c + 100.0 * (k + 1) for c in centre] for k in range(f)]
    for order in (range(honest + f), *(rng.permutation(honest + f) for _ in range(4))):
        models = [(good + bad)[i] for i in order]
        is_bad = [i >= honest for i in order]
        selected = krum(models, f)
        assert any(all(np.array_equal(a, b) for a, b in zip(selected, g, strict=True)) for g in good)
        averaged = multi_krum(models, f, honest)  # m = n - f: exactly the honest ones
        expected = brute_multi_krum(models, f, honest)
        for got, want in zip(averaged, expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-6)
        scores = krum_scores(models, f)
        assert max(s for s, b in zip(scores, is_bad, strict=True) if not b) < min(
            s for s, b in zip(scores, is_bad, strict=True) if b
        )


def test_ties_go_to_the_lower_index_and_inputs_are_not_modified():
    # points 0, 1, 2, 3 on a line, f = 0 (2 nearest): scores 5, 2, 2, 5; the middle two tie
    for values, winner, mean_of_3 in (([0.0, 1.0, 2.0, 3.0], 1.0, 1.0), ([3.0, 2.0, 1.0, 0.0], 2.0, 2.0)):
        models = [[np.array([v], np.float32)] for v in values]
        result = krum(models, 0)
        assert result[0].tolist() == [winner] and all(m[0] is not result[0] for m in models)
        assert [m[0][0] for m in models] == values
        # the tie for the third place (scores 5 and 5) goes to index 0 as well
        assert multi_krum(models, 0, 3)[0].tolist() == [pytest.approx(mean_of_3)]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda ms: krum(ms, -1), "f must be an integer >= 0; got -1"),
        (lambda ms: krum(ms, 1.5), "f must be an integer >= 0; got 1.5"),
        (lambda ms: krum(ms[:4], 1), r"more than 2f \+ 2 = 4 models \(f = 1\), got 4"),
        (lambda ms: multi_krum(ms, 1, 0), r"m must be an integer in \[1, 5\]; got 0"),
        (lambda ms: multi_krum(ms, 1, 6), r"m must be an integer in \[1, 5\]; got 6"),
        (lambda ms: krum([*ms[:4], [ms[4][0][:1], *ms[4][1:]]], 0), "models\\[4\\] has shape"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call(models_of(np.random.default_rng(1), 5))


def test_nan_input_is_named():
    models = models_of(np.random.default_rng(2), 4)
    models[2][1][3] = np.nan
    with pytest.raises(ValueError, match=r"tensor 1: models\[2\] contains NaN or Inf"):
        krum(models, 0)
