"""Lazy heavy imports: a gossip peer, the CLI and the config import only what they need."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "sklearn", "flwr", "ray", "matplotlib")


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
    ],
)
def test_module_imports_no_heavy_library(module, allowed):
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert loaded.returncode == 0, loaded.stderr
    assert set(filter(None, loaded.stdout.strip().split(","))) <= set(allowed)


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
