"""The analytic Gaussian mechanism (Balle and Wang, ICML 2018, Algorithm 1): the smallest noise
standard deviation sigma for which adding N(0, sigma^2 I) to a query of L2 sensitivity Delta is
(epsilon, delta)-differentially private, exact rather than the classical sqrt(2 ln(1.25/delta))
Delta / epsilon bound (which also needs epsilon < 1). Pure math on scipy's normal CDF."""

from __future__ import annotations

import math
from collections.abc import Callable

from scipy.optimize import brentq
from scipy.special import log_ndtr, ndtr


def _excess(epsilon: float, sign: float) -> Callable[[float], float]:
    """B_plus (sign +1) or B_minus (sign -1) of Algorithm 1:
    s -> Phi(sign sqrt(epsilon s)) - e^epsilon Phi(-sqrt(epsilon (s + 2)))."""

    def b(s: float) -> float:
        tail = math.exp(epsilon + log_ndtr(-math.sqrt(epsilon * (s + 2))))
        return float(ndtr(sign * math.sqrt(epsilon * s)) - tail)

    return b


def _root(f: Callable[[float], float], level: float) -> float:
    """The s >= 0 where the monotone f crosses `level`, bracketed by doubling from [0, 1]."""
    high = 1.0
    while (f(0.0) - level) * (f(high) - level) > 0:
        high *= 2.0
        if high > 1e12:
            raise ValueError("the analytic Gaussian mechanism found no root: delta is too close to 0 or 1")
    return brentq(lambda s: f(s) - level, 0.0, high, xtol=1e-14, rtol=1e-14, maxiter=500)


def analytic_gaussian_sigma(epsilon: float, delta: float, sensitivity: float = 1.0) -> float:
    """sigma of the analytic Gaussian mechanism for (epsilon, delta)-DP at L2 `sensitivity`.

    Raises ValueError for epsilon <= 0, delta outside (0, 1) or sensitivity <= 0 (naming which).
    """
    if not (isinstance(epsilon, int | float) and math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be a finite number > 0; got {epsilon!r}")
    if not (isinstance(delta, int | float) and 0 < delta < 1):
        raise ValueError(f"delta must be in (0, 1); got {delta!r}")
    if not (isinstance(sensitivity, int | float) and math.isfinite(sensitivity) and sensitivity > 0):
        raise ValueError(f"sensitivity must be a finite number > 0; got {sensitivity!r}")
    epsilon, delta = float(epsilon), float(delta)
    delta_0 = float(ndtr(0.0) - math.exp(epsilon + log_ndtr(-math.sqrt(2 * epsilon))))
    if delta >= delta_0:
        v = _root(_excess(epsilon, 1.0), delta)  # sup{v >= 0: B_plus(v) <= delta}
        alpha = math.sqrt(1 + v / 2) - math.sqrt(v / 2)
    else:
        u = _root(_excess(epsilon, -1.0), delta)  # inf{u >= 0: B_minus(u) <= delta}
        alpha = math.sqrt(1 + u / 2) + math.sqrt(u / 2)
    return alpha * sensitivity / math.sqrt(2 * epsilon)
