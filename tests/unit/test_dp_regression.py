"""DP distributed Bayesian linear regression: the analytic Gaussian mechanism against Balle and
Wang's exact privacy curve computed independently (mpmath, 50 digits), the released noise's
standard deviation measured, and the estimators against direct closed-form computations."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest

from fedgossip.strategies.analytic_gaussian import analytic_gaussian_sigma
from fedgossip.strategies.dp_regression.estimators import Priors, adassp, fast_estimate, nonprivate_posterior
from fedgossip.strategies.dp_regression.mcmc import sample
from fedgossip.strategies.dp_regression.release import Bounds, NoiseLevels, release, statistics
from fedgossip.strategies.dp_regression.sampling import closest_psd, inverse_wishart, wishart
from fedgossip.tasks.dp_regression import RegressionData, party_rows, prepare_real, simulate

pytestmark = pytest.mark.timeout(60)
mpmath.mp.dps = 50


def exact_delta(sigma: float, epsilon: float, sensitivity: float) -> mpmath.mpf:
    """Balle and Wang (2018), Theorem 8: the smallest delta of the Gaussian mechanism with noise
    sigma at epsilon, Phi(D/2s - e s/D) - e^e Phi(-D/2s - e s/D), in 50-digit arithmetic."""
    s, e, d = mpmath.mpf(sigma), mpmath.mpf(epsilon), mpmath.mpf(sensitivity)
    return mpmath.ncdf(d / (2 * s) - e * s / d) - mpmath.exp(e) * mpmath.ncdf(-d / (2 * s) - e * s / d)


@pytest.mark.parametrize(
    ("epsilon", "delta", "sensitivity"),
    [
        (0.1, 1e-5, 1.0),
        (1.0, 1e-5, 1.0),
        (10.0, 1e-5, 1.0),
        (0.5, 0.3, 2.0),
        (0.05, 0.4, 1.0),
        (5.0, 1e-10, 3.0),
    ],
)
def test_analytic_gaussian_sigma_is_the_smallest_private_sigma(epsilon, delta, sensitivity):
    sigma = analytic_gaussian_sigma(epsilon, delta, sensitivity)
    assert float(exact_delta(sigma, epsilon, sensitivity)) == pytest.approx(delta, rel=1e-7)
    assert exact_delta(sigma * (1 - 1e-5), epsilon, sensitivity) > delta  # any less noise is not private


def test_analytic_gaussian_sigma_reference_values():
    # Balle and Wang's Fig. 1 regime: the analytic sigma against the classical sqrt(2 ln(1.25/d))/e;
    # values from the 50-digit root of Theorem 8 (mpmath.findroot), not from our code.
    for epsilon, delta in [(1.0, 1e-5), (0.5, 1e-5), (0.1, 1e-5)]:
        reference = mpmath.findroot(lambda s, e=epsilon, d=delta: exact_delta(s, e, 1.0) - d, 3.0 / epsilon)
        assert analytic_gaussian_sigma(epsilon, delta) == pytest.approx(float(reference), rel=1e-8)
        assert analytic_gaussian_sigma(epsilon, delta) < math.sqrt(2 * math.log(1.25 / delta)) / epsilon
    assert analytic_gaussian_sigma(1.0, 1e-5) == pytest.approx(3.7306, abs=1e-4)


def authors_grid_sigma(epsilon: float, delta: float) -> float:
    """The DP regression authors' analytic_Gaussian_mech.m: Algorithm 1 by a grid of step 0.001
    (their delta_0 uses Phi(-2 sqrt(epsilon)); at these deltas it takes Balle and Wang's branch)."""
    from scipy.stats import norm

    upper = 0.0
    while True:
        u = np.arange(upper, upper + 1 + 1e-12, 0.001)
        upper += 1
        b = norm.cdf(-np.sqrt(epsilon * u)) - np.exp(epsilon) * norm.cdf(-np.sqrt(epsilon * (u + 2)))
        if b.min() < delta < b.max():
            break
    u_star = u[(b > delta).sum()]
    return (math.sqrt(1 + u_star / 2) + math.sqrt(u_star / 2)) / math.sqrt(2 * epsilon)


@pytest.mark.parametrize("epsilon", [0.1, 1.0, 10.0])
def test_analytic_gaussian_sigma_agrees_with_the_authors_grid_search(epsilon):
    assert analytic_gaussian_sigma(epsilon, 1e-5) == pytest.approx(
        authors_grid_sigma(epsilon, 1e-5), rel=2e-4
    )


@pytest.mark.parametrize(
    ("args", "key"),
    [
        ((0.0, 1e-5), "epsilon"),
        ((-1.0, 1e-5), "epsilon"),
        ((1.0, 0.0), "delta"),
        ((1.0, 1.0), "delta"),
        ((1.0, 1e-5, 0.0), "sensitivity"),
    ],
)
def test_analytic_gaussian_sigma_refuses_bad_input(args, key):
    with pytest.raises(ValueError, match=key):
        analytic_gaussian_sigma(*args)


def test_released_noise_has_the_calibrated_std():
    bounds = Bounds(2.0, 1.5)
    levels = NoiseLevels.calibrate(1.0, 1e-5, bounds)
    unit, half = analytic_gaussian_sigma(1.0, 1e-5), analytic_gaussian_sigma(0.5, 0.5e-5)
    joint = unit * bounds.joint
    split = (half * bounds.x**2, half * bounds.x * bounds.y)
    assert (levels.s, levels.z) == ((joint, joint) if split[0] ** 2 + split[1] ** 2 > joint**2 else split)
    rng = np.random.default_rng(0)
    s, z = np.diag([3.0, 4.0, 5.0]), np.array([1.0, 2.0, 3.0])
    draws = [release(s, z, levels, rng) for _ in range(20000)]
    s_noise = np.stack([d[0] for d in draws]) - s
    z_noise = np.stack([d[1] for d in draws]) - z
    assert np.array_equal(s_noise, np.swapaxes(s_noise, 1, 2))  # symmetric
    rows, cols = np.triu_indices(3)
    upper = s_noise[:, rows, cols]
    assert upper.std(axis=0) == pytest.approx(np.full(6, levels.s), rel=0.03)
    assert z_noise.std(axis=0) == pytest.approx(np.full(3, levels.z), rel=0.03)
    assert abs(np.corrcoef(upper.T)[0, 1]) < 0.03  # independent entries


def test_nonprivate_posterior_mean_is_ridge_regression_by_least_squares():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((50, 3)), rng.standard_normal(50)
    precision = Priors().theta_precision
    augmented = np.vstack([x, math.sqrt(precision) * np.eye(3)])
    expected = np.linalg.lstsq(augmented, np.concatenate([y, np.zeros(3)]), rcond=None)[0]
    s, z = statistics(x, y)
    assert nonprivate_posterior(s, z, float(y @ y), 50).mean == pytest.approx(expected, rel=1e-10)


def test_fast_estimate_without_noise_is_the_closed_form():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((40, 2)), rng.standard_normal(40)
    bounds = Bounds(3.0, 1.2)
    halves = [statistics(x[:20], y[:20]), statistics(x[20:], y[20:])]
    estimate = fast_estimate([h[0] for h in halves], [h[1] for h in halves], NoiseLevels(0.0, 0.0), bounds)
    s, z = statistics(x, y)
    var_y = bounds.y / 3  # Z_j | S_j ~ N(S_j theta, var_y S_j): theta | all = (S/var_y + C^-1)^-1 Z/var_y
    expected = np.linalg.solve(s / var_y + Priors().theta_precision * np.eye(2), z / var_y)
    assert estimate.mean == pytest.approx(expected, rel=1e-9)


def _tiny_problem(epsilon: float, parties: int):
    rng = np.random.default_rng(3)  # a well-conditioned design: x ~ N(0, I)
    x = rng.standard_normal((2000, 2))
    data = RegressionData(x, x @ np.array([0.8, -0.5]) + rng.standard_normal(2000), np.eye(2))
    bounds = Bounds.of(data.x, data.y)
    levels = NoiseLevels.calibrate(epsilon, 1 / 2000, bounds)
    rows = party_rows(2000, parties)
    exact = [statistics(data.x[r], data.y[r]) for r in rows]
    noisy = [release(s, z, levels, rng) for s, z in exact]
    s, z = statistics(data.x, data.y)
    truth = nonprivate_posterior(s, z, float(data.y @ data.y), 2000)
    return data, bounds, levels, rows, exact, noisy, truth


@pytest.mark.parametrize("update_s", [False, True])
def test_mcmc_posterior_mean_approaches_the_nonprivate_one_at_large_epsilon(update_s):
    data, bounds, levels, rows, _, noisy, truth = _tiny_problem(1e4, 2)
    chain = sample(
        [n[0] for n in noisy],
        [n[1] for n in noisy],
        [r.stop - r.start for r in rows],
        levels,
        bounds.y / 3,
        1000,
        np.random.default_rng(4),
        update_s=update_s,
        scatter_prior=data.scatter_prior,
    )
    spread = np.sqrt(np.diag(truth.cov))
    assert np.all(np.abs(chain.posterior_mean() - truth.mean) < 4 * spread + 1e-3)


def test_one_step_and_adassp_approach_the_nonprivate_mean_at_large_epsilon():
    _, bounds, levels, _, exact, noisy, truth = _tiny_problem(1e4, 2)
    fast = fast_estimate([n[0] for n in noisy], [n[1] for n in noisy], levels, bounds)
    assert fast.mean == pytest.approx(truth.mean, abs=0.02)
    s, z = [e[0] for e in exact], [e[1] for e in exact]
    ridge = adassp(s, z, 1e4, 1 / 2000, bounds, np.random.default_rng(5))
    assert ridge == pytest.approx(truth.mean, abs=0.02)


def test_seeded_mcmc_is_reproducible():
    data, bounds, levels, rows, _, noisy, _ = _tiny_problem(1.0, 2)

    def run(seed):
        return sample(
            [n[0] for n in noisy],
            [n[1] for n in noisy],
            [r.stop - r.start for r in rows],
            levels,
            bounds.y / 3,
            200,
            np.random.default_rng(seed),
            update_s=True,
            scatter_prior=data.scatter_prior,
        )

    first, again, other = run(7), run(7), run(8)
    assert np.array_equal(first.theta, again.theta) and np.array_equal(first.var_y, again.var_y)
    assert not np.array_equal(first.theta, other.theta)


def test_wishart_draws_have_the_wishart_mean_and_inverse_wishart_its_mean():
    rng = np.random.default_rng(6)
    scale = np.array([[2.0, 0.5], [0.5, 1.0]])
    draws = wishart(np.broadcast_to(scale, (20000, 2, 2)).copy(), 7.5, rng)
    assert draws.mean(axis=0) == pytest.approx(7.5 * scale, rel=0.02)
    inverse = np.mean([inverse_wishart(scale, 9.0, rng) for _ in range(5000)], axis=0)
    assert inverse == pytest.approx(scale / (9.0 - 2 - 1), rel=0.06)


def test_closest_psd_drops_negative_eigenvalues():
    matrix = np.array([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues 3 and -1
    assert closest_psd(matrix) == pytest.approx(np.full((2, 2), 1.5))


def test_simulated_data_follows_the_model():
    data = simulate(20000, 2, np.random.default_rng(9))
    residual = data.y - data.x @ data.theta
    assert residual.var() == pytest.approx(1.0, rel=0.05)
    assert np.cov(data.x.T) == pytest.approx(data.sigma_x, rel=0.1, abs=0.05 * np.abs(data.sigma_x).max())


def test_party_rows_and_the_authors_preprocessing():
    assert party_rows(10, 3) == [slice(0, 3), slice(3, 6), slice(6, 10)]
    with pytest.raises(ValueError, match="parties"):
        party_rows(2, 3)
    table = np.array([[1.0, np.nan, 2.0], [3.0, 1.0, -2.0], [5.0, 2.0, 6.0], [7.0, 3.0, 2.0], [9, 4, 2]])
    data = prepare_real(table, np.random.default_rng(0))
    assert data.x.shape == (4, 2) and data.x_test.shape == (1, 2)  # ceil(0.8 * 5) training rows
    column = np.array([1.0, 3, 5, 7, 9])
    assert data.x[:, 0] == pytest.approx(((column - 5) / column.std(ddof=1))[:4])
    assert np.concatenate([data.y, data.y_test]) == pytest.approx(np.array([0.0, -4, 4, 0, 0]) / 4)
