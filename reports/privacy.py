"""The privacy part of a run's summary: the epsilon each node had spent by its last record."""

from __future__ import annotations

from typing import Any


def privacy_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """`final_epsilon_by_node` (each node's last recorded `epsilon`, at privacy.delta) and its
    maximum, the run's guarantee per node; nothing when no record carries an epsilon."""
    last: dict[Any, float] = {}
    for record in records:
        if "epsilon" in record:
            last[record["node"]] = record["epsilon"]
    if not last:
        return {}
    nodes = sorted(last, key=lambda node: str(node).zfill(12))
    return {
        "final_epsilon_by_node": {str(node): last[node] for node in nodes},
        "max_final_epsilon": max(last.values()),
    }
