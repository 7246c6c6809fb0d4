"""`strategy.name = "dp-bayesian-regression"`: DP distributed Bayesian linear regression
(Alparslan, Yildirim, Birbil, ICML 2023) as a registered mechanism of both runtimes (its entry
and parameters only: the math, which needs scipy, is imported by the parts that run it)."""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Real
from typing import Any

from fedgossip.base.constraints import Interval

from ..mechanisms import register_mechanism
from ..registry import Param, choice, integer

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
MAX_PARTIES = 64  # the rows of the table of releases (`table`)
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
