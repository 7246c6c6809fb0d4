"""The files and environment of a Flower run: the app folder, a private FLWR_HOME with the run's
SuperLink connection, the run config, and the environment every Flower process gets.

Layout inside the results folder (written by `prepare`; the connection by `write_connection`):

    flower/app/           a minimal Flower app: pyproject.toml ([tool.flwr.app], components in the
                          installed fedgossip package) and LICENSE; the FAB is a few kB
    flower/home/          FLWR_HOME: config.toml with the run's SuperLink connection (deployment)
    flower/bin/flwr-clientapp  the launcher's SuperNodes' ClientApp command (clientapp_shim.py:
                          a child of the run's fork server, else clientapp_process.py),
                          first on their PATH
    flower/run-config.toml  the run config (experiment TOML, records path, run start)
    flower/records.jsonl  what the ServerApp emits, one JSON event per line
    flower/final-model.npz  the final global model (tensor name -> array)

Every process gets the same environment: runtime dependency installation, telemetry and update
checks off, FLWR_HOME private, the run's flower/bin (deployment) and the interpreter's bin folder
first on PATH (the SuperLink and SuperNodes start `flower-superexec`, which starts
`flwr-serverapp`/`flwr-clientapp`, by name).
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from fedgossip.base import flower_protocol as p
from fedgossip.config import ExperimentConfig, dump_toml
from fedgossip.launcher.flower import clientapp_shim
from fedgossip.launcher.flower.flwr_cli import CONNECTION
from fedgossip.launcher.supervision.processes import child_env

FLWR_VERSION_TARGET = "1.42.0"
SUPEREXEC_POLL_S = "0.25"  # SuperExec's wait between task polls (Flower: 1 s): up to 0.75 s less per message

APP_PYPROJECT = {
    "project": {
        "name": "fedgossip-run",
        "version": "1.0.0",
        "description": "A fedgossip experiment (its ServerApp and ClientApp are in the installed package)",
        "license": {"file": "LICENSE"},
        "dependencies": ["flwr>=1.42,<1.43"],
    },
    "tool": {
        "flwr": {
            "app": {
                "publisher": "fedgossip",
                "fab-format-version": 1,
                "flwr-version-target": FLWR_VERSION_TARGET,
                "fab-include": ["LICENSE"],
                "components": {
                    "serverapp": "fedgossip.server.flower_app:app",
                    "clientapp": "fedgossip.client.flower_app:app",
                },
                "config": dict(p.RUN_CONFIG_DEFAULTS),
            }
        }
    },
}
LICENSE_TEXT = "Apache License 2.0 (see the fedgossip distribution).\n"


@dataclass(frozen=True)
class FlowerFiles:
    """Where a Flower run's files are (see the module docstring)."""

    root: Path
    app: Path
    home: Path
    bin: Path
    run_config: Path
    records: Path
    model: Path


def prepare(config: ExperimentConfig, root: Path, run_start: float) -> FlowerFiles:
    """Write the app folder, FLWR_HOME and the run config (the SuperLink connection is written once
    its port is known: `write_connection`)."""
    files = FlowerFiles(
        root,
        root / "app",
        root / "home",
        root / "bin",
        root / "run-config.toml",
        root / "records.jsonl",
        root / "final-model.npz",
    )
    files.app.mkdir(parents=True, exist_ok=True)
    files.home.mkdir(parents=True, exist_ok=True)
    (files.app / "pyproject.toml").write_text(tomli_w.dumps(APP_PYPROJECT))
    (files.app / "LICENSE").write_text(LICENSE_TEXT)
    files.records.touch()
    _write_clientapp_command(files.bin)
    files.run_config.write_text(
        tomli_w.dumps(
            {
                p.CONFIG_TOML: dump_toml(config),
                p.RECORDS_PATH: str(files.records.resolve()),
                p.RUN_START: float(run_start),
                p.MODEL_PATH: str(files.model.resolve()),
            }
        )
    )
    return files


def write_connection(home: Path, address: str, ca: Path | None) -> None:
    """FLWR_HOME/config.toml with one SuperLink connection (the default)."""
    connection: dict = {"address": address}
    if ca is None:
        connection["insecure"] = True
    else:
        connection["root-certificates"] = str(ca.resolve())
    (home / "config.toml").write_text(
        tomli_w.dumps({"superlink": {"default": CONNECTION, CONNECTION: connection}})
    )


def _write_clientapp_command(folder: Path) -> None:
    """`folder/flwr-clientapp`: this interpreter running `clientapp_shim` without site imports (it
    hands the ClientApp to the run's fork server, or runs `clientapp_process`: flwr's
    ClientApp command without the SuperNode's imports)."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "flwr-clientapp"
    shim = shlex.quote(str(Path(clientapp_shim.__file__).resolve()))
    script.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -S {shim} "$@"\n')
    script.chmod(0o755)


def flower_env(home: Path, threads: int, commands: Path | None = None) -> dict[str, str]:
    """The environment of every Flower process and `flwr` call of a run; `commands` (a folder of
    the launcher's own Flower commands: `FlowerFiles.bin`) first on PATH, then the interpreter's."""
    folders = [str(commands)] if commands is not None else []
    path = os.pathsep.join([*folders, str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return child_env(
        threads,
        {
            "FLWR_HOME": str(home.resolve()),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": SUPEREXEC_POLL_S,
            "PATH": path,
            "NO_COLOR": "1",
            "COLUMNS": "200",
        },
    )
