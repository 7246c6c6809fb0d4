"""DP Bayesian linear regression runs in the reports: summary.json's `dp-bayesian-regression`
object (the last round's mean dp_* fields over the nodes), the comparison's figures and
dp-bayesian-regression.png (releases known and prediction MSE per round)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fedgossip.config import ExperimentConfig
from fedgossip.reports.mechanisms import MechanismReport, Records
from fedgossip.reports.records import node_records

FIGURES = ("dp_parties_known", "dp_estimation_mse", "dp_prediction_mse", "dp_seconds_per_iteration")


def _last_round(records: Records) -> Records:
    """The node records of the last round that has dp fields."""
    nodes = [r for r in node_records(records) if "dp_parties_known" in r]
    if not nodes:
        return []
    last = max(r["round"] for r in nodes)
    return [r for r in nodes if r["round"] == last]


def _mean(records: Records, key: str) -> float | None:
    values = [r[key] for r in records if r.get(key) is not None]
    return float(np.mean(values)) if values else None


class DPRegressionReport(MechanismReport):
    """The reports' part of strategy "dp-bayesian-regression"."""

    title = "DP Bayesian linear regression"
    labels = ("dp_estimator",)
    stats = FIGURES
    run_rows = (
        ("estimator", lambda f: f.get("dp_estimator", "-"), ""),
        ("releases known", lambda f: f.get("dp_parties_known"), ".1f"),
        ("estimation MSE", lambda f: f.get("dp_estimation_mse"), ".3g"),
        ("prediction MSE", lambda f: f.get("dp_prediction_mse"), ".3g"),
        ("s / iteration", lambda f: f.get("dp_seconds_per_iteration"), ".2g"),
    )
    columns = (
        ("estimator", "dp_estimator", ""),
        ("estimation MSE", "dp_estimation_mse", ".3g"),
        ("prediction MSE", "dp_prediction_mse", ".3g"),
    )

    def summary(self, records: Records, config: ExperimentConfig) -> dict[str, Any] | None:
        """The last round's mean of each dp_* figure over the nodes, the estimator and epsilon."""
        last = _last_round(records)
        if not last:
            return None
        params = config.strategy.params
        return {
            "dp_estimator": last[0].get("dp_estimator"),
            "epsilon": params.get("epsilon"),
            "delta": params.get("delta"),
            **{key: _mean(last, key) for key in FIGURES},
        }

    def figures(self, records: Records, config: ExperimentConfig) -> dict[str, Any]:
        """The summary's figures (None each without dp records)."""
        found = self.summary(records, config)
        keys = (*self.labels, *self.stats)
        return dict.fromkeys(keys) if found is None else {key: found.get(key) for key in keys}

    def plot(self, records: Records, config: ExperimentConfig, path: str | Path, title: str) -> Path:
        """Per round: the mean releases known (left) and the mean prediction MSE (right, log)."""
        from fedgossip.reports.plots import _pyplot, _save

        nodes = [r for r in node_records(records) if "dp_parties_known" in r]
        rounds = sorted({r["round"] for r in nodes})
        fig, axes = _pyplot().subplots(1, 2, figsize=(11, 4))
        for ax, key in zip(axes, ("dp_parties_known", "dp_prediction_mse"), strict=True):
            ax.plot(rounds, [_mean([r for r in nodes if r["round"] == t], key) for t in rounds], "o-")
            ax.set_xlabel("round")
            ax.set_ylabel(key)
        axes[1].set_yscale("log")
        fig.suptitle(f"{title}: {self.title}")
        return _save(fig, path)
