"""The simulation engine's process (`launcher/flower/simulation_process.py`) before Flower's
runtime starts: the warm-up of the ServerApp's learner loads the task's dataset into the process's
cache and leaves the ServerApp's own build equal to a fresh one; a run config it cannot read or
build is left to the ServerApp to report; Ray's workers import the modules of the run's model (in
the background) and Flower's actor class without the rest of Flower's simulation package.
(Its Ray and the records of whole runs: tests/e2e/test_flower_simulation.py.)"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tomli_w

from fedgossip.base import flower_protocol as p
from fedgossip.config import dump_toml
from fedgossip.launcher.flower.simulation import model_modules
from fedgossip.launcher.flower.simulation_process import (
    APP_MODULES,
    BACKGROUND_ENV,
    prepare_server,
    run_experiment,
    warm_server,
)
from fedgossip.tasks import build_learner, data
from tests.support.configs import inprocess_flower

pytestmark = pytest.mark.timeout(60)


def _built(config):
    learner = build_learner(config.task, 0, config.nodes.count, config.experiment.seed)
    return learner.get_weights(), [learner.data.x_train, learner.data.y_train, *learner.data.test_set(True)]


def test_the_warm_up_caches_the_dataset_and_the_servers_build_equals_a_fresh_one(tmp_path):
    config = inprocess_flower('task.dataset="synthetic"', 'task.model="mlp"', "task.synthetic_samples=600")
    data._synthetic.cache_clear()
    fresh = _built(config)
    data._synthetic.cache_clear()
    overrides = {p.CONFIG_TOML: dump_toml(config)}
    (tmp_path / "run-config.toml").write_text(tomli_w.dumps(overrides))
    assert prepare_server(tmp_path) == overrides
    assert data._synthetic.cache_info().currsize == 1  # the dataset the ServerApp's build reads
    after = _built(config)
    assert data._synthetic.cache_info().hits >= 1
    for ours, theirs in zip(after[0] + after[1], fresh[0] + fresh[1], strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_a_run_config_the_warm_up_cannot_read_or_build_is_left_to_the_serverapp():
    assert run_experiment({p.CONFIG_TOML: "[experiment\nrounds = "}) is None
    warm_server(None)
    warm_server(inprocess_flower('task.dataset="prepared"', 'task.path="/nonexistent"'))  # raises nothing


def test_ray_workers_import_the_modules_of_the_runs_model_only():
    torch = model_modules(inprocess_flower('task.model="mlp"'))
    assert "fedgossip.tasks.torch_learner" in torch
    assert not any(m.startswith("opacus") for m in torch)
    assert model_modules(inprocess_flower('task.model="linear"')) == ()  # no torch
    private = model_modules(inprocess_flower('task.model="mlp"', 'privacy.mechanism="dp-sgd"'))
    assert "opacus.accountants" in private


WORKER = """
import sys, threading
from fedgossip.launcher.flower.simulation_worker import ClientAppActor
import flwr.simulation.ray_transport.ray_actor as actor
assert ClientAppActor is actor.ClientAppActor
print(sorted(m for m in ("fastapi", "sqlalchemy", "flwr.simulation.run_simulation") if m in sys.modules))
[imports] = [t for t in threading.enumerate() if t.name == "fedgossip-worker-imports"]
imports.join(60)
print("torch" in sys.modules, "fedgossip.tasks.torch_learner" in sys.modules)
from flwr.simulation import run_simulation
import flwr.simulation
assert flwr.simulation.run_simulation is run_simulation and "__getattr__" not in vars(flwr.simulation)
assert not hasattr(flwr.simulation, "__wrapped__")
print("fastapi" in sys.modules)
"""


def test_a_ray_worker_gets_flowers_actor_without_flowers_simulation_runtime_and_imports_the_model():
    # a fresh interpreter, as a Ray worker: the actor class, none of the runtime's imports, the
    # model's modules in the background (one that fails is skipped); the package's own names
    # still there when asked for (its init runs then)
    env = {**os.environ, BACKGROUND_ENV: "no_such_module,fedgossip.tasks.torch_learner"}
    result = subprocess.run(
        [sys.executable, "-c", WORKER], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["[]", "True True", "True"]


PRELOAD = """
import importlib, sys, threading
for name in sys.argv[1:]:  # as Ray's worker preloads them (utils.try_import_each_module)
    importlib.import_module(name)
[imports] = [t for t in threading.enumerate() if t.name == "fedgossip-worker-imports"]
imports.join(60)
print("torch" in sys.modules, "fedgossip.tasks.torch_learner" in sys.modules)
"""


def test_a_ray_workers_preload_imports_the_clientapp_and_the_model_every_time():
    # the ClientApp and the background thread importing fedgossip.tasks at once failed 4 times
    # in 6 (a partial module in a circular import): the worker's preload must not race
    env = {**os.environ, BACKGROUND_ENV: ",".join(model_modules(inprocess_flower('task.model="mlp"')))}
    for _ in range(4):
        result = subprocess.run(
            [sys.executable, "-c", PRELOAD, *APP_MODULES], capture_output=True, text=True, timeout=60, env=env
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["True", "True"]
