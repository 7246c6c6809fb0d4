"""Aggregation rules of fedgossip: pure functions on models given as lists of arrays.

A model is a list of numpy arrays (Flower's ``NDArrays``); all models passed together
have the same number of tensors, with the same shapes and dtypes. The functions never
modify their inputs, return new arrays of the input dtypes, accumulate in float64 and
raise :class:`ValueError` on bad input (naming the model and tensor). They work block
by block, so models of tens of millions of parameters stay fast and need little extra
memory.

- :func:`weighted_average`: FedAvg.
- :func:`variance_corrected_average`: VCA for gossip learning (Tian et al., 2024).
- :func:`coordinate_median` and :func:`trimmed_mean`: coordinate-wise robust rules.
- :func:`krum` and :func:`multi_krum`: Byzantine-tolerant selection (Blanchard et al., 2017).
- :mod:`.fair`: the fair-incentive mechanism (Lin et al., 2023): :mod:`.contributions`
  (cosine-gradient Shapley values), :mod:`.stopping` (explore phase), :mod:`.selection`.

:mod:`.registry` names them (in :mod:`.rules`, with the signature both runtimes call), together
with Flower's built-ins and users' ``package.module:function`` rules; :mod:`.mechanisms` names
the mechanisms (``fair``) and the parts each runtime and the reports use.
"""

from . import fair as _fair  # noqa: F401  (registers the fair-incentive mechanism)
from . import rules as _rules  # noqa: F401  (registers our rules)
from ._typing import NDArray, NDArrays
from ._validation import trusted_models
from .averaging import weighted_average
from .dp_regression import mechanism as _dp_regression  # noqa: F401  (registers DP Bayesian regression)
from .krum import krum, krum_scores, multi_krum, squared_distances
from .registry import Outcome, Rule, register, resolve, run_rule
from .robust import coordinate_median, trimmed_mean
from .variance_correction import variance_corrected_average

__all__ = [
    "NDArray",
    "NDArrays",
    "Outcome",
    "Rule",
    "coordinate_median",
    "krum",
    "krum_scores",
    "multi_krum",
    "register",
    "resolve",
    "run_rule",
    "squared_distances",
    "trimmed_mean",
    "trusted_models",
    "variance_corrected_average",
    "weighted_average",
]
