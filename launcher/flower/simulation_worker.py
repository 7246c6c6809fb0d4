"""What a Ray worker of the "simulation" engine imports first (`simulation.APP_MODULES`): Flower's
actor class, `flwr.simulation.ray_transport.ray_actor.ClientAppActor`, without running the init of
its package `flwr.simulation` first.

That init imports Flower's whole simulation runtime (`run_simulation`, the SimulationIo
connection, the CLI and, through them, FastAPI and SQLAlchemy): ~0.5 CPU-s in each worker, on the
path to round 1, for code a worker never runs (it hosts ClientApps; the runtime is the simulation
process's). So `flwr.simulation` is put in `sys.modules` created but not executed, and its
init runs the first time anyone asks it for a name it has not got (`from flwr.simulation import
run_simulation` works as ever): a lazy package, not a different one. Importing its submodules
(the actor's) needs only its `__path__`, which it has. In any other process `flwr.simulation` is
left alone when it is imported already.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

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


lazy_package(PACKAGE)

from flwr.simulation.ray_transport.ray_actor import ClientAppActor  # noqa: E402

__all__ = ["ClientAppActor", "lazy_package"]
