"""The scenario's figures of one run: honest nodes' accuracy apart from the attackers', the attack
success rate, messages lost and held back, rounds missed and time to rejoin after crashes.

Attackers are the nodes the resolved config's [scenario] names (in Flower mode only the config
says so) and those whose records carry `attack`; everything else is read from the records.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedgossip.config import ScenarioSection
from fedgossip.config.experiment import build_section
from fedgossip.reports.records import node_records
from fedgossip.scenario.roles import chosen


def last_records(records: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Each node's record of its last round."""
    last: dict[int, dict[str, Any]] = {}
    for record in node_records(records):
        if record["round"] >= last.get(record["node"], {}).get("round", -1):
            last[record["node"]] = record
    return last


def config_attackers(config: dict[str, Any]) -> set[int]:
    """The attackers the run's resolved config names (none without an attack, or if unreadable)."""
    table, count = config.get("scenario"), config.get("nodes", {}).get("count")
    if not table or table.get("attack", "none") == "none" or not isinstance(count, int):
        return set()
    try:
        scenario = build_section(ScenarioSection, table, "scenario")
    except ValueError:
        return set()
    return set(chosen(scenario, "attackers", count, int(config.get("experiment", {}).get("seed", 0))))


def scenario_label(config: dict[str, Any]) -> str:
    """A short name of the run's scenario, e.g. "sign-flip 20%, loss 0.1", or "none"."""
    s = config.get("scenario", {})
    parts = []
    if s.get("attack", "none") != "none":
        who = f"{s['attacker_fraction']:.0%}" if not s.get("attackers") else f"nodes {s['attackers']}"
        parts.append(f"{s['attack']} {who}")
    for key, unit in (("loss", ""), ("delay_ms", "ms"), ("bandwidth_mbps", "Mbit/s")):
        if s.get(key):
            parts.append(f"{key.split('_')[0]} {s[key]:g}{unit}")
    if s.get("partition_groups"):
        parts.append(f"partition {s['partition_groups']} groups")
    if (s.get("crash_round") and (s.get("crash") or s.get("crash_fraction"))) or s.get("crash_rate"):
        parts.append("churn")
    if s.get("slowdown", 1) > 1 and (s.get("stragglers") or s.get("straggler_fraction")):
        parts.append(f"stragglers x{s['slowdown']:g}")
    if s.get("resample_every"):
        parts.append(f"resample every {s['resample_every']}")
    return ", ".join(parts) or "none"


def scenario_summary(records: list[dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
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
