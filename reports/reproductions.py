"""The write-ups of `fedgossip reproduce`: figures and DOCS/NAME.md made from a reproduction's
results folders (OUT/<label>_seed=<seed>) and its plan, OUT/reproduction.json.

Every number is recomputed from the runs' metrics records (and their configs); the plan only says
which runs belong to which method and how the setting was scaled. A block of the existing write-up
between KEEP_BEGIN and KEEP_END (the hand-written reading of the numbers) is kept when the write-up
is made again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedgossip.config import ExperimentConfig
from fedgossip.reports.fair import draw_fair, fair_summary
from fedgossip.reports.fedgmm_reproduction import fedgmm_writer
from fedgossip.reports.groups import Group, Stat, load_run
from fedgossip.reports.plots import _pyplot, _save, plot_comparison, plot_seed_bands, variance_curves
from fedgossip.reports.records import METRICS, node_records, read_records
from fedgossip.reports.summary import first_reaching
from fedgossip.reports.tables import markdown_pipe_table, stat_text

PLAN_JSON = "reproduction.json"
TARGETS = (0.5, 0.8)  # mean accuracies whose rounds and seconds the vanishing-variance table gives
KEEP_BEGIN = "<!-- hand-written: kept when the write-up is made again -->"
KEEP_END = "<!-- end of the hand-written part -->"
KEPT = re.compile(re.escape(KEEP_BEGIN) + r".*?" + re.escape(KEEP_END), re.DOTALL)


def read_plan(out: Path) -> dict[str, Any]:
    """OUT/reproduction.json, written by the launcher before any report."""
    try:
        return json.loads((Path(out) / PLAN_JSON).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{out} holds no reproduction ({PLAN_JSON}): {err}") from None


def method_groups(out: Path, plan: dict[str, Any]) -> list[Group]:
    """One group per method of the plan (its label), holding the runs that recorded anything."""
    groups = []
    for method in plan["methods"]:
        paths = [Path(out) / name for name in method["runs"] if (Path(out) / name / METRICS).is_file()]
        groups.append(Group(method["label"], [load_run(path) for path in paths]))
    return groups


def write_report(out: Path, docs: Path) -> list[Path]:
    """Make the figures and DOCS/NAME.md of the reproduction in `out`; the files written."""
    plan = read_plan(out)
    groups = method_groups(out, plan)
    docs = Path(docs)
    docs.mkdir(parents=True, exist_ok=True)
    body, figures = WRITERS[plan["name"]](plan, groups, docs)
    page = docs / f"{page_stem(plan)}.md"
    kept = KEPT.search(page.read_text(encoding="utf-8")) if page.exists() else None
    text = "\n".join(
        [
            *setting_section(plan, groups),
            *body,
            "## Reading",
            "",
            kept.group(0) if kept else f"{KEEP_BEGIN}\n(to be written)\n{KEEP_END}",
            "",
        ]
    )
    page.write_text(text, encoding="utf-8")
    return [page, *figures]


def page_stem(plan: dict[str, Any]) -> str:
    """The write-up's file stem: NAME for the default setting, NAME-SETTING (NAME-full) for the
    others, so a --full write-up sits beside the default one."""
    return plan["name"] if plan["setting"] == "default" else f"{plan['name']}-{plan['setting']}"


def setting_section(plan: dict[str, Any], groups: Sequence[Group]) -> list[str]:
    """The title, the command, the exact setting and how it is scaled, the methods run and skipped."""
    flag = "" if plan["setting"] == "default" else f" --{plan['setting']}"
    if plan["seeds"] != plan.get("default_seeds", plan["seeds"]):
        flag += f" --seeds {plan['seeds']}"
    config = next((g.runs[0].config for g in groups if g.runs), None)
    return [
        f"# {plan['title']}",
        "",
        f"Made by `fedgossip reproduce {plan['name']}{flag}` (setting `{plan['setting']}`); the numbers "
        "and figures below are recomputed from the runs' metrics records.",
        "",
        "## Setting",
        "",
        f"- Scale: {plan['scale']}.",
        f"- Base config `{plan['config']}` with `{' '.join(plan['overrides']) or '(no overrides)'}`: "
        f"{_setting(config)}.",
        f"- Seeds: {plan['seeds']} (experiment.seed {', '.join(str(r.seed) for r in _first_runs(groups))}).",
        f"- Wall time: {_runs_wall_s(groups):.0f} s for the runs, one after another; the last "
        f"`fedgossip reproduce` call took {plan.get('wall_time_s', 0):.0f} s (runs already finished "
        "are skipped, not counted).",
        *(f"- Note: {note}." for note in plan["notes"]),
        "",
        "| method | overrides |",
        "|---|---|",
        *(f"| {m['label']} | `{' '.join(m['overrides'])}` |" for m in plan["methods"]),
        *(f"| {m['label']} (skipped) | `{' '.join(m['overrides'])}` |" for m in plan["skipped"]),
        "",
        *(
            f"Skipped `{m['label']}`: the config refuses `{' '.join(m['overrides'])}` ({m['why']}).\n"
            for m in plan["skipped"]
        ),
    ]


def _setting(config: ExperimentConfig | None) -> str:
    """The nodes, rounds and learning task of a run's config, in a sentence."""
    if config is None:
        return "(the runs' config.toml is missing or unreadable)"
    task = config.task
    return (
        f"{config.nodes.count} nodes, {config.experiment.rounds} rounds, "
        f"dataset `{task.dataset}`, model `{task.model}`, partition `{task.partition}`"
        f" (alpha {task.alpha}), init `{task.init}`, {task.local_epochs} local "
        f"epoch(s) of batches of {task.batch_size}, SGD lr {task.learning_rate}, momentum "
        f"{task.momentum}, weight decay {task.weight_decay}"
    )


def _runs_wall_s(groups: Sequence[Group]) -> float:
    """The wall time of every run of the reproduction, added up (from their summaries)."""
    return sum(run.figures.get("wall_time_s") or 0.0 for group in groups for run in group.runs)


def _first_runs(groups: Sequence[Group]) -> list[Any]:
    return next((g.runs for g in groups if g.runs), [])


def vanishing_variance(
    plan: dict[str, Any], groups: Sequence[Group], docs: Path
) -> tuple[list[str], list[Path]]:
    """Rounds and seconds to TARGETS per method (mean +- std over seeds), the claims' numbers, the
    accuracy figure (mean with a band over seeds) and the layer variance figure."""
    name = page_stem(plan)
    accuracy = plot_comparison(groups, docs / f"{name}-accuracy.png", plan.get("ticks_per_round", 0))
    variance = plot_seed_bands(variance_panels(groups), docs / f"{name}-variance.png")
    unit, per = ("ticks", plan["ticks_per_round"]) if plan.get("ticks_per_round") else ("rounds", 1)
    rows = [target_row(group, per) for group in groups]
    kinds = (unit,) if unit == "ticks" else (unit, "seconds")  # virtual time: no seconds to compare
    header = ["method", "seeds", *(f"{kind} to {t:g}" for t in TARGETS for kind in kinds)]
    header += ["final mean acc", "final min acc", "wall time s"]
    body = [
        "## Measured",
        "",
        f"Mean test accuracy over nodes against {'ticks' if per > 1 else 'rounds and seconds'} (mean over "
        "seeds, band +- one std): "
        f"![accuracy]({accuracy.name})",
        "",
        f"{unit.capitalize()} until the mean accuracy over nodes first reaches the target, mean ± std "
        "over the seeds that reach it ((k/n): only k of n seeds do; -: none does). FL rounds are Flower "
        "rounds (every client trains from the global model, its accuracy is the global model's). "
        + (
            f"A round is {per} ticks: a gossip evaluation, or an FL broadcast; the gossip runs are in "
            "virtual time, so no seconds are compared."
            if unit == "ticks"
            else "Seconds since launch beside them: FL seconds come from the in-process engine (one "
            "process), gossip seconds from one process per peer: compare seconds within gossip only."
        ),
        "",
        markdown_pipe_table(header, [row_cells(row, kinds) for row in rows]),
        *claims_vanishing_variance(rows, unit),
        "",
        "Variance of the first weight tensor and mean over tensors, per round (gossip: each peer's model "
        "after the merge, mean over peers; FL: the global model), mean over seeds: "
        f"![variance]({variance.name})",
        "",
    ]
    return body, [accuracy, variance]


def target_row(group: Group, per: int = 1) -> dict[str, Any]:
    """A method's figures over its seeds: rounds (times `per`: ticks) and seconds to each target,
    final accuracies."""
    row: dict[str, Any] = {"label": group.label, "seeds": len(group.runs)}
    for target in TARGETS:
        reached = [first_reaching(run.curve, target) for run in group.runs]
        row[f"rounds_{target:g}"] = Stat.of(None if r is None else r * per for r, _ in reached).to_dict()
        row[f"seconds_{target:g}"] = Stat.of(s for _, s in reached).to_dict()
    for key in ("final_mean_accuracy", "final_min_accuracy", "wall_time_s", "rounds_completed"):
        row[key] = group.stat(key).to_dict()
    done = row["rounds_completed"]
    row["rounds_completed"] = {**done, "mean": None if done["mean"] is None else done["mean"] * per}
    return row


def row_cells(row: dict[str, Any], kinds: Sequence[str] = ("rounds", "seconds")) -> list[str]:
    """A method's table row: its `kinds` ("rounds" or "ticks", "seconds") to each target, its final
    accuracies and wall time."""
    seeds = row["seeds"]
    cells = [row["label"], str(seeds)]
    cells += [
        stat_text(row[f"{'rounds' if kind == 'ticks' else kind}_{t:g}"], seeds, ".1f")
        for t in TARGETS
        for kind in kinds
    ]
    cells += [stat_text(row[key], seeds, ".3f") for key in ("final_mean_accuracy", "final_min_accuracy")]
    return [*cells, stat_text(row["wall_time_s"], seeds, ".0f")]


def claims_vanishing_variance(rows: Sequence[dict[str, Any]], unit: str = "rounds") -> list[str]:
    """The paper's two claims in numbers: gossip VCA against plain gossip averaging (`unit`s to
    each target) and against FL (final accuracy, `unit`s to each target), within each variant
    (the labels' suffix after the method)."""
    by = {row["label"]: row for row in rows}
    lines = ["", "The claims in numbers:", ""]
    suffixes = sorted({label.removeprefix("gossip-vca") for label in by if label.startswith("gossip-vca")})
    for suffix in suffixes:
        for fast, slow in ((f"gossip-vca{suffix}", f"gossip-average{suffix}"),):
            if fast in by and slow in by:
                lines += [
                    f"- {fast} against {slow}: {speedup(by[fast], by[slow], t, unit=unit)}" for t in TARGETS
                ]
        vca, fl = by.get(f"gossip-vca{suffix}"), by.get(f"fl-fedavg{suffix}")
        if vca and fl:
            lines.append(
                f"- {vca['label']} against {fl['label']}: final mean accuracy "
                f"{_mean(vca['final_mean_accuracy'])} against {_mean(fl['final_mean_accuracy'])}; "
                + "; ".join(speedup(vca, fl, t, f"{unit} to", unit) for t in TARGETS)
            )
    return lines


def speedup(
    fast: dict[str, Any], slow: dict[str, Any], target: float, word: str = "", unit: str = "rounds"
) -> str:
    """How many times fewer `unit`s `fast` needs than `slow` to reach `target` (mean over seeds),
    or a bound when `slow` never reaches it within its run."""
    a, b = fast[f"rounds_{target:g}"], slow[f"rounds_{target:g}"]
    prefix = f"{word} {target:g}" if word else f"to {target:g}"
    done = slow["rounds_completed"]["mean"] or 0
    if a["mean"] is None:
        if b["mean"] is None:
            return f"{prefix}: neither reaches it within {done:.0f} {unit}"
        return f"{prefix}: {slow['label']} in {b['mean']:.1f} {unit}, {fast['label']} never"
    if b["mean"] is None:
        return (
            f"{prefix}: {fast['label']} in {a['mean']:.1f} {unit}, {slow['label']} never within "
            f"{done:.0f} {unit} (more than {done / a['mean']:.1f}x)"
        )
    return f"{prefix}: {a['mean']:.1f} against {b['mean']:.1f} {unit} ({b['mean'] / a['mean']:.2f}x)"


def _mean(stat: dict[str, Any]) -> str:
    return "-" if stat["mean"] is None else f"{stat['mean']:.3f}"


def variance_panels(groups: Sequence[Group]) -> list[tuple[str, str, dict[str, list[dict[int, float]]]]]:
    """The two panels of the variance figure: the first weight tensor's variance and the mean of
    every tensor's variance, per method one curve per seed (round -> value)."""
    first: dict[str, list[dict[int, float]]] = {}
    mean: dict[str, list[dict[int, float]]] = {}
    names = []
    for group in groups:
        for run in group.runs:
            curves = run_variance(read_records(run.path))
            if not curves:
                continue
            name = next(iter(curves))
            names.append(name)
            first.setdefault(group.label, []).append(dict(zip(*curves[name], strict=True)))
            per_round: dict[int, list[float]] = {}
            for rounds, values in curves.values():
                for r, v in zip(rounds, values, strict=True):
                    per_round.setdefault(r, []).append(v)
            mean.setdefault(group.label, []).append({r: float(np.mean(v)) for r, v in per_round.items()})
    title = f"first tensor ({names[0]})" if len(set(names)) == 1 else "first tensor"
    return [
        (title, "variance of its entries", first),
        ("mean over tensors", "mean variance of a tensor's entries", mean),
    ]


def run_variance(records: list[dict[str, Any]]) -> dict[str, tuple[list[int], list[float]]]:
    """A run's layer variance curves: the nodes' (gossip), else the server's global model (FL)."""
    return variance_curves(node_records(records)) or variance_curves(
        [r for r in records if r.get("node") == "server"]
    )


FAIR_FIELDS: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("psi-noise corr", lambda f: f["psi_noise_correlation"], "+.2f"),
    ("psi-noise corr, first pass", lambda f: f["psi_noise_correlation_first_pass"], "+.2f"),
    ("norm-noise corr", lambda f: f["norm_noise_correlation"], "+.2f"),
    ("fairness (cor_shapley_acc)", lambda f: f["fairness"], "+.2f"),
    ("noise-accuracy corr (cor_noi_acc)", lambda f: f["noise_accuracy_correlation"], "+.2f"),
    ("explore rounds", lambda f: f["explore_rounds"], ".1f"),
    ("spread exploit start", lambda f: f["equality"]["spread_exploit_start"], ".3f"),
    ("spread exploit end", lambda f: f["equality"]["spread_exploit_end"], ".3f"),
    ("spread trend / round", lambda f: f["equality"]["spread_trend_per_round"], "+.4f"),
    ("std at the end", lambda f: f["equality"]["std_end"], ".3f"),
]


def fair_incentives(
    plan: dict[str, Any], groups: Sequence[Group], docs: Path
) -> tuple[list[str], list[Path]]:
    """Fairness and equality side by side per method (mean +- std over seeds, from `fair_summary`
    of each run's records), the per-node accuracy and psi-against-noise figure of each method's
    first seed, and the numbers against the issue's targets."""
    name = page_stem(plan)
    summaries = {
        g.label: [fair_summary(read_records(run.path), run.config) for run in g.runs] for g in groups
    }
    header = ["method", "seeds", *(label for label, _, _ in FAIR_FIELDS), "final mean acc", "final min acc"]
    cells = []
    for group in groups:
        fair = [f for f in summaries[group.label] if f is not None]
        seeds = len(group.runs)
        cells.append(
            [
                group.label,
                str(seeds),
                *(
                    stat_text(Stat.of(get(f) for f in fair).to_dict(), seeds, spec)
                    for _, get, spec in FAIR_FIELDS
                ),
                *(
                    stat_text(group.stat(k).to_dict(), seeds, ".3f")
                    for k in ("final_mean_accuracy", "final_min_accuracy")
                ),
            ]
        )
    figure = plot_fair_methods(groups, docs / f"{name}-nodes.png")
    targets = [
        f"`{label}`: psi-noise correlation {_signed(Stat.of(f['psi_noise_correlation'] for f in runs if f))}"
        f", fairness {_signed(Stat.of(f['fairness'] for f in runs if f))}"
        for label, runs in summaries.items()
        if label.split("-")[0] == "fair"
    ]
    body = [
        "## Measured",
        "",
        "Per method, mean ± std over seeds: the Pearson correlation of each node's final psi with its "
        "noise level and (fairness) with its mean own-model accuracy over the exploit phase; the "
        "psi-noise correlation after the last explore round before the stream wrapped around (first "
        "pass: every node had seen each of its examples once at most); the correlation of each "
        "node's mean update norm ||g_i|| over its explore rounds with its noise; the "
        "correlation of noise with that accuracy, the explore rounds, and the spread (max - min) of "
        "node accuracies over the first and last 5 exploit rounds, its least-squares slope per exploit "
        "round and the std of node accuracies in the last round (`reports/fair.py`). fedavg never "
        "exploits: its figures are over all rounds. Fairness is what the authors' code computes as "
        "`cor_shapley_acc` (psi against the mean accuracy over the exploit phase; their mean over all "
        "rounds adds the explore rounds, the same for every node, so the correlation is the same), "
        "the noise-accuracy correlation their `cor_noi_acc`.",
        "",
        markdown_pipe_table(header, cells),
        "",
        "Targets of issue #9 for `fair`: psi-noise correlation <= -0.8, fairness >= 0.8; measured "
        + ("; ".join(targets) or "-")
        + ".",
        "",
        f"Per-node own-model accuracy over rounds coloured by noise (left), psi against noise "
        f"(middle) and, over the explore rounds, the correlation of noise with psi_t and with the "
        f"round's update norms (right), first seed of each method: ![nodes]({figure.name})",
        "",
    ]
    return body, [figure]


def _signed(stat: Stat) -> str:
    if stat.mean is None:
        return "-"
    return f"{stat.mean:+.2f}" + (f" ± {stat.std:.2f} over {stat.n} seeds" if stat.std is not None else "")


def plot_fair_methods(groups: Sequence[Group], path: Path) -> Path:
    """One row per method (its first seed): `draw_fair`'s per-node accuracy, psi against noise and
    the correlations over the explore rounds."""
    shown = [g for g in groups if g.runs]
    fig, axes = _pyplot().subplots(
        len(shown), 3, figsize=(16, 3.6 * len(shown)), squeeze=False, gridspec_kw={"width_ratios": [2, 1, 1]}
    )
    for row, group in zip(axes, shown, strict=True):
        run = group.runs[0]
        draw_fair(row, read_records(run.path), run.config, f"{group.label} (seed {run.seed})")
    return _save(fig, path)


WRITERS = {
    "vanishing-variance": vanishing_variance,
    "fair-incentives": fair_incentives,
    "fedgmm": fedgmm_writer,
    "fedgmm-mnist": fedgmm_writer,
}
