"""Benchmark: variance-corrected averaging (VCA) against plain weighted averaging.

Builds ``--models`` random float32 models of ``--params`` parameters, split into a
realistic set of tensors (a few big matrices, a convolution kernel, biases, a
one-element tensor), and times, best of ``--repeats``:

- ``weighted_average(models)``;
- ``variance_corrected_average(models[0], models[1:], own_weight=0.5)``: the same
  input, read as one own model merged with the others (gossip);

each with numpy's primitives and, when numba is installed (``.[fast]``), with the fused
kernels (``strategies/_fused.py``; the big tensors take them), all in one rotation.

Prints seconds, the throughput in GB/s of input read, the ratio VCA / average of each path
(like for like) and PASS/FAIL of the path the installed code runs (fused when numba imports)
against the issue's target ratio (1.3). ``--no-numba`` leaves the fused rows out.
``--blas-threads`` sets the usual BLAS thread variables before numpy is imported (default:
leave the environment alone).

Usage: python benchmarks/bench_aggregation.py [--models 8] [--params 25000000] [--repeats 3] [--no-numba]
"""

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

TARGET_RATIO = 1.3
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def layout(params: int) -> list[tuple[int, ...]]:
    """Tensor shapes of a model with exactly ``params`` parameters.

    About half, a quarter and 15% of the parameters in three dense layers (weight
    matrix plus bias), a small convolution, an embedding-like matrix for the rest and
    a one-element tensor (e.g. a learned temperature).
    """
    shapes: list[tuple[int, ...]] = [(1,)]
    left = params - 1
    if left > 10 * (64 * 32 * 3 * 3 + 64):
        shapes += [(64, 32, 3, 3), (64,)]
        left -= 64 * 32 * 3 * 3 + 64
    columns = 1024 if params >= 4 * 1024 * 1024 else 16
    for fraction in (0.5, 0.25, 0.15):
        rows = int(fraction * params / (columns + 1))
        if rows == 0 or rows * (columns + 1) > left:
            break
        shapes += [(rows, columns), (rows,)]
        left -= rows * (columns + 1)
    if left >= 2 * 512:
        shapes.append((left // 512, 512))
        left %= 512
    if left:
        shapes.append((left,))
    return shapes


def build_models(count: int, params: int, seed: int) -> list[list[Any]]:
    """``count`` float32 models with Xavier-like matrices and small offset biases."""
    import numpy as np

    rng = np.random.default_rng(seed)
    shapes = layout(params)
    models = []
    for _ in range(count):
        model = []
        for shape in shapes:
            if len(shape) >= 2:
                fan_in = int(np.prod(shape[1:]))
                scale = np.float32(np.sqrt(2.0 / (fan_in + shape[0])))
                tensor = rng.standard_normal(shape, dtype=np.float32)
                tensor *= scale
            else:
                tensor = rng.standard_normal(shape, dtype=np.float32)
                tensor *= np.float32(0.01)
                tensor += np.float32(0.1)
            model.append(tensor)
        models.append(model)
    return models


def best_times(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall-clock seconds of ``repeats`` calls of each function.

    Calls are interleaved (a, b, a, b, ...) so that both see the same machine load.
    """
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0 on PASS and 1 on FAIL."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=8, help="number of models (>= 2)")
    parser.add_argument("--params", type=int, default=25_000_000, help="parameters per model")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls, best is kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--blas-threads", type=int, default=None, help="BLAS threads")
    parser.add_argument("--no-numba", action="store_true", help="time VCA with numpy only")
    args = parser.parse_args(argv)
    if args.models < 2 or args.params < 16 or args.repeats < 1:
        parser.error("need --models >= 2, --params >= 16, --repeats >= 1")
    if args.blas_threads is not None:
        if "numpy" in sys.modules:
            parser.error("--blas-threads must be set before numpy is imported")
        for variable in BLAS_THREAD_VARIABLES:
            os.environ[variable] = str(args.blas_threads)

    import numpy as np

    from fedgossip.strategies import _fused, variance_corrected_average, weighted_average

    default = _fused.enabled  # False under FEDGOSSIP_NUMBA=0
    fused = default and not args.no_numba and _fused.kernels() is not None
    models = build_models(args.models, args.params, args.seed)
    shapes = [tensor.shape for tensor in models[0]]
    input_bytes = sum(tensor.nbytes for model in models for tensor in model)
    threads = {name: os.environ.get(name, "unset") for name in BLAS_THREAD_VARIABLES}
    if fused:
        numba = sys.modules["numba"].__version__
    else:
        numba = "off" if args.no_numba or not default else "not installed"
    print(f"python {platform.python_version()}, numpy {np.__version__}, numba {numba}, {platform.machine()}")
    print(f"BLAS threads: {threads}")
    print(
        f"{args.models} models x {args.params:,} float32 params in {len(shapes)} tensors "
        f"({input_bytes / 1e9:.2f} GB input); shapes: {shapes}"
    )

    def timed(function: Callable[[], object], kernel: bool) -> Callable[[], object]:
        def call() -> object:
            _fused.enabled = kernel
            try:
                return function()
            finally:
                _fused.enabled = default

        return call

    def average() -> object:
        return weighted_average(models)

    def corrected() -> object:
        return variance_corrected_average(models[0], models[1:], own_weight=0.5)

    paths = ["numpy", "fused (numba)"] if fused else ["numpy"]
    functions = {}
    for path in paths:
        functions[f"weighted_average, {path}"] = timed(average, path != "numpy")
        functions[f"VCA, {path}"] = timed(corrected, path != "numpy")
    for function in functions.values():  # warm-up: page in the models, load BLAS and the kernels
        function()
    times = best_times(functions, args.repeats)
    for name, seconds in times.items():
        print(f"{name:32} {seconds:8.3f} s  {input_bytes / seconds / 1e9:6.2f} GB/s")
    ratios = {path: times[f"VCA, {path}"] / times[f"weighted_average, {path}"] for path in paths}
    for path, ratio in ratios.items():
        print(f"ratio VCA / average, {path:17} {ratio:5.2f}")
    if fused:
        fused_vca, numpy_average = times["VCA, fused (numba)"], times["weighted_average, numpy"]
        print(f"VCA fused / average numpy            {fused_vca / numpy_average:5.2f}")
    verdict = "PASS" if ratios[paths[-1]] <= TARGET_RATIO else "FAIL"
    print(f"{paths[-1]}: target <= {TARGET_RATIO}: {verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
