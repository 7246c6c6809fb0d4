"""The write-up of `fedgossip reproduce dp-bayesian-regression`: DOCS/dp-bayesian-regression.md
(tables of the mean errors over repeats, per J and epsilon, per real dataset, and the samplers'
seconds per iteration against d) and its figures, from OUT/dp-bayesian-regression.json only. A
hand-written block between the KEEP markers survives a rewrite."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from fedgossip.reports.plots import _pyplot, _save
from fedgossip.reports.reproductions import KEEP_BEGIN, KEEP_END, KEPT
from fedgossip.reports.tables import markdown_pipe_table

NAME = "dp-bayesian-regression"
METHODS = ("non-private", "MCMC-normalX", "MCMC-fixedS", "Bayes-fixedS-fast", "adaSSP")
STYLES = {
    "non-private": "k+--",
    "MCMC-normalX": "*-",
    "MCMC-fixedS": "o-",
    "Bayes-fixedS-fast": "s-",
    "adaSSP": "x-",
}


def _means(cells: list[dict[str, Any]], metric: str) -> dict[tuple[int, float, str], float]:
    """(J, epsilon, method) -> the metric's mean over repeats."""
    values: dict[tuple[int, float, str], list[float]] = defaultdict(list)
    for cell in cells:
        for method, metrics in cell["methods"].items():
            values[cell["parties"], cell["epsilon"], method].append(metrics[metric])
    return {key: float(np.mean(v)) for key, v in values.items()}


def _grid_table(cells: list[dict[str, Any]], metric: str) -> str:
    """One row per (J, epsilon), one column per method: the mean of `metric`."""
    means = _means(cells, metric)
    keys = sorted({(j, e) for j, e, _ in means})
    rows = [[str(j), f"{e:g}", *(f"{means[j, e, m]:.3g}" for m in METHODS)] for j, e in keys]
    return markdown_pipe_table(["J", "epsilon", *METHODS], rows)


def _figure(cells: list[dict[str, Any]], path: Path) -> Path:
    """log prediction MSE (top) and log estimation MSE (bottom) against epsilon, one column per J,
    as the authors' Figure."""
    plt = _pyplot()
    parties = sorted({c["parties"] for c in cells})
    fig, axes = plt.subplots(2, len(parties), figsize=(4 * len(parties), 6.5), squeeze=False)
    for row, metric in enumerate(("prediction_mse", "estimation_mse")):
        means = _means(cells, metric)
        for col, j in enumerate(parties):
            ax = axes[row][col]
            for method in METHODS:
                points = sorted((e, v) for (jj, e, m), v in means.items() if jj == j and m == method)
                ax.plot([e for e, _ in points], [np.log(v) for _, v in points], STYLES[method], label=method)
            ax.set_xscale("log")
            ax.set_xlabel("epsilon")
            ax.set_title(f"log MSE: {'prediction' if row == 0 else 'estimation'}, J = {j}")
    axes[0][-1].legend(fontsize=7)
    return _save(fig, path)


def _runtime(cells: list[dict[str, Any]], path: Path) -> tuple[str, Path]:
    """The samplers' milliseconds per iteration against d: a table (d rows, J x sampler columns)
    and a figure."""
    keys = sorted({(c["parties"], c["method"]) for c in cells})
    by = {(c["d"], c["parties"], c["method"]): c["seconds_per_iteration"] * 1e3 for c in cells}
    dims = sorted({c["d"] for c in cells})
    rows = [[str(d), *(f"{by[d, j, m]:.3f}" for j, m in keys)] for d in dims]
    table = markdown_pipe_table(["d", *(f"{m} J={j}" for j, m in keys)], rows)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for j, m in keys:
        ax.plot(dims, [by[d, j, m] for d in dims], "o-" if "fixed" in m else "*-", label=f"{m}, J = {j}")
    ax.set_xlabel("d")
    ax.set_ylabel("ms per iteration")
    ax.legend(fontsize=7)
    return table, _save(fig, path)


def write_dp_regression_report(results_path: Path, docs: Path) -> list[Path]:
    """DOCS/NAME[-SETTING].md and its figures from the results JSON; the files written."""
    results = json.loads(Path(results_path).read_text(encoding="utf-8"))
    stem = NAME if results["setting"] == "default" else f"{NAME}-{results['setting']}"
    docs.mkdir(parents=True, exist_ok=True)
    setting, simulated = results["config"], results["simulated"]
    figure = _figure(simulated["cells"], docs / f"{stem}-mse.png")
    runtime_table, runtime_figure = _runtime(results["runtime"], docs / f"{stem}-runtime.png")
    lines = [
        "# Reproduction: DP distributed Bayesian linear regression (Alparslan, Yildirim, Birbil, ICML 2023)",
        "",
        f"`fedgossip reproduce {NAME}`"
        + ("" if results["setting"] == "default" else f" --{results['setting']}")
        + f" (seed {results['seed']}, {results['wall_time_s']} s). Setting: n = {setting['n']}, d = 2, "
        f"J in {setting['parties']}, epsilon in {setting['epsilons']}, delta = 1/n, "
        f"{setting['repeats']} repeats (new noise and chains on one dataset), {setting['iterations']} MCMC "
        "iterations (half burn-in). Paper: 50 repeats, 10,000 iterations.",
        "",
        f"Simulated truth: theta = {np.round(simulated['theta'], 4).tolist()}, "
        f"Sigma_x = {np.round(simulated['sigma_x'], 4).tolist()}.",
        "",
        "## Simulated data: prediction MSE (mean over repeats)",
        "",
        _grid_table(simulated["cells"], "prediction_mse"),
        "## Simulated data: estimation MSE mean((theta_hat - theta)^2)",
        "",
        _grid_table(simulated["cells"], "estimation_mse"),
        f"![log MSE against epsilon]({figure.name})",
        "",
    ]
    for name, real in results["real"].items():
        lines += [
            f"## Real data: {name} (n_train = {real['n']}, d = {real['d']}, epsilon = 1)",
            "",
            "Prediction MSE on the test rows:",
            "",
            _grid_table(real["cells"], "prediction_mse"),
            "Estimation MSE against the training OLS:",
            "",
            _grid_table(real["cells"], "estimation_mse"),
        ]
    seconds = _means(simulated["cells"], "seconds_per_iteration")
    walls = {m: np.mean([v for (_, _, mm), v in seconds.items() if mm == m]) * 1e3 for m in METHODS}
    lines += [
        "Wall time of the closed forms on the simulated data (mean over the cells): "
        + ", ".join(f"{m} {walls[m]:.3g} ms" for m in ("non-private", "Bayes-fixedS-fast", "adaSSP"))
        + "; the samplers per iteration: "
        + ", ".join(f"{m} {walls[m]:.3g} ms" for m in ("MCMC-normalX", "MCMC-fixedS"))
        + ".",
        "",
        "## Milliseconds per MCMC iteration against d (n = 1e4, epsilon = 1)",
        "",
        runtime_table,
        f"![ms per iteration against d]({runtime_figure.name})",
        "",
    ]
    page = docs / f"{stem}.md"
    kept = KEPT.search(page.read_text(encoding="utf-8")) if page.exists() else None
    lines += ["## Reading", "", kept.group(0) if kept else f"{KEEP_BEGIN}\n(to be written)\n{KEEP_END}", ""]
    page.write_text("\n".join(lines), encoding="utf-8")
    return [page, figure, runtime_figure]
