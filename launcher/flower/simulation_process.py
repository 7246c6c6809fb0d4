"""The process of the "simulation" Flower engine: our ServerApp and ClientApp on Flower's Ray-based
simulation runtime, called in process (`python -m fedgossip.launcher.flower.simulation_process
FLOWER_DIR NODES CPUS MODULES`, started by launcher/flower/simulation.py).

It calls `flwr.simulation.run_simulation._run_simulation`, the in-process entry behind both the
public (deprecated) `run_simulation` and Flower's own `flwr-simulation` process, with the run
config the launcher wrote (FLOWER_DIR/run-config.toml) as the run's override config and the app
folder (FLOWER_DIR/app) as app_dir, so the ServerApp and every ClientApp read the same run config
as under a SuperLink; the public `run_simulation` gives the apps an empty run config. The
ServerApp appends its events to the run config's records path, which the launcher follows.
Exit 0 when the ServerApp finished, 1 at once when it or the runtime failed (the traceback in the
log).

Time to round 1 (benchmarks/bench_flower.py): Ray is started first (`import_ray`, `ray.init`),
before this process imports anything else (even our config: the launcher names on the command
line the MODULES of the model, which Ray's workers import), so that its processes boot while
this one prepares: meanwhile a thread reads the run config and builds the ServerApp's learner
once (`prepare_server`: torch imported, the dataset loaded into the task's cache; the ServerApp
would otherwise start that only after its handshake with the nodes) and imports Flower's runtime
but for its Ray part, and our apps (`RUNTIME_MODULES`); the rest of Flower is imported after.
Flower's runtime then finds Ray running and uses it. Ray's workers import our ClientApp and
Flower's actor class as they boot (`APP_MODULES`), and the model's modules (torch) in the
background while the actors are created and answer the ServerApp's handshake
(`simulation_worker`).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import tomllib

if TYPE_CHECKING:
    from fedgossip.config import ExperimentConfig

RAY_LOGGING_LEVEL = "WARNING"  # Flower's simulation default (init_args_logging_level)
APP_MODULES = ("fedgossip.client.flower_app", "fedgossip.launcher.flower.simulation_worker")
"""What every Ray worker of the run imports before it takes work, in this order, to host a
ClientApp: our ClientApp, then Flower's actor class (without the rest of Flower's simulation
package) and the model's modules in the background (`simulation_worker`). The ClientApp first:
imported while the background thread imports the model's modules, the two imported
`fedgossip.tasks` at once, and its circular imports left one of them a partial module (the
ClientApp's preload then failed in most workers, and torch was imported at the first train message
instead: session 16)."""
RUNTIME_MODULES = (
    "flwr.server.superlink.linkstate",
    "flwr.supercore.object_store",
    "fedgossip.client.flower_app",
    "fedgossip.server.flower_app",
)
"""What the warm-up thread imports of Flower's runtime and of our apps once the ServerApp's learner
is built, while `ray.init` waits for Ray's processes: Flower's link state and object store
(SQLAlchemy) and our ServerApp and ClientApp, none of it Ray's (0.4-0.5 CPU-s, which the main
thread spent after `ray.init`, before the runtime could create the actors: session 16)."""
SHARED_MODULES = ("argparse", "click", "colorsys", "gettext", "grp", "pydantic", "tarfile", "termios")
"""The modules both `ray.init` (which imports more of Ray as it starts it) and the warm-up thread
import, imported before that thread starts: so the two threads never import one module at once
(two threads in one package's circular imports can leave one of them a partial module, see
APP_MODULES). tests/e2e/test_flower_simulation.py checks that they are all."""
BACKGROUND_ENV = "FEDGOSSIP_WORKER_MODULES"
"""The modules each worker imports in the background (comma-separated: the model's), in the
environment Ray's processes inherit from this one."""


def backend_config(cpus: int) -> dict:
    """Ray's backend config: `cpus` CPUs per virtual client (flower.simulation_cpus), no GPU; the
    rest as Flower's defaults (as `flwr-simulation` builds it from a federation config)."""
    return {"client_resources": {"num_cpus": cpus, "num_gpus": 0.0}, "init_args": {}}


def run_experiment(overrides: dict) -> ExperimentConfig | None:
    """The experiment config of the run config's `overrides`; None if it does not parse (the
    ServerApp and the ClientApps then report why)."""
    from fedgossip.config.flower_run import experiment_from_run_config

    try:
        return experiment_from_run_config(overrides)
    except Exception:  # reported by the apps, which parse it too
        return None


def ray_init_args() -> dict:
    """`ray.init`'s arguments: a Ray of this run alone (address "local": a bare `ray.init()`
    joins the last cluster a `ray start` or a test's `ray.cluster_utils.Cluster` on this machine
    announced in /tmp/ray, and hangs when that one goes away), its workers importing
    `APP_MODULES` before they take work, no dashboard, Flower's log level and log forwarding. No runtime env:
    Flower's (the driver's sys.path as PYTHONPATH) is inherited from this process's environment
    (`import_ray`), and without one the actors take the workers Ray prestarts instead of waiting
    for new ones."""
    return {
        "address": "local",
        "include_dashboard": False,
        "logging_level": RAY_LOGGING_LEVEL,
        "log_to_driver": True,
        "_system_config": {"preload_python_modules": list(APP_MODULES)},
    }


def import_ray(modules: tuple[str, ...]) -> ModuleType:
    """Ray, imported with the environment its processes will inherit: this process's sys.path in
    PYTHONPATH, as Flower's runtime env would give it to the workers, and `modules`, those the
    workers import in the background (`simulation_worker`)."""
    paths = [p for p in sys.path if p]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    os.environ[BACKGROUND_ENV] = ",".join(modules)
    import ray

    return ray


def warm_server(config: ExperimentConfig | None) -> None:
    """Build the learner the ServerApp builds for its initial model and evaluation
    (`server.federation.ServerEvaluator`: node 0's), and drop it: what stays is the imports
    (torch) and the task's cached dataset, so the ServerApp's own build, after its handshake with
    the nodes, is quick. A failure is left to the ServerApp, which builds it again and reports it."""
    from fedgossip.tasks import build_learner

    if config is not None:
        with contextlib.suppress(Exception):
            build_learner(config.task, 0, config.nodes.count, config.experiment.seed)


def prepare_server(flower_dir: Path) -> dict:
    """The run config's overrides (FLOWER_DIR/run-config.toml), with the ServerApp's learner built
    once (`warm_server`) and `RUNTIME_MODULES` imported. Run in a thread while the main thread
    starts Ray: the two import different modules (ours, torch and Flower's here, the rest of
    Ray's there; those both import are imported first, `SHARED_MODULES`), and the main thread
    imports Flower's runtime only once this has returned."""
    overrides = tomllib.loads((flower_dir / "run-config.toml").read_text())
    warm_server(run_experiment(overrides))
    for name in RUNTIME_MODULES:
        importlib.import_module(name)
    return overrides


def simulate(flower_dir: Path, nodes: int, cpus: int, modules: tuple[str, ...]) -> None:
    """Run the app of `flower_dir` on `nodes` virtual SuperNodes, Ray's workers importing
    `modules`; raises what the ServerApp or the runtime raised."""
    ray = import_ray(modules)
    for name in SHARED_MODULES:
        importlib.import_module(name)
    with ThreadPoolExecutor(1, thread_name_prefix="prepare-server") as pool:
        prepared = pool.submit(prepare_server, flower_dir)
        ray.init(**ray_init_args())
        overrides = prepared.result()
    from flwr.app import Context, RecordDict
    from flwr.common.config import get_fused_config_from_dir
    from flwr.common.constant import RUN_ID_NUM_BYTES, SUPERLINK_NODE_ID, TASK_ID_NUM_BYTES
    from flwr.server.superlink.linkstate.utils import generate_rand_int_from_bytes
    from flwr.simulation.run_simulation import _run_simulation
    from flwr.supercore.constant import NOOP_FEDERATION_ID
    from flwr.supercore.run import Run
    from flwr.supercore.task_identity import TaskIdentity
    from flwr.supercore.telemetry import EventType

    from fedgossip.client.flower_app import app as client_app
    from fedgossip.server.flower_app import app as server_app

    app = flower_dir / "app"
    run = Run.create_empty(run_id=generate_rand_int_from_bytes(RUN_ID_NUM_BYTES))
    run.primary_task_id = generate_rand_int_from_bytes(TASK_ID_NUM_BYTES)
    run.federation_id = NOOP_FEDERATION_ID
    run.override_config = overrides
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run.run_id, SUPERLINK_NODE_ID
    context = Context(
        run_id=run.run_id,
        node_id=0,
        node_config={},
        state=RecordDict(),
        run_config=get_fused_config_from_dir(app, overrides),
    )
    _run_simulation(
        num_supernodes=nodes,
        exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
        client_app=client_app,
        server_app=server_app,
        backend_config=backend_config(cpus),  # type: ignore[arg-type]
        server_app_context=context,
        app_dir=str(app),
        run=run,
        is_app=True,  # the ClientApps' run config: app_dir's defaults fused with the run's overrides
    )


def main(argv: list[str]) -> None:
    """`FLOWER_DIR NODES CPUS MODULES` (MODULES comma-separated): exit 0 when the run finished,
    1 (the traceback on stderr) when it failed, at once: after a failure of the runtime the
    ServerApp's thread may still wait for nodes that never come (up to flower.startup_timeout),
    so it is not waited for."""
    flower_dir, nodes, cpus, modules = Path(argv[0]), int(argv[1]), int(argv[2]), argv[3]
    try:
        simulate(flower_dir, nodes, cpus, tuple(filter(None, modules.split(","))))
    except BaseException as err:
        traceback.print_exc()
        while err.__cause__ is not None:  # Flower wraps the runtime's error: the log's last line says why
            err = err.__cause__
        print(f"simulation failed: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        os._exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
