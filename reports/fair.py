"""The reports of fair-incentive runs (`FairReport`, the `report` part of the registry's entry
`fair`): the `fair` object of a run's summary, its figures and columns in the tables, and its plot
(per-node accuracy over rounds coloured by noise level; psi against noise)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedgossip.config import ExperimentConfig
from fedgossip.reports.mechanisms import MechanismReport, Records
from fedgossip.reports.records import by_round, node_records
from fedgossip.tasks.heterogeneity import node_level

TREND_WINDOW = 5  # exploit rounds averaged for the spread at the start and at the end of the phase


def pearson(x: list[float], y: list[float]) -> float | None:
    """Pearson correlation; None with fewer than 3 pairs or a constant side."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def node_noise(config: ExperimentConfig) -> tuple[str, list[float]]:
    """Which noise makes nodes unequal ("label", "feature" or "none") and each node's level."""
    count = config.nodes.count
    for kind in ("label", "feature"):
        setting = getattr(config.task, f"{kind}_noise")
        levels = [node_level(f"task.{kind}_noise", setting, i, count) for i in range(count)]
        if any(levels):
            return kind, levels
    return "none", [0.0] * count


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _last(rows: list[dict[str, Any]], node: int, key: str) -> Any:
    """The last non-null `key` of `node`'s rows (None if it has none)."""
    return next((r[key] for r in reversed(rows) if r["node"] == node and r.get(key) is not None), None)


def _explore_mean(rows: list[dict[str, Any]], node: int, key: str) -> float | None:
    """The mean of `node`'s non-null `key` over its explore rounds (None if it has none)."""
    mine = [r for r in rows if r["node"] == node and r.get("phase") == "explore"]
    values = [r[key] for r in mine if r.get(key) is not None]
    return float(np.mean(values)) if values else None


def _pairs(x: Any, y: dict[int, float | None], nodes: list[int]) -> tuple[list[float], list[float]]:
    """(x[n], y[n]) over the nodes where y[n] is known, as two lists for `pearson`."""
    kept = [n for n in nodes if y[n] is not None]
    return [x[n] for n in kept], [y[n] for n in kept]


def psi_noise_by_round(rows: list[dict[str, Any]], noise: list[float]) -> dict[int, float | None]:
    """Flower mode: corr(noise, psi_t) after each explore round t (how the ranking forms; with a
    stream that wraps around it can turn as nodes see their data again); empty for fair gossip,
    whose per-peer psi are not comparable across peers."""
    return {} if gossip_views(rows) else noise_correlation_by_round(rows, noise, "psi")


def noise_correlation_by_round(
    rows: list[dict[str, Any]], noise: list[float], key: str
) -> dict[int, float | None]:
    """corr(noise, `key`) over the nodes in each explore round (None: too few or constant)."""
    out = {}
    for t in sorted({r["round"] for r in rows if r.get("phase") == "explore"}):
        known = [r for r in rows if r["round"] == t and r.get(key) is not None and r["node"] < len(noise)]
        out[t] = _round(pearson([noise[r["node"]] for r in known], [r[key] for r in known]))
    return out


def gossip_views(rows: list[dict[str, Any]]) -> dict[int, dict[int, float]]:
    """Fair gossip: each peer's final psi of each of its neighbours (peer -> neighbour -> psi);
    empty for a Flower run."""
    views = {n: _last(rows, n, "neighbour_psi") for n in sorted({r["node"] for r in rows})}
    return {
        n: {int(j): float(v) for j, v in view.items() if v is not None} for n, view in views.items() if view
    }


def final_psi(rows: list[dict[str, Any]]) -> dict[int, float | None]:
    """Each node's final psi: its own (Flower: the coordinator's psi of it); in fair gossip its
    reputation, the mean of its neighbours' psi of it (a peer's own psi is its value in its own
    game, not comparable across peers)."""
    nodes = sorted({r["node"] for r in rows})
    views = gossip_views(rows)
    if not views:
        return {n: _last(rows, n, "psi") for n in nodes}
    held = {n: [view[n] for view in views.values() if n in view] for n in nodes}
    return {n: float(np.mean(held[n])) if held[n] else None for n in nodes}


def local_psi_noise(views: dict[int, dict[int, float]], noise: list[float]) -> float | None:
    """Fair gossip: the mean over peers of the Pearson correlation of their neighbours' noise with
    their psi of them (peers with fewer than 3 neighbours or constant sides are left out)."""
    per_peer = [
        pearson([noise[j] for j in view], list(view.values()))
        for view in views.values()
        if all(j < len(noise) for j in view)
    ]
    kept = [c for c in per_peer if c is not None]
    return float(np.mean(kept)) if kept else None


def fair_summary(records: list[dict[str, Any]], config: ExperimentConfig) -> dict[str, Any] | None:
    """The fair object of a fair-incentive run's summary.json (None when no node recorded an
    accuracy):

    fairness: Pearson correlation of each node's final psi (`final_psi`: in fair gossip its
    reputation) with its mean own-model accuracy over the exploit phase (all rounds without one);
    psi_noise_correlation (fair gossip adds psi_noise_correlation_local, `local_psi_noise`, and
    the fewest and most explore rounds of a peer; explore_rounds counts the rounds any explored);
    noise_accuracy_correlation;
    staleness_correlation: psi against the node's mean staleness over the exploit phase;
    norm_noise_correlation and norm_psi_correlation: each node's mean update norm ||g_i|| over its
    explore rounds against its noise and its psi (the cosine utility credits large updates);
    psi_noise_correlation_by_round (Flower mode, `psi_noise_by_round`) and
    psi_noise_correlation_first_pass: its value after the last explore round in which the stream
    (task.stream_chunks) had not wrapped around yet;
    explore_rounds; equality: std and max-min spread of node accuracies in the last round, the
    least-squares slope of the spread per exploit round, and the mean spread over the first and
    last TREND_WINDOW exploit rounds; per node: psi, noise, mean accuracy, selected share.
    """
    rows = [r for r in node_records(records) if r.get("test_accuracy") is not None]
    if not rows:
        return None
    kind, noise = node_noise(config)
    nodes = sorted({r["node"] for r in rows})
    explore = sorted({r["round"] for r in rows if r.get("phase") == "explore"})
    exploit_rows = [r for r in rows if r.get("phase") == "exploit"]
    # a node's exploit rows (all its rows without any: a gossip peer may never stop exploring)
    mine = {
        n: [r for r in exploit_rows if r["node"] == n] or [r for r in rows if r["node"] == n] for n in nodes
    }
    psi = final_psi(rows)
    accuracy = {n: float(np.mean([r["test_accuracy"] for r in mine[n]])) for n in nodes}
    staleness = {n: float(np.mean([r.get("staleness", 0) for r in mine[n]])) for n in nodes}
    selected = {n: float(np.mean([bool(r.get("selected")) for r in mine[n]])) for n in nodes}
    norms = {n: _explore_mean(rows, n, "update_norm") for n in nodes}
    known = [n for n in nodes if psi[n] is not None and n < len(noise)]
    # the spread of every node's accuracy in each round some node exploits (gossip peers leave the
    # explore phase each on its own; in Flower mode all at once)
    exploit_rounds = {r["round"] for r in exploit_rows}
    groups = by_round([r for r in rows if r["round"] in exploit_rounds] or rows)
    spreads = {k: float(np.ptp([r["test_accuracy"] for r in g])) for k, g in groups.items()}
    last = list(groups.values())[-1]
    trend = None
    if exploit_rows and len(spreads) >= 2:
        trend = float(np.polyfit(list(spreads), list(spreads.values()), 1)[0])
    values = list(spreads.values())
    trajectory = psi_noise_by_round(rows, noise)
    chunks = config.task.stream_chunks or max(trajectory, default=0)
    fresh = [t for t in trajectory if t <= chunks]
    views = gossip_views(rows)
    gossip = {}
    if views:  # each peer leaves the explore phase on its own
        own = [sum(r["node"] == n and r.get("phase") == "explore" for r in rows) for n in nodes]
        gossip = {
            "psi_noise_correlation_local": _round(local_psi_noise(views, noise)),
            "explore_rounds_per_peer": [min(own), max(own)],
        }
    return {
        "selection": config.strategy.params["selection"],
        "explore_rounds": len(explore),
        "exploit_rounds": len({r["round"] for r in exploit_rows}),
        "fairness": _round(pearson([psi[n] for n in known], [accuracy[n] for n in known])),
        "psi_noise_correlation": _round(pearson([noise[n] for n in known], [psi[n] for n in known])),
        "noise_accuracy_correlation": _round(
            pearson([noise[n] for n in known], [accuracy[n] for n in known])
        ),
        "staleness_correlation": _round(pearson([psi[n] for n in known], [staleness[n] for n in known])),
        "psi_noise_correlation_first_pass": trajectory[max(fresh)] if fresh else None,
        "psi_noise_correlation_by_round": {str(t): c for t, c in trajectory.items()},
        "norm_noise_correlation": _round(pearson(*_pairs(noise, norms, known))),
        "norm_psi_correlation": _round(pearson(*_pairs(psi, norms, known))),
        **gossip,
        "noise_kind": kind,
        "equality": {
            "std_end": _round(float(np.std([r["test_accuracy"] for r in last]))),
            "spread_end": _round(float(np.ptp([r["test_accuracy"] for r in last]))),
            "spread_trend_per_round": None if trend is None else round(trend, 6),
            "spread_exploit_start": _round(float(np.mean(values[:TREND_WINDOW]))) if exploit_rows else None,
            "spread_exploit_end": _round(float(np.mean(values[-TREND_WINDOW:]))) if exploit_rows else None,
        },
        "nodes": {
            str(n): {
                "psi": _round(psi[n]),
                "noise": noise[n] if n < len(noise) else None,
                "mean_accuracy": _round(accuracy[n]),
                "mean_staleness": _round(staleness[n]),
                "selected_share": _round(selected[n]),
                "mean_update_norm": _round(norms[n]),
            }
            for n in nodes
        },
    }


FAIR_FIGURES = ("psi_noise_correlation", "fairness", "spread_trend_per_round", "std_end")


def fair_figures(records: list[dict[str, Any]], config: ExperimentConfig) -> dict[str, Any]:
    """The headline figures of `fair_summary`, flat (the comparison's columns): the selection,
    psi-noise correlation, fairness, and equality's spread trend and final std; None each when
    it has none."""
    fair = fair_summary(records, config)
    if fair is None:
        return {"selection": None, **dict.fromkeys(FAIR_FIGURES)}
    flat = {**fair, **fair["equality"]}
    return {"selection": fair["selection"], **{key: flat[key] for key in FAIR_FIGURES}}


class FairReport(MechanismReport):
    """Fair incentives in the reports: summary.json's `fair` object (`fair_summary`), the
    comparison's figures (`fair_figures`: its baselines are fair runs with another selection)
    and fair.png (`plot_fair`)."""

    title = "fair incentives"
    labels = ("selection",)
    stats = FAIR_FIGURES
    run_rows = (
        ("selection", lambda f: f.get("selection", "-"), ""),
        ("explore rounds", lambda f: f.get("explore_rounds"), ""),
        ("psi-noise corr", lambda f: f.get("psi_noise_correlation"), "+.2f"),
        ("fairness", lambda f: f.get("fairness"), "+.2f"),
        ("spread trend", lambda f: f.get("equality", {}).get("spread_trend_per_round"), "+.4f"),
    )
    columns = (
        ("selection", "selection", ""),
        ("psi-noise corr", "psi_noise_correlation", "+.2f"),
        ("fairness", "fairness", "+.2f"),
        ("spread trend", "spread_trend_per_round", "+.4f"),
        ("acc std at end", "std_end", ".3f"),
    )

    def summary(self, records: Records, config: ExperimentConfig) -> dict[str, Any] | None:
        """`fair_summary`."""
        return fair_summary(records, config)

    def figures(self, records: Records, config: ExperimentConfig) -> dict[str, Any]:
        """`fair_figures`."""
        return fair_figures(records, config)

    def plot(self, records: Records, config: ExperimentConfig, path: str | Path, title: str) -> Path:
        """`plot_fair`."""
        return plot_fair(records, config, path, title)


def plot_fair(records: list[dict[str, Any]], config: ExperimentConfig, path: str | Path, title: str) -> Path:
    """Left: each node's own-model accuracy per round, coloured by its noise level, the end of the
    explore phase dashed. Middle: final psi against noise level. Right: per explore round, the
    correlation of noise with psi_t and with the round's update norms (`draw_trajectory`)."""
    from fedgossip.reports.plots import _pyplot, _save

    fig, axes = _pyplot().subplots(1, 3, figsize=(16, 4.4), gridspec_kw={"width_ratios": [2, 1, 1]})
    draw_fair(axes, records, config, title)
    return _save(fig, path)


def draw_trajectory(axis: Any, rows: list[dict[str, Any]], noise: list[float], chunks: int) -> None:
    """Per explore round t: corr(noise, psi_t) (Flower mode) and corr(noise, ||g_i||) of the round,
    the stream's wrap-arounds (every `chunks` rounds) dotted."""
    norms = noise_correlation_by_round(rows, noise, "update_norm")
    rounds = list(norms)
    for label, series in (("psi_t", psi_noise_by_round(rows, noise)), ("update norm", norms)):
        points = [(t, c) for t, c in series.items() if c is not None]
        if points:
            axis.plot(*zip(*points, strict=True), marker=".", linewidth=1, label=f"corr(noise, {label})")
    for wrap in range(chunks, max(rounds, default=0), chunks) if chunks else ():
        axis.axvline(wrap + 0.5, color="grey", linestyle=":", linewidth=1)
    axis.axhline(0, color="k", linewidth=0.6)
    axis.set(xlabel="explore round (dotted: the stream wraps around)", ylabel="Pearson", ylim=(-1, 1))
    axis.set_title("how the ranking forms")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)


def draw_fair(
    axes: Sequence[Any], records: list[dict[str, Any]], config: ExperimentConfig, title: str
) -> None:
    """Draw `plot_fair`'s three panels on `axes` (curves, scatter, trajectory)."""
    curves, scatter, trajectory = axes
    from fedgossip.reports.plots import _pyplot

    colours = _pyplot().get_cmap("viridis")
    kind, noise = node_noise(config)
    rows = [r for r in node_records(records) if r.get("test_accuracy") is not None]
    nodes = sorted({r["node"] for r in rows})
    top = max(noise, default=0.0) or 1.0
    psi = final_psi(rows)
    for n in nodes:
        mine = sorted((r["round"], r["test_accuracy"]) for r in rows if r["node"] == n)
        level = noise[n] if n < len(noise) else 0.0
        curves.plot(
            *zip(*mine, strict=True), color=colours(level / top), linewidth=1.1, label=f"{n}: {level:.2f}"
        )
    explore = [r["round"] for r in rows if r.get("phase") == "explore"]
    if explore and any(r.get("phase") == "exploit" for r in rows):
        curves.axvline(max(explore) + 0.5, color="k", linestyle="--", linewidth=1, label="end of explore")
    curves.set(xlabel="round", ylabel="own-model accuracy (round's evaluation set)", title=title, ylim=(0, 1))
    curves.grid(alpha=0.3)
    curves.legend(title=f"node: {kind} noise", fontsize=7, ncol=2, loc="lower right")
    known = [n for n in nodes if psi[n] is not None and n < len(noise)]
    scatter.scatter(
        [noise[n] for n in known],
        [psi[n] for n in known],
        c=[noise[n] / top for n in known],
        cmap="viridis",
        vmin=0,
        vmax=1,
    )
    for n in known:
        scatter.annotate(str(n), (noise[n], psi[n]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    measure = "psi: mean of the neighbours' psi" if gossip_views(rows) else "psi (mean contribution)"
    scatter.set(xlabel=f"{kind} noise level", ylabel=measure, title="contribution vs noise")
    scatter.grid(alpha=0.3)
    draw_trajectory(trajectory, rows, noise, config.task.stream_chunks)
