"""The gossip merge step: a peer's own model and its neighbours' models into one, by strategy name.

Every rule is a registered function of `fedgossip.strategies.registry` (or a user's
`package.module:function` resolved through it), called as `rule(own, received, num_examples,
**params)`. For `average` and `vca` the own model keeps weight `own_weight` and the neighbours
share the rest in proportion to their example counts; the robust rules treat the own model as one
vote among all. A rule that fails (raises, or returns an invalid model) never stops the peer: the
failure is logged with the rule's name and the round, and the node keeps its own model. The
models merged are trusted (`trusted_models`): the wire checked each received one against the
peer's own specs; only the rule's result is checked.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from fedgossip.config import StrategySection
from fedgossip.strategies import Outcome, Rule, resolve, run_rule, trusted_models

log = logging.getLogger("fedgossip.merge")


def merge_models(
    strategy: StrategySection,
    own: list[np.ndarray],
    received: Sequence[list[np.ndarray]],
    num_examples: Sequence[int],
    round_: int | None = None,
) -> Outcome:
    """Merge `own` with the `received` models (weighted by `num_examples`) using `strategy`.

    Never raises for a failure of the rule: returns `Outcome(own, message)` (and logs the message,
    which names the rule and `round_`) instead. Nothing received: `Outcome(own, None)`.
    """
    if not received:
        return Outcome(own, None)
    try:  # validated at config load: only a module changed since, or a Flower config, fails here
        rule = resolve(strategy.name)
        if not isinstance(rule, Rule):
            raise ValueError("is one of Flower's built-ins, not a gossip rule")
    except ValueError as err:
        outcome = Outcome(None, f"strategy {strategy.name!r}: {err}")
    else:
        with trusted_models():  # the wire checked each received model against the peer's own
            outcome = run_rule(rule, own, received, num_examples, strategy.params, round_)
    if outcome.error is not None:
        log.warning("%s; keeping the own model", outcome.error)
        return Outcome(own, outcome.error)
    return outcome
