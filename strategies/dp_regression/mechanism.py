"""`strategy.name = "dp-bayesian-regression"`: DP distributed Bayesian linear regression
(Alparslan, Yildirim, Birbil, ICML 2023) as a registered mechanism of both runtimes, and the
estimation step they share (:func:`estimate`)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np

from fedgossip.base.constraints import Interval

from ..mechanisms import register_mechanism
from ..registry import Param, choice, integer
from .estimators import fast_estimate
from .mcmc import sample
from .table import MAX_PARTIES, Released

DOC = """DP distributed Bayesian linear regression (Alparslan, Yildirim, Birbil, ICML 2023).

Each node is a party j: it clips its rows to ||x|| <= bound_x, |y| <= bound_y, and releases
S_j = X_j^T X_j and Z_j = X_j^T y_j once, with Gaussian noise of the analytic Gaussian mechanism
(Balle and Wang 2018) at (epsilon, delta) for the sensitivity sqrt(bound_x^4 + bound_x^2 bound_y^2)
(or (epsilon/2, delta/2) each for S and Z, whichever adds less noise: the authors' choice). The
noise is drawn once per node from the experiment seed, so a release sent again is the same release.
Parameters: epsilon, delta (the paper: 1/n), bound_x, bound_y, estimator ("fast":
Bayes-fixedS-fast; "mcmc-fixeds", "mcmc-normalx": the paper's samplers), iterations (MCMC; the
first half is burn-in).

Flower mode: every round each node sends the table holding its release (the same one every round);
the server's model is the union of the tables, from which it estimates theta with `estimator`;
the nodes evaluate the one-step estimate of the global table. Gossip mode (decentralised): each
peer pushes its table (its own release and every release it has heard of) to its neighbours and
merges by union, so releases spread hop by hop; each peer estimates theta from what it knows.
Privacy: a party's release is (epsilon, delta)-DP for its rows; forwarding or re-sending a release
is post-processing and costs nothing more, so every party's guarantee is (epsilon, delta) in both
modes, whatever the rounds, topology or number of hops. The records carry dp_parties_known,
dp_estimation_mse (against the non-private reference: the simulated theta, or the pooled
training OLS), dp_prediction_mse (test rows) and dp_seconds_per_iteration.
"""

ESTIMATORS = ("fast", "mcmc-fixeds", "mcmc-normalx")
POSITIVE = Interval(Real, 0.0, None, closed="neither")

PARAMS = (
    Param("epsilon", 1.0, POSITIVE),
    Param("delta", 1e-5, Interval(Real, 0.0, 1.0, closed="neither")),
    Param("bound_x", 4.0, POSITIVE),
    Param("bound_y", 1.0, POSITIVE),
    Param("estimator", "fast", choice(*ESTIMATORS)),
    Param("iterations", 10_000, integer(2)),
)


def check_nodes(params: Mapping[str, Any], num_nodes: int) -> None:
    """At most MAX_PARTIES parties (the table's rows)."""
    if num_nodes > MAX_PARTIES:
        raise ValueError(
            f"strategy 'dp-bayesian-regression' holds at most {MAX_PARTIES} parties: nodes.count "
            f"must be <= {MAX_PARTIES}; got {num_nodes}"
        )


DP_REGRESSION = register_mechanism(
    "dp-bayesian-regression",
    PARAMS,
    doc=DOC,
    check_nodes=check_nodes,
    gossip_plan="fedgossip.client.gossip.dp_regression:DPRegressionGossip",
    flower_strategy="fedgossip.server.dp_regression:dp_regression_strategy",
    report="fedgossip.reports.dp_regression:DPRegressionReport",
    schedules=("sync",),
    task_model="dp-bayesian-regression",
)


@dataclass(frozen=True)
class Estimate:
    """theta estimated from the known releases, and the seconds per MCMC iteration (the wall
    time of the one-step estimate)."""

    theta: np.ndarray
    seconds_per_iteration: float


def estimate(known: Released, params: Mapping[str, Any], rng: np.random.Generator) -> Estimate | None:
    """theta from the releases of `known` by params["estimator"]; None when nothing is known or
    the privacy parameters are not set. MCMC-normalX's prior scale of Sigma_x is V^T V with V
    standard normal drawn from `rng`, as the authors do for real data."""
    if not known.parties or known.levels is None or known.bounds is None:
        return None
    start = time.perf_counter()
    if params["estimator"] == "fast":
        theta = fast_estimate(known.s, known.z, known.levels, known.bounds).mean
        return Estimate(theta, time.perf_counter() - start)
    d = len(known.z[0])
    v = rng.standard_normal((d, d))
    chain = sample(
        known.s,
        known.z,
        known.sizes,
        known.levels,
        known.bounds.y / 3,
        params["iterations"],
        rng,
        update_s=params["estimator"] == "mcmc-normalx",
        scatter_prior=v.T @ v,
    )
    return Estimate(chain.posterior_mean(), (time.perf_counter() - start) / params["iterations"])


class EstimateFields:
    """A node's (or the server's) DP regression fields of a round's record: the releases known,
    the estimate's errors and its seconds per iteration, estimated again only when a new release
    became known (its own stream `rng`; the reference theta from the experimenter's data)."""

    def __init__(self, params: Mapping[str, Any], reference: Any, rng: np.random.Generator) -> None:
        """`reference`: theta, x_test and y_test to score against (`tasks.dp_regression.evaluation`)."""
        self.params, self.reference, self.rng = params, reference, rng
        self._parties: list[int] | None = None
        self._estimate: Estimate | None = None

    def __call__(self, known: Released) -> dict[str, Any]:
        """The record's dp_* fields for the releases `known`, scored on the reference."""
        if known.parties != self._parties:
            self._parties = known.parties
            self._estimate = estimate(known, self.params, self.rng)
        found, ref = self._estimate, self.reference
        return {
            "dp_parties_known": len(known.parties),
            "dp_estimator": self.params["estimator"],
            "dp_estimation_mse": None if found is None else float(np.mean((found.theta - ref.theta) ** 2)),
            "dp_prediction_mse": None
            if found is None
            else float(np.mean((ref.y_test - ref.x_test @ found.theta) ** 2)),
            "dp_seconds_per_iteration": None if found is None else found.seconds_per_iteration,
        }
