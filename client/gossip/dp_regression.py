"""`strategy.name = "dp-bayesian-regression"` in gossip mode: decentralised DP Bayesian linear
regression. Each peer is a party: before its first training it gets the release's privacy
parameters (`learner`), trains (its learner puts its own noisy statistics into its table, once),
pushes its table (its release and every release it has heard of) to every neighbour and merges
the tables it receives by union, so releases spread hop by hop without a coordinator. Forwarding a
release is post-processing of it: each party's privacy cost stays (epsilon, delta). Each round
the peer estimates theta from the releases it knows (the strategy's `estimator`; again only when
it learnt a new one) for its record.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fedgossip.base.seeding import stream
from fedgossip.client.gossip.rounds import RoundPlan
from fedgossip.client.gossip.transport.wire import ModelMessage
from fedgossip.config import ExperimentConfig
from fedgossip.strategies import Outcome
from fedgossip.strategies.dp_regression import table
from fedgossip.strategies.dp_regression.estimate import EstimateFields
from fedgossip.strategies.dp_regression.release import Bounds
from fedgossip.tasks import Learner
from fedgossip.tasks.dp_regression import evaluation
from fedgossip.tasks.dp_regression_learner import DPRegressionLearner


class DPRegressionGossip(RoundPlan):
    """One party's round plan: privacy parameters in, union of tables as the merge, the
    estimate's fields in the record."""

    def __init__(self, config: ExperimentConfig, node: int, neighbours: Sequence[int]) -> None:
        super().__init__(config, node, neighbours)
        params = config.strategy.params
        self.params = params
        self.bounds = Bounds(params["bound_x"], params["bound_y"])
        seed = config.experiment.seed
        self.fields_of = EstimateFields(
            params, evaluation(config.task, seed), stream(seed, "dp_regression", node)
        )
        self._learner: DPRegressionLearner | None = None
        self._table: list[np.ndarray] | None = None

    def learner(self, round_: int, learner: Learner) -> Learner:
        """The peer's learner with the release's privacy parameters set (a DP regression learner
        only: ValueError naming task.model otherwise)."""
        learner = super().learner(round_, learner)
        if not isinstance(learner, DPRegressionLearner):
            raise ValueError('strategy "dp-bayesian-regression" needs task.model = "dp-bayesian-regression"')
        weights = learner.get_weights()
        if not weights[0].any():
            learner.assign(
                table.with_privacy(weights, self.params["epsilon"], self.params["delta"], self.bounds)
            )
        self._learner = learner
        return learner

    def merge(
        self,
        round_: int,
        start: list[np.ndarray],
        own: list[np.ndarray],
        own_examples: int,
        messages: Sequence[ModelMessage],
        shared: Sequence[int],
    ) -> Outcome:
        """The union of the own table and the received ones."""
        merged = table.union([own, *(m.arrays for m in messages)])
        self._table = merged
        return Outcome([merged[i] for i in shared], None)

    def fields(self, round_: int) -> dict[str, Any]:
        """The estimate from the releases the peer knows after the merge (see `EstimateFields`)."""
        assert self._learner is not None and self._table is not None
        known = table.released(self._table, self._learner.d)
        return self.fields_of(known)
