"""What a Ray worker of the "simulation" engine imports after our ClientApp
(`simulation_process.APP_MODULES`), before it takes work: Flower's actor class,
`flwr.simulation.ray_transport.ray_actor.ClientAppActor`, without running the init of its package
`flwr.simulation` first; and a thread that imports the model's modules (torch: ~1 CPU-s) in the
background (`simulation_process.BACKGROUND_ENV`).

That init imports Flower's whole simulation runtime (`run_simulation`, the SimulationIo
connection, the CLI and, through them, FastAPI and SQLAlchemy): ~0.5 CPU-s in each worker, on the
path to round 1, for code a worker never runs (it hosts ClientApps; the runtime is the simulation
process's). So `flwr.simulation` is put in `sys.modules` created but not executed, and its
init runs the first time anyone asks it for a name it has not got (`from flwr.simulation import
run_simulation` works as ever): a lazy package, not a different one. Importing its submodules
(the actor's) needs only its `__path__`, which it has. In any other process `flwr.simulation` is
left alone when it is imported already.

The model's modules are needed at a node's first train or evaluate message, not to create the
actor and answer the ServerApp's handshake (query messages); imported in the background, they load
while that goes on. A message that needs them meanwhile waits for the import (Python's import
lock), and a failed import is left to the message, which imports again and reports why. The
thread starts once our ClientApp is imported: both import `fedgossip.tasks`, whose circular
imports, run by two threads at once, leave one of them a partial module.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import threading
from collections.abc import Iterable
from types import ModuleType

from fedgossip.launcher.flower.simulation_process import BACKGROUND_ENV

PACKAGE = "flwr.simulation"


def lazy_package(name: str) -> ModuleType:
    """The package `name`, in `sys.modules` without its init executed (created from its spec,
    with its `__path__`), whose init runs the first time a missing attribute is read; the module
    itself if it is imported already."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError(f"{name} is not a package")
    module = importlib.util.module_from_spec(spec)

    def complete(attribute: str) -> object:
        """Run the package's init (once), then read `attribute` as if it had run at import."""
        if attribute.startswith("__"):  # introspection (__all__, __wrapped__...) runs nothing
            raise AttributeError(f"module {name!r} has no attribute {attribute!r}")
        del module.__dict__["__getattr__"]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        return getattr(module, attribute)

    module.__dict__["__getattr__"] = complete
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)  # as an import binds it in its parent
    return module


def import_in_background(names: Iterable[str]) -> threading.Thread:
    """Import `names` in order in a daemon thread (errors ignored: see the module's doc)."""

    def run() -> None:
        for name in names:
            with contextlib.suppress(Exception):
                importlib.import_module(name)

    thread = threading.Thread(target=run, name="fedgossip-worker-imports", daemon=True)
    thread.start()
    return thread


lazy_package(PACKAGE)

from flwr.simulation.ray_transport.ray_actor import ClientAppActor  # noqa: E402

if os.environ.get(BACKGROUND_ENV):
    import_in_background(os.environ[BACKGROUND_ENV].split(","))

__all__ = ["ClientAppActor", "import_in_background", "lazy_package"]
