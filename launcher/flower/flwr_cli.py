"""The `flwr` command line as the launcher uses it: run `flwr ... --format json`, parse its answer,
and the four calls a run needs (register SuperNode keys, submit, run status, stop).

Every call goes to the run's one SuperLink connection, `CONNECTION`, which `flower_files` writes into
the run's private FLWR_HOME.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

CONNECTION = "fedgossip"
CLI_TIMEOUT = 60.0


def executable(name: str) -> str:
    """A Flower console script of this interpreter's environment (the venv's bin folder)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def flwr(args: list[str], env: dict[str, str], timeout: float = CLI_TIMEOUT) -> dict:
    """Run `flwr ARGS --format json` and return its JSON answer; RuntimeError on failure."""
    argv = [executable("flwr"), *args, "--format", "json"]
    try:
        done = subprocess.run(  # own session: a Ctrl-C meant for the launcher does not fail the call
            argv,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"`flwr {' '.join(args[:2])}` did not answer within {timeout:.0f}s") from None
    answer = _json_object(done.stdout)
    if done.returncode != 0 or not answer.get("success", False):
        detail = answer.get("error-message") or (done.stderr or done.stdout).strip()[-500:]
        raise RuntimeError(f"`flwr {' '.join(args[:2])}` failed: {detail}")
    return answer


def _json_object(text: str) -> dict:
    """The JSON object `flwr` printed (after any log lines); {} when there is none."""
    start = text.find("{")
    if start < 0:
        return {}
    try:
        value = json.loads(text[start:])
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def register_node_keys(public_keys: Iterable[Path], env: dict[str, str]) -> None:
    """Register every SuperNode's public key with the SuperLink (`flwr supernode register`)."""
    for index, public in enumerate(public_keys):
        flwr(["supernode", "register", str(public), CONNECTION, "--name", f"fedgossip-{index}"], env)


def submit(app: Path, run_config: Path, env: dict[str, str]) -> int:
    """Submit the app folder `app` with the run config file `run_config`; return the run id."""
    answer = flwr(["run", str(app), CONNECTION, "--run-config", str(run_config)], env)
    return int(answer["run-id"])


def run_status(run_id: int, env: dict[str, str]) -> dict:
    """The SuperLink's view of the run (`flwr ls --run-id`): status, status-details, traffic."""
    runs = flwr(["ls", CONNECTION, "--run-id", str(run_id)], env).get("runs") or [{}]
    return runs[0]


def stop_run(run_id: int, env: dict[str, str]) -> None:
    """Ask the SuperLink to stop the run; failures are ignored (everything is stopped anyway)."""
    with contextlib.suppress(RuntimeError):
        flwr(["stop", str(run_id), CONNECTION], env, timeout=20)
