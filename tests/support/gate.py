"""Commands released at the same instant: each `fedgossip` process imports everything it needs,
says it is ready, and waits for a gate file; the test opens the gate once all are ready, so their
first looks at a results folder fall within a millisecond or two of each other."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from fedgossip.launcher.supervision.processes import child_env
from tests.support.cli import wait_for

GATED = """
import os, sys, time
import fedgossip.launcher.cli as cli
import fedgossip.config, fedgossip.launcher.experiments.run, fedgossip.launcher.experiments.sweep  # noqa
gate, ready = sys.argv[1], sys.argv[2]
open(ready, "w").close()
deadline = time.monotonic() + 60
while not os.path.exists(gate):
    if time.monotonic() > deadline:
        sys.exit("the gate never opened")
    time.sleep(0.0005)
sys.argv = ["fedgossip", *sys.argv[3:]]
cli.main()
"""


def released_together(
    folder: Path, commands: Sequence[Sequence[str]], timeout: float = 150
) -> list[subprocess.CompletedProcess]:
    """Run each of `commands` (`fedgossip` arguments) behind one gate in `folder` (a fresh
    folder per call), open the gate when all are ready and wait for them; their results (output
    with stderr folded in). Every process still running at the end is SIGKILLed with its group."""
    folder.mkdir(parents=True, exist_ok=True)
    gate = folder / "gate"
    ready = [folder / f"ready-{index}" for index in range(len(commands))]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", GATED, str(gate), str(flag), *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**child_env(1), "COLUMNS": "1000"},
            start_new_session=True,
        )
        for flag, command in zip(ready, commands, strict=True)
    ]
    try:
        wait_for(lambda: _all_ready(processes, ready), 60, "every command to be ready")
        gate.touch()
        outputs = [process.communicate(timeout=timeout)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.communicate()
    return [
        subprocess.CompletedProcess(command, process.returncode, output.decode(errors="replace"))
        for command, process, output in zip(commands, processes, outputs, strict=True)
    ]


def _all_ready(processes: Sequence[subprocess.Popen], ready: Sequence[Path]) -> bool:
    assert all(process.poll() is None for process in processes), "a command ended before the gate opened"
    return all(flag.exists() for flag in ready)
