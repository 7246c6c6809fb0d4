"""`flwr-clientapp`, flwr's own, without the SuperNode's imports: flwr 1.42's script imports its
package `flwr.supernode.cli`, whose `__init__` also imports the SuperNode command
(`flower_supernode`: SQLAlchemy, Alembic, the object stores), about 0.45 s of CPU in every ClientApp
process, and a SuperNode starts one per message. The launcher's SuperNodes find this one first on
their PATH (the run's `flower/bin/flwr-clientapp`, written by `files.prepare`); everything else is
`flwr_clientapp()`. A SuperNode on a device runs plain `flwr-clientapp`."""

from __future__ import annotations

import importlib.util
import sys
import types

from fedgossip.launcher.flower.supernode_process import call_process

PACKAGE = "flwr.supernode.cli"
"""The package whose `__init__` is skipped (flwr 1.42: it imports `flower_supernode`)."""


def without_package_init(package: str) -> None:
    """Make the submodules of `package` importable without running the package's `__init__`."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError(f"{package} is not a package")
    module = types.ModuleType(package)
    module.__path__ = list(spec.submodule_search_locations)
    module.__spec__ = spec
    sys.modules[package] = module


def main() -> None:
    """Run flwr's ClientApp process (its command line) without importing the SuperNode."""
    call_process("flwr-clientapp")
    sys.argv[0] = "flwr-clientapp"  # what flwr's script would be called (its usage line, its exit event)
    without_package_init(PACKAGE)
    from flwr.supernode.cli.flwr_clientapp import flwr_clientapp

    flwr_clientapp()


if __name__ == "__main__":
    main()
