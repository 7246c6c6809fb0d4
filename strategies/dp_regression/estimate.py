"""The estimation step both runtimes of the DP regression mechanism share: theta from the
releases a table holds (:func:`estimate`) and a round's dp_* record fields (:class:`EstimateFields`)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .estimators import fast_estimate
from .mcmc import sample
from .table import Released


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
