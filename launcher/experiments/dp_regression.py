"""`fedgossip reproduce dp-bayesian-regression`: the experiments of "Differentially Private
Distributed Bayesian Linear Regression with MCMC" (Alparslan, Yildirim, Birbil, ICML 2023) as the
authors' `main_run_tests_DP_LR.m` runs them, in one process: the estimators are the same pure
functions the mechanism's runtimes call (`fedgossip.strategies.dp_regression`); the runtimes only
move the released statistics, so a statistical experiment of hundreds of cells needs no nodes.

- simulated (their exp 2): one dataset (n rows, d = 2), J in {1, 5, 10}, each epsilon; every
  repeat draws new noise (and new chains) on the same data, as theirs (rng(1) before each J);
- real (their exp 3): epsilon = 1, J in {1, 5, 10}, the authors' preprocessing and split;
- runtime (their exp 1): seconds per MCMC iteration against d = 1..20 (n = 1e4, epsilon = 1).
Writes OUT/dp-bayesian-regression.json; `reports/dp_regression.py` makes the write-up from it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fedgossip.base.files import write_json
from fedgossip.base.seeding import stream
from fedgossip.strategies.dp_regression.estimators import adassp, fast_estimate, nonprivate_posterior
from fedgossip.strategies.dp_regression.mcmc import sample
from fedgossip.strategies.dp_regression.release import Bounds, NoiseLevels, release, statistics
from fedgossip.tasks.dp_regression import RegressionData, party_rows, prepare_real, read_table, simulate

NAME = "dp-bayesian-regression"
RESULTS_JSON = f"{NAME}.json"
METHODS = ("non-private", "MCMC-normalX", "MCMC-fixedS", "Bayes-fixedS-fast", "adaSSP")
PAPER_EPSILONS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
REAL_DATASETS = ("power_plant_energy", "air_quality", "bike_sharing")
DATA_DIR_VARIABLE = "FEDGOSSIP_DP_REGRESSION_DATA"
SEED = 1  # the authors' rng_no


@dataclass(frozen=True)
class Setting:
    """How big the runs are; the paper: n = 1e5, M = 50 repeats, K = 10^4 iterations, all three
    real datasets (and 3droad, not shipped), runtime with K = 10^4."""

    n: int
    parties: tuple[int, ...]
    epsilons: tuple[float, ...]
    repeats: int
    iterations: int
    real: tuple[str, ...]
    runtime_dims: tuple[int, ...]
    runtime_iterations: int


SETTINGS = {
    "quick": Setting(2000, (1, 5), (1.0,), 1, 200, (), (1, 2), 50),  # no real table: CI has none
    "default": Setting(
        100_000, (1, 5, 10), PAPER_EPSILONS, 2, 10_000, ("power_plant_energy",), tuple(range(1, 21)), 500
    ),
    "full": Setting(
        100_000, (1, 5, 10), PAPER_EPSILONS, 50, 10_000, REAL_DATASETS, tuple(range(1, 21)), 10_000
    ),
}


def _cell_metrics(
    data: RegressionData, estimate: np.ndarray, samples: np.ndarray, seconds: float, iterations: int
) -> dict[str, float]:
    """The authors' errors of one estimate: estimation MSE mean((theta_hat - theta)^2) (real data:
    against the training OLS) and prediction MSE (simulated: the mean over the kept samples of
    (theta_s - theta)^T Sigma_x (theta_s - theta); real: on the test rows), and the seconds per
    iteration (the wall time for a closed form)."""
    if data.theta is not None:
        target = data.theta
        errors = samples - data.theta
        prediction = float(np.einsum("ka,ab,kb->k", errors, data.sigma_x, errors).mean())
    else:
        target = np.linalg.lstsq(data.x, data.y, rcond=None)[0]
        prediction = float(np.mean((data.y_test - data.x_test @ estimate) ** 2))
    return {
        "estimation_mse": float(np.mean((estimate - target) ** 2)),
        "prediction_mse": prediction,
        "seconds_per_iteration": seconds / iterations,
    }


def run_cell(
    data: RegressionData, parties: int, epsilon: float, iterations: int, rng: np.random.Generator
) -> dict[str, dict[str, float]]:
    """Every method on one draw of the parties' noise: method -> its metrics."""
    n = len(data.y)
    rows = party_rows(n, parties)
    exact = [statistics(data.x[r], data.y[r]) for r in rows]
    bounds = Bounds.of(data.x, data.y)
    levels = NoiseLevels.calibrate(epsilon, 1 / n, bounds)
    noisy = [release(s, z, levels, rng) for s, z in exact]
    s_obs, z_obs = [m[0] for m in noisy], [m[1] for m in noisy]
    sizes = [r.stop - r.start for r in rows]

    def timed(estimator: Callable[[], Any]) -> tuple[Any, float]:
        start = time.perf_counter()
        return estimator(), time.perf_counter() - start

    results = {}
    s_all, z_all = statistics(data.x, data.y)
    truth, seconds = timed(lambda: nonprivate_posterior(s_all, z_all, float(data.y @ data.y), n))
    results["non-private"] = _cell_metrics(data, truth.mean, truth.mean[None], seconds, 1)
    for method, update_s in (("MCMC-normalX", True), ("MCMC-fixedS", False)):
        chain, seconds = timed(
            lambda u=update_s: sample(
                s_obs, z_obs, sizes, levels, bounds.y / 3, iterations, rng,
                update_s=u, scatter_prior=data.scatter_prior,
            )
        )  # fmt: skip
        results[method] = _cell_metrics(data, chain.posterior_mean(), chain.kept(), seconds, iterations)
    fast, seconds = timed(lambda: fast_estimate(s_obs, z_obs, levels, bounds))
    results["Bayes-fixedS-fast"] = _cell_metrics(data, fast.mean, fast.mean[None], seconds, 1)
    ridge, seconds = timed(
        lambda: adassp([e[0] for e in exact], [e[1] for e in exact], epsilon, 1 / n, bounds, rng)
    )
    results["adaSSP"] = _cell_metrics(data, ridge, ridge[None], seconds, 1)
    return results


def _cells(
    data: RegressionData,
    setting: Setting,
    epsilons: tuple[float, ...],
    seed: int,
    key: int,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Every (J, epsilon, repeat) cell on `data`; each cell's noise and chains from its own stream."""
    cells = []
    for j, parties in enumerate(setting.parties):
        for e, epsilon in enumerate(epsilons):
            for repeat in range(setting.repeats):
                rng = stream(seed, "dp_regression", key, j, e, repeat)
                metrics = run_cell(data, parties, epsilon, setting.iterations, rng)
                cells.append({"parties": parties, "epsilon": epsilon, "repeat": repeat, "methods": metrics})
                log(f"J={parties} epsilon={epsilon} repeat {repeat + 1}/{setting.repeats} done")
    return cells


def runtime_cells(setting: Setting, seed: int) -> list[dict[str, Any]]:
    """Seconds per iteration of both samplers against d (n = 1e4 simulated rows, epsilon = 1)."""
    cells = []
    for d in setting.runtime_dims:
        rng = stream(seed, "dp_regression", 99, d)
        data = simulate(10_000, d, rng)
        bounds = Bounds.of(data.x, data.y)
        levels = NoiseLevels.calibrate(1.0, 1e-4, bounds)
        for parties in setting.parties:
            rows = party_rows(10_000, parties)
            noisy = [release(*statistics(data.x[r], data.y[r]), levels, rng) for r in rows]
            for method, update_s in (("MCMC-normalX", True), ("MCMC-fixedS", False)):
                start = time.perf_counter()
                sample(
                    [m[0] for m in noisy], [m[1] for m in noisy], [r.stop - r.start for r in rows], levels,
                    bounds.y / 3, setting.runtime_iterations, rng, update_s=update_s,
                    scatter_prior=data.scatter_prior,
                )  # fmt: skip
                seconds = (time.perf_counter() - start) / setting.runtime_iterations
                cells.append({"d": d, "parties": parties, "method": method, "seconds_per_iteration": seconds})
    return cells


def data_dir() -> Path:
    """Where the real tables are: $FEDGOSSIP_DP_REGRESSION_DATA, else ../shared/data/dp-regression
    beside the clone (this project's offline copy of the authors' CSVs)."""
    import os

    if os.environ.get(DATA_DIR_VARIABLE):
        return Path(os.environ[DATA_DIR_VARIABLE])
    return Path.cwd().resolve().parent / "shared" / "data" / "dp-regression"


def run_reproduction(
    setting_name: str, out: Path, seed: int, log: Callable[[str], None], setting: Setting | None = None
) -> Path:
    """Run the setting's (or `setting`'s) simulated, real and runtime experiments; write OUT/RESULTS_JSON."""
    setting = setting or SETTINGS[setting_name]
    folder = data_dir()
    missing = [name for name in setting.real if not (folder / f"{name}.csv.gz").is_file()]
    if missing:
        raise ValueError(
            f"the real datasets {', '.join(missing)} are not in {folder}: set ${DATA_DIR_VARIABLE} to the "
            "folder of the authors' CSVs (name.csv.gz)"
        )
    start = time.perf_counter()
    simulated = simulate(setting.n, 2, stream(seed, "dp_regression", 0))
    results: dict[str, Any] = {
        "name": NAME,
        "setting": setting_name,
        "seed": seed,
        "config": asdict(setting),
        "simulated": {
            "theta": simulated.theta.tolist(),
            "sigma_x": simulated.sigma_x.tolist(),
            "cells": _cells(simulated, setting, setting.epsilons, seed, 0, log),
        },
        "real": {},
    }
    for k, name in enumerate(setting.real, start=1):
        data = prepare_real(read_table(folder / f"{name}.csv.gz"), stream(seed, "dp_regression", k))
        log(f"real data {name}: {len(data.y)} training rows, d = {data.x.shape[1]}")
        results["real"][name] = {
            "n": len(data.y),
            "d": data.x.shape[1],
            "cells": _cells(data, setting, (1.0,), seed, k, log),
        }
    results["runtime"] = runtime_cells(setting, seed)
    results["wall_time_s"] = round(time.perf_counter() - start, 1)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULTS_JSON
    write_json(path, results)
    return path


def reproduce_dp_regression(
    setting_name: str, repeats: int | None, out: Path, docs: Path, log: Callable[[str], None]
) -> list[Path]:
    """The whole command: run the setting (with `repeats` repeats instead of its own, if given)
    into OUT, then write the write-up into DOCS; the files written."""
    from fedgossip.reports.dp_regression_reproduction import write_dp_regression_report

    if repeats is not None and repeats < 1:
        raise ValueError(f"--seeds (the repeats) must be >= 1; got {repeats}")
    setting = SETTINGS[setting_name] if repeats is None else replace(SETTINGS[setting_name], repeats=repeats)
    results = run_reproduction(setting_name, out, SEED, log, setting)
    return [results, *write_dp_regression_report(results, docs)]
