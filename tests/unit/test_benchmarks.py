"""The aggregation benchmark (benchmarks/bench_aggregation.py): its tensor layouts hold the asked
number of parameters, and a small run prints its table."""

from __future__ import annotations

import importlib.util
import math

from tests.support import REPO


def load_benchmark():
    path = REPO / "benchmarks" / "bench_aggregation.py"
    spec = importlib.util.spec_from_file_location("bench_aggregation", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_layout_and_smoke_run(capsys):
    bench = load_benchmark()
    for params in (16, 1000, 25_000_000):
        shapes = bench.layout(params)
        assert sum(math.prod(shape) for shape in shapes) == params
        assert (1,) in shapes
    assert bench.main(["--models", "3", "--params", "20000", "--repeats", "1"]) in (0, 1)
    output = capsys.readouterr().out
    assert "ratio VCA / average" in output and "GB/s" in output
