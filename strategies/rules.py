"""Our aggregation rules, registered once each with the common signature of both runtimes.

``rule(own, received, weights, **params)``: ``own`` is the node's model in gossip, ``None`` on a
Flower server; ``received`` the neighbours' or clients' models; ``weights`` their example counts.
Gossip semantics: ``average`` and ``vca`` give the own model weight ``own_weight`` and share the
rest among the received models by example count; the robust rules (``median``,
``trimmed-mean``, ``krum``, ``multi-krum``) count the own model as one vote among all and ignore
the example counts (a Byzantine sender could inflate them).
"""

from collections.abc import Mapping
from typing import Any

from ._typing import NDArrays
from ._validation import check_weights
from .averaging import weighted_average
from .krum import krum, multi_krum
from .registry import integer, real, register
from .robust import coordinate_median, trimmed_mean
from .variance_correction import variance_corrected_average


def _votes(own: NDArrays | None, received: list[NDArrays]) -> list[NDArrays]:
    """The models a robust rule takes: the own model (if any) as one vote among the received."""
    return received if own is None else [own, *received]


@register("average", own_weight=real(0.0, 1.0))
def average(
    own: NDArrays | None, received: list[NDArrays], weights: list[float], *, own_weight: float = 0.5
) -> NDArrays:
    """Weighted average (FedAvg) [McMahan et al., 2017].

    With ``x_1 .. x_K`` the received models, ``n_k`` their example counts and ``b`` the own
    weight, each tensor of the result is

        gossip:  b * own + (1 - b) * sum_k n_k x_k / sum_k n_k
        Flower:  sum_k n_k x_k / sum_k n_k                      (own is None)

    Parameters
    ----------
    own_weight : float (default: 0.5)
        ``b`` in ``[0, 1]``, the weight of the own model (gossip only).
    """
    if own is None:
        return weighted_average(received, weights)
    shares = check_weights(weights, len(received))
    return weighted_average([own, *received], [own_weight, *((1.0 - own_weight) * shares)])


@register("vca", own_weight=real(0.0, 1.0), eps=real(0.0), ratio=real(0.0))
def vca(
    own: NDArrays | None,
    received: list[NDArrays],
    weights: list[float],
    *,
    own_weight: float = 0.5,
    eps: float = 1e-8,
    ratio: float = 1.0,
) -> NDArrays:
    """Variance-corrected averaging (VCA) [Tian et al., 2024].

    Per tensor, with ``w_k`` the received models' normalised example counts:

        merged = b * own + (1 - b) * sum_k w_k x_k       (Flower: b = 0, no own model)
        target = sum_k w_k var(x_k)
        k      = 1 + ratio * (sqrt((target + eps) / (var(merged) + eps)) - 1)
        result = (merged - mean(merged)) * k + mean(merged)

    See :func:`fedgossip.strategies.variance_corrected_average`.

    Parameters
    ----------
    own_weight : float (default: 0.5)
        ``b`` in ``[0, 1]``, the weight of the own model (gossip only).
    eps : float (default: 1e-8)
        Non-negative regulariser of ``k``.
    ratio : float (default: 1.0)
        Non-negative strength of the correction: 0 none, 1 full.
    """
    return variance_corrected_average(
        own, received, own_weight=own_weight, eps=eps, ratio=ratio, weights=weights
    )


@register("median")
def median(own: NDArrays | None, received: list[NDArrays], weights: list[float]) -> NDArrays:
    """Coordinate-wise median [Yin et al., 2018] of the own model and the received ones.

        result[j] = median(m_1[j], .., m_n[j])     (m: own, if any, and the received models)

    Example counts are ignored. No parameters.
    """
    return coordinate_median(_votes(own, received))


@register("trimmed-mean", trim_fraction=real(0.0, 0.5, high_open=True))
def trimmed(
    own: NDArrays | None, received: list[NDArrays], weights: list[float], *, trim_fraction: float = 0.2
) -> NDArrays:
    """Coordinate-wise trimmed mean [Yin et al., 2018] of the own model and the received ones.

    With ``n`` models and ``c = floor(trim_fraction * n)``, each element of the result is the
    mean of the ``n - 2c`` values left after dropping the ``c`` smallest and ``c`` largest.
    Example counts are ignored.

    Parameters
    ----------
    trim_fraction : float (default: 0.2)
        Fraction cut off at each end, in ``[0, 0.5)``.
    """
    return trimmed_mean(_votes(own, received), trim_fraction)


def _krum_minimum(params: Mapping[str, Any]) -> int:
    return 2 * params["f"] + 3


@register("krum", min_models=_krum_minimum, f=integer(0))
def krum_rule(
    own: NDArrays | None, received: list[NDArrays], weights: list[float], *, f: int = 0
) -> NDArrays:
    """Krum [Blanchard et al., 2017]: the model closest to its nearest neighbours.

    Over the ``n`` models (own, if any, and the received ones), of which at most ``f`` are
    assumed Byzantine (``n > 2f + 2``):

        s(i)   = sum of ||m_i - m_j||^2 over the n - f - 2 models m_j nearest to m_i
        result = m_{argmin_i s(i)}

    Example counts are ignored. See :func:`fedgossip.strategies.krum.krum`.

    Parameters
    ----------
    f : int (default: 0)
        Assumed number of Byzantine models.
    """
    return krum(_votes(own, received), f)


@register("multi-krum", min_models=_krum_minimum, f=integer(0), m=integer(0))
def multi_krum_rule(
    own: NDArrays | None, received: list[NDArrays], weights: list[float], *, f: int = 0, m: int = 0
) -> NDArrays:
    """Multi-Krum [Blanchard et al., 2017]: the plain mean of the ``m`` best Krum-scored models.

    With the Krum scores ``s(i)`` of the ``n`` models (own, if any, and the received ones;
    ``n > 2f + 2``) and ``S`` the ``m`` lowest-scored:

        result = (1 / m) sum_{i in S} m_i

    Unweighted, as in the paper (example counts are ignored). See
    :func:`fedgossip.strategies.krum.multi_krum`.

    Parameters
    ----------
    f : int (default: 0)
        Assumed number of Byzantine models.
    m : int (default: 0)
        Models averaged, in ``[1, n]``; ``0`` means ``n - f``.
    """
    models = _votes(own, received)
    return multi_krum(models, f, m or len(models) - f)
