"""The scenario's figures of one run: honest nodes' accuracy apart from the attackers', the attack
success rate, messages lost and held back, rounds missed and time to rejoin after crashes.

Attackers are the nodes the resolved config's [scenario] names (in Flower mode only the config
says so) and those whose records carry `attack`; everything else is read from the records.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedgossip.config import ExperimentConfig
from fedgossip.reports.records import node_records
from fedgossip.scenario.roles import chosen


def last_records(records: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Each node's record of its last round."""
    last: dict[int, dict[str, Any]] = {}
    for record in node_records(records):
        if record["round"] >= last.get(record["node"], {}).get("round", -1):
            last[record["node"]] = record
    return last


def config_attackers(config: ExperimentConfig | None) -> set[int]:
    """The attackers the run's resolved config names (none without an attack, or without a config)."""
    if config is None or config.scenario.attack == "none":
        return set()
    return set(chosen(config.scenario, "attackers", config.nodes.count, config.experiment.seed))


def scenario_label(config: ExperimentConfig | None) -> str:
    """A short name of the run's scenario, e.g. "sign-flip 20%, loss 0.1", or "none"."""
    if config is None:
        return "none"
    s = config.scenario
    parts = []
    if s.attack != "none":
        who = f"nodes {list(s.attackers)}" if s.attackers else f"{s.attacker_fraction:.0%}"
        parts.append(f"{s.attack} {who}")
    for name, value, unit in (
        ("loss", s.loss, ""),
        ("delay", s.delay_ms, "ms"),
        ("bandwidth", s.bandwidth_mbps, "Mbit/s"),
    ):
        if value:
            parts.append(f"{name} {value:g}{unit}")
    if s.partition_groups:
        parts.append(f"partition {s.partition_groups} groups")
    if (s.crash_round and (s.crash or s.crash_fraction)) or s.crash_rate:
        parts.append("churn")
    if s.slowdown > 1 and (s.stragglers or s.straggler_fraction):
        parts.append(f"stragglers x{s.slowdown:g}")
    if s.resample_every:
        parts.append(f"resample every {s.resample_every}")
    return ", ".join(parts) or "none"


def scenario_summary(records: list[dict[str, Any]], config: ExperimentConfig | None) -> dict[str, Any]:
    """Honest mean/min final accuracy (every node when none attacks), the attackers, the attack
    success rate (a collective's trigger success, mean over honest nodes' final models), and the
    network and churn counts where the scenario has them."""
    last = last_records(records)
    attackers = sorted({n for n in last if "attack" in last[n]} | config_attackers(config))
    honest = [
        r["test_accuracy"] for n, r in last.items() if n not in attackers and r["test_accuracy"] is not None
    ]
    out: dict[str, Any] = {
        "scenario": scenario_label(config),
        "honest_mean_accuracy": float(np.mean(honest)) if honest else None,
        "honest_min_accuracy": float(np.min(honest)) if honest else None,
        "attackers": attackers,
    }
    success = [
        r["trigger_success"]
        for n, r in last.items()
        if n not in attackers and r.get("trigger_success") is not None
    ]
    out["attack_success_rate"] = float(np.mean(success)) if success else None
    nodes = node_records(records)
    if any("dropped" in r for r in nodes):
        out["messages_dropped"] = int(sum(r.get("dropped", 0) for r in nodes))
        out["delayed_s"] = round(float(sum(r.get("delayed_s", 0.0) for r in nodes)), 3)
    rejoins = [r for r in nodes if "rounds_missed" in r]
    if rejoins:
        out["rounds_missed_by_node"] = _per_node(rejoins, "rounds_missed")
        out["rejoin_s_by_node"] = _per_node(rejoins, "rejoin_s")
    return out


def _per_node(records: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """`key` summed per node (over its crashes)."""
    totals: dict[int, Any] = {}
    for record in records:
        totals[record["node"]] = totals.get(record["node"], 0) + record[key]
    return {str(n): round(v, 4) if isinstance(v, float) else v for n, v in sorted(totals.items())}
