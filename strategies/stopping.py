"""When the explore phase of the fair-incentive mechanism ends: a one-sample Hotelling T^2 test on
the per-round contributions, or a fixed number of rounds.

The test (after Lin et al., ICML 2023) watches a fixed random subset of d = min(N, test_nodes)
nodes, chosen once. Once more than tau rounds exist, the last tau rows of their contributions phi
are tested against the mean of the earlier rows:

    T^2 = tau (xbar - mu0)^T S^-1 (xbar - mu0),   F = (tau - d) / (d (tau - 1)) T^2 ~ F(d, tau - d),

with xbar, S the mean and sample covariance of the last tau rows and mu0 the mean of the rows
before them. A large p-value (p > alpha) means the recent contributions look like the earlier ones:
they have settled, exploring stops. The authors' code tests the whole history against the mean of
all rows but the last tau (its line selecting the last tau rows is commented out); the last tau
rows against the earlier mean is the evident intent and the test used here (rule "hotelling");
rule "hotelling-history" is the authors' code's test, for their regime. S is inverted with a
pseudo-inverse (a singular covariance, e.g. identical nodes, does not fail).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._typing import FloatArray

RULES = ("hotelling", "hotelling-history", "fixed")


def hotelling_p_value(recent: np.ndarray, reference: np.ndarray) -> float:
    """p-value of the one-sample Hotelling T^2 test that the rows of ``recent`` (tau, d) have mean
    ``reference`` (d,); needs tau > d."""
    from scipy.stats import f as f_distribution

    recent = np.asarray(recent, dtype=np.float64)
    tau, d = recent.shape
    if tau <= d:
        raise ValueError(f"the Hotelling test needs more rows than dimensions; got {tau} rows, {d} dims")
    diff = recent.mean(axis=0) - np.asarray(reference, dtype=np.float64)
    covariance = np.atleast_2d(np.cov(recent, rowvar=False))
    t2 = float(tau * diff @ np.linalg.pinv(covariance) @ diff)
    statistic = (tau - d) / (d * (tau - 1)) * t2
    return float(f_distribution.sf(statistic, d, tau - d))


@dataclass
class ExploreStop:
    """Decides after each explore round whether exploring stops (feed it that round's phi).

    rule "hotelling": stop when the test's p > alpha, never before ``min_explore`` rounds and
    always after ``max_explore``; "hotelling-history": the same with the authors' code's test (every
    row so far against the mean of all but the last tau); rule "fixed": stop after
    ``explore_rounds`` rounds. The test's
    nodes are drawn from ``rng`` at construction.
    """

    num_nodes: int
    rng: np.random.Generator
    rule: str = "hotelling"
    alpha: float = 0.7
    tau: int = 15
    test_nodes: int = 10
    min_explore: int = 1
    max_explore: int = 100
    explore_rounds: int = 20
    history: list[FloatArray] = field(default_factory=list)
    p_values: list[float | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"stopping must be one of {', '.join(RULES)}; got {self.rule!r}")
        dims = min(self.num_nodes, self.test_nodes)
        if self.rule != "fixed" and self.tau <= dims:
            raise ValueError(
                f"tau must exceed the {dims} nodes tested (min(nodes, test_nodes)); got {self.tau}"
            )
        if self.min_explore > self.max_explore:
            raise ValueError(f"min_explore {self.min_explore} exceeds max_explore {self.max_explore}")
        self.watched = np.sort(self.rng.choice(self.num_nodes, size=dims, replace=False))

    def add(self, phi: np.ndarray) -> bool:
        """Record one explore round's contributions; whether this was the last explore round."""
        self.history.append(np.asarray(phi, dtype=np.float64))
        rounds = len(self.history)
        if self.rule == "fixed":
            self.p_values.append(None)
            return rounds >= self.explore_rounds
        p_value = None
        if rounds > self.tau:
            rows = np.stack(self.history)[:, self.watched]
            tested = rows if self.rule == "hotelling-history" else rows[-self.tau :]
            p_value = hotelling_p_value(tested, rows[: -self.tau].mean(axis=0))
        self.p_values.append(p_value)
        if rounds >= self.max_explore:
            return True
        return rounds >= self.min_explore and p_value is not None and p_value > self.alpha
