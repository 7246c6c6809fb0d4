"""The pure pieces of the fair-incentive mechanism: cosine-gradient Shapley contributions against a
brute-force reference, the explore stopping rule, the exploit selection."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from fedgossip.strategies.contributions import (
    CosineUtility,
    cosine_shapley,
    exact_shapley,
    monte_carlo_shapley,
    running_mean,
)
from fedgossip.strategies.selection import select_nodes, selection_probabilities, selection_size
from fedgossip.strategies.stopping import ExploreStop, hotelling_p_value

scipy_stats = pytest.importorskip("scipy.stats")


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return 0.0 if na == 0 or nb == 0 else float(a @ b / (na * nb))


def brute_force_shapley(updates: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """The Shapley value by its permutation definition: the mean marginal utility over all orders."""
    n = len(updates)
    total = sum(w * g for w, g in zip(weights, updates, strict=True))

    def utility(members: tuple[int, ...]) -> float:
        if not members:
            return 0.0
        return cosine(total, sum(weights[j] * updates[j] for j in members))

    phi = np.zeros(n)
    for order in itertools.permutations(range(n)):
        for position, node in enumerate(order):
            phi[node] += utility(order[: position + 1]) - utility(order[:position])
    return phi / math.factorial(n)


def random_round(n: int, seed: int, size: int = 7) -> tuple[list[list[np.ndarray]], list[float]]:
    """n nodes' updates as two-tensor models, with unequal weights."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=size)
    updates = [
        [(base + rng.normal(scale=1.5, size=size)).astype(np.float32)[:4], rng.normal(size=3)]
        for _ in range(n)
    ]
    return updates, list(rng.uniform(1, 5, size=n))


def flat(model: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(t, dtype=np.float64).ravel() for t in model])


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6])
def test_exact_shapley_equals_the_permutation_definition_and_sums_to_one(n):
    updates, weights = random_round(n, seed=n)
    expected = brute_force_shapley([flat(m) for m in updates], weights)
    exact = cosine_shapley(updates, weights, method="exact")
    np.testing.assert_allclose(exact, expected, atol=1e-10)
    assert exact.sum() == pytest.approx(1.0)  # efficiency: U(all) = cos(g_N, g_N) = 1


@pytest.mark.parametrize("n", [3, 6])
def test_monte_carlo_estimate_converges_to_the_exact_value(n):
    updates, weights = random_round(n, seed=10 + n)
    exact = brute_force_shapley([flat(m) for m in updates], weights)
    rng = np.random.default_rng(0)
    draws = np.stack([cosine_shapley(updates, weights, rng=rng) for _ in range(3000)])
    spread = draws.std(axis=0) / math.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(axis=0) - exact) < 5 * spread + 1e-12)
    assert draws.sum(axis=1).mean() == pytest.approx(1.0, abs=0.02)  # efficient in expectation
    assert not np.allclose(draws[0], exact)  # one draw is an estimate, not the exact value


def test_symmetric_nodes_get_equal_values_and_a_null_node_gets_zero():
    updates, weights = random_round(4, seed=3)
    updates[1] = [t.copy() for t in updates[0]]
    weights[1] = weights[0]
    updates[3] = [np.zeros_like(t) for t in updates[3]]
    exact = cosine_shapley(updates, weights, method="exact")
    assert exact[0] == pytest.approx(exact[1])
    assert exact[3] == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(1)
    draws = np.stack([cosine_shapley(updates, weights, rng=rng) for _ in range(2000)])
    np.testing.assert_allclose(draws[:, 3], 0.0, atol=1e-12)  # null in every draw
    assert draws[:, 0].mean() == pytest.approx(draws[:, 1].mean(), abs=0.01)


def test_an_update_of_the_same_norm_contributes_less_the_noisier_it_is():
    rng = np.random.default_rng(5)
    signal = rng.normal(size=200)
    noisy = [signal + rng.normal(scale=s, size=200) for s in (0.1, 0.5, 1.0, 3.0, 10.0)]
    updates = [[g / np.linalg.norm(g)] for g in noisy]
    phi = cosine_shapley(updates, [1.0] * 5, method="exact")
    assert list(np.argsort(-phi)) == [0, 1, 2, 3, 4]


def test_a_larger_update_orthogonal_to_the_others_outweighs_each_agreeing_one():
    """What the cosine utility rewards: three nodes agree on s, a fourth sends a direction
    orthogonal to s (as random labels give) k times longer. g_N leans towards the long update, so
    from k ~ 2.2 on the disagreeing node gets more credit than each agreeing one (brute force)."""
    rng = np.random.default_rng(2)
    s, r = rng.normal(size=50), rng.normal(size=50)
    r -= (r @ s) / (s @ s) * s
    s, r = s / np.linalg.norm(s), r / np.linalg.norm(r)
    shares = {}
    for k in (0.5, 1.0, 2.0, 3.0, 4.0):
        updates = [s, s, s, k * r]
        phi = brute_force_shapley(updates, [1.0] * 4)
        np.testing.assert_allclose(cosine_shapley([[u] for u in updates], [1.0] * 4, method="exact"), phi)
        shares[k] = phi[3] - phi[0]
    assert list(shares.values()) == sorted(shares.values())  # credit grows with the norm
    assert shares[2.0] < 0 < shares[3.0]


def test_utility_of_generic_coalitions_and_the_empty_one():
    updates, weights = random_round(3, seed=7)
    utility = CosineUtility(updates, weights)
    vectors = [flat(m) for m in updates]
    w = np.asarray(weights) / sum(weights)
    total = sum(wi * g for wi, g in zip(w, vectors, strict=True))
    masks = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 1], [1, 1, 1]], dtype=bool)
    expected = [0.0, cosine(total, vectors[0]), cosine(total, w[1] * vectors[1] + w[2] * vectors[2]), 1.0]
    np.testing.assert_allclose(utility(masks), expected, atol=1e-12)


def test_exact_and_monte_carlo_on_any_utility_and_bad_arguments():
    def additive(masks):  # U(S) = sum of the members' values: the Shapley value is the value
        return masks.astype(float) @ np.array([1.0, 2.0, -0.5, 0.0])

    np.testing.assert_allclose(exact_shapley(additive, 4), [1.0, 2.0, -0.5, 0.0])
    np.testing.assert_allclose(
        monte_carlo_shapley(additive, 4, np.random.default_rng(0)), [1.0, 2.0, -0.5, 0.0]
    )
    with pytest.raises(ValueError, match="exact Shapley"):
        exact_shapley(additive, 17)
    with pytest.raises(ValueError, match="rng"):
        cosine_shapley(*random_round(2, 0))
    with pytest.raises(ValueError, match="method"):
        cosine_shapley(*random_round(2, 0), method="kernel")


def test_running_mean_is_the_mean_of_the_rounds():
    rows = np.random.default_rng(2).normal(size=(6, 3))
    psi = None
    for t, phi in enumerate(rows):
        psi = running_mean(psi, phi, t)
    np.testing.assert_allclose(psi, rows.mean(axis=0))


def test_hotelling_in_one_dimension_is_the_two_sided_t_test():
    sample = np.random.default_rng(4).normal(0.3, 1.0, size=(12, 1))
    expected = scipy_stats.ttest_1samp(sample[:, 0], 0.0).pvalue
    assert hotelling_p_value(sample, np.zeros(1)) == pytest.approx(expected)


def test_hotelling_against_the_textbook_formula():
    rng = np.random.default_rng(8)
    sample = rng.normal(size=(15, 4)) + np.array([0.5, 0.0, -0.2, 0.1])
    diff = sample.mean(axis=0)
    t2 = 15 * diff @ np.linalg.inv(np.cov(sample.T)) @ diff
    expected = scipy_stats.f.sf((15 - 4) / (4 * 14) * t2, 4, 11)
    assert hotelling_p_value(sample, np.zeros(4)) == pytest.approx(expected)


def run_stop(sequence: np.ndarray, **options) -> int | None:
    """The round (1-based) after which exploring stops on `sequence`, or None."""
    stop = ExploreStop(sequence.shape[1], np.random.default_rng(0), **options)
    for t, phi in enumerate(sequence, start=1):
        if stop.add(phi):
            return t
    return None


def test_stops_on_a_stationary_sequence_and_not_on_a_trending_one():
    rng = np.random.default_rng(11)
    stationary = 0.1 + 0.01 * rng.normal(size=(80, 12))
    trending = stationary + 0.002 * np.arange(80)[:, None] * np.linspace(1, 2, 12)
    stopped = run_stop(stationary, max_explore=200)
    assert stopped is not None and 15 < stopped <= 40
    assert run_stop(trending, max_explore=200) is None


def test_explore_bounds_and_the_fixed_length():
    rng = np.random.default_rng(12)
    stationary = 0.1 + 0.01 * rng.normal(size=(80, 5))
    trending = stationary + 0.01 * np.arange(80)[:, None]
    assert run_stop(trending, tau=8, max_explore=30) == 30
    assert run_stop(stationary, tau=8, min_explore=50, max_explore=60) >= 50
    assert run_stop(trending, rule="fixed", explore_rounds=7) == 7
    with pytest.raises(ValueError, match="tau"):
        ExploreStop(12, rng, tau=10)  # 10 nodes tested need tau > 10
    with pytest.raises(ValueError, match="stopping"):
        ExploreStop(3, rng, rule="never")


def test_every_node_keeps_a_positive_probability():
    psi = np.array([0.2, 0.1, 0.0, -0.1])
    p = selection_probabilities(psi, beta=150.0, floor=1e-3)
    assert p.sum() == pytest.approx(1.0) and p.min() >= 1e-3 / (1 + 4e-3) - 1e-12
    assert list(np.argsort(-p)) == [0, 1, 2, 3]
    np.testing.assert_allclose(selection_probabilities([np.nan, 0.0], 1.0, 0.0), [0.5, 0.5])
    soft = np.exp(3.0 * psi) / np.exp(3.0 * psi).sum()
    np.testing.assert_allclose(selection_probabilities(psi, 3.0, 0.0), soft)


def test_selection_frequencies_converge_to_the_probabilities():
    p = selection_probabilities(np.array([0.03, 0.02, 0.01, 0.0]), beta=50.0, floor=0.02)
    rng = np.random.default_rng(3)
    draws = 20000
    single = np.bincount([select_nodes(p, 1, rng)[0] for _ in range(draws)], minlength=4) / draws
    np.testing.assert_allclose(single, p, atol=4 * np.sqrt(p * (1 - p) / draws).max())
    # two without replacement: inclusion probabilities of successive sampling, by enumeration
    inclusion = np.zeros(4)
    for a, b in itertools.permutations(range(4), 2):
        chance = p[a] * p[b] / (1 - p[a])
        inclusion[[a, b]] += chance
    pairs = np.zeros(4)
    for _ in range(draws):
        chosen = select_nodes(p, 2, rng)
        assert len(set(chosen)) == 2
        pairs[chosen] += 1
    np.testing.assert_allclose(pairs / draws, inclusion, atol=0.015)


def test_selection_size():
    assert selection_size(0.4, 10) == 4 and selection_size(0.4, 30) == 12 and selection_size(1.0, 3) == 3
    with pytest.raises(ValueError, match="selects 0"):
        selection_size(0.05, 10)


def test_the_authors_history_test_is_every_row_against_the_mean_of_all_but_the_last_tau():
    rng = np.random.default_rng(13)
    rows = 0.1 + 0.01 * rng.normal(size=(25, 4))
    stop = ExploreStop(4, np.random.default_rng(0), rule="hotelling-history", tau=6, max_explore=100)
    for phi in rows:
        stop.add(phi)
    for t in (7, 15, 25):  # by hand: the first t rows against the mean of the first t - 6
        expected = hotelling_p_value(rows[:t], rows[: t - 6].mean(axis=0))
        assert stop.p_values[t - 1] == pytest.approx(expected)
    ours = ExploreStop(4, np.random.default_rng(0), tau=6, max_explore=100)
    for phi in rows:
        ours.add(phi)
    assert ours.p_values[24] == pytest.approx(hotelling_p_value(rows[-6:], rows[:-6].mean(axis=0)))
    assert ours.p_values[24] != pytest.approx(stop.p_values[24])
