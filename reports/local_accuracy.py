"""Per-node evaluation in the reports (task.eval local or both): the mean and the worst node's
final `local_accuracy` (each node's last record that has one), for summaries and `compare`."""

from __future__ import annotations

from typing import Any

import numpy as np

from fedgossip.reports.records import node_records
from fedgossip.reports.scenario import last_records

MEAN, MIN = "final_mean_local_accuracy", "final_min_local_accuracy"


def local_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """{MEAN, MIN, by node} over the nodes' last local accuracies; {} when no record has one (a
    run with task.eval = "global": its summary is as it was)."""
    scored = [r for r in node_records(records) if r.get("local_accuracy") is not None]
    if not scored:
        return {}
    last = last_records(scored)
    finals = [last[n]["local_accuracy"] for n in sorted(last)]
    return {
        MEAN: float(np.mean(finals)),
        MIN: float(np.min(finals)),
        "final_local_accuracy_by_node": {str(n): last[n]["local_accuracy"] for n in sorted(last)},
    }
