"""`fedgossip reproduce dp-bayesian-regression --quick` in process: every method in every cell,
the errors as the authors define them, and the write-up's tables and figures from the JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedgossip.launcher.experiments.dp_regression import METHODS, reproduce_dp_regression

pytestmark = pytest.mark.timeout(60)


def test_the_quick_reproduction_runs_every_method_and_writes_its_write_up(tmp_path):
    files = reproduce_dp_regression("quick", None, tmp_path / "out", tmp_path / "docs", lambda line: None)
    results = json.loads(files[0].read_text())
    cells = results["simulated"]["cells"]
    assert [(c["parties"], c["epsilon"]) for c in cells] == [(1, 1.0), (5, 1.0)]
    theta = np.array(results["simulated"]["theta"])
    for cell in cells:
        assert set(cell["methods"]) == set(METHODS)
        assert all(np.isfinite(m["prediction_mse"]) for m in cell["methods"].values())
    exact = {c["methods"]["non-private"]["estimation_mse"] for c in cells}
    assert len(exact) == 1  # one dataset for every J: the non-private posterior is the same
    assert len(theta) == 2 and {c["d"] for c in results["runtime"]} == {1, 2}
    page = (tmp_path / "docs" / "dp-bayesian-regression-quick.md").read_text()
    assert "| J | epsilon | non-private | MCMC-normalX |" in page and "(to be written)" in page
    assert all(path.stat().st_size > 10_000 for path in files[2:])  # the two figures
    with pytest.raises(ValueError, match="--seeds"):
        reproduce_dp_regression("quick", 0, tmp_path / "x", tmp_path / "docs", lambda line: None)
