"""Flower's runtime as the launcher drives it: the app folder, a private FLWR_HOME, the SuperLink and
SuperNode command lines, TLS material and SuperNode keys, and the `flwr` CLI calls.

Layout inside the results folder (all of it written by `prepare`):

    flower/app/           a minimal Flower app: pyproject.toml ([tool.flwr.app], components in the
                          installed fedgossip package) and LICENSE; the FAB is a few kB
    flower/home/          FLWR_HOME: config.toml with the run's SuperLink connection
    flower/run-config.toml  the run config (experiment TOML, records path, run start)
    flower/records.jsonl  what the ServerApp emits, one JSON event per line
    flower/final-model.npz  the final global model (tensor name -> array)
    secrets/              CA, SuperLink certificate, SuperNode keys (TLS / authenticated runs)

Every process gets the same environment: runtime dependency installation, telemetry and update
checks off, FLWR_HOME private, the interpreter's bin folder first on PATH (the SuperLink and
SuperNodes start `flower-superexec`, which starts `flwr-serverapp`/`flwr-clientapp`, by name).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from fedgossip.config import ExperimentConfig, dump_toml
from fedgossip.launcher.certificates import make_ca, make_certificate
from fedgossip.launcher.processes import Child, child_env
from fedgossip.server import protocol as p

LOOPBACK = "127.0.0.1"
CONNECTION = "fedgossip"
FLWR_VERSION_TARGET = "1.42.0"
CLI_TIMEOUT = 60.0
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


def executable(name: str) -> str:
    """A Flower console script of this interpreter's environment (the venv's bin folder)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


@dataclass(frozen=True)
class FlowerFiles:
    root: Path
    app: Path
    home: Path
    run_config: Path
    records: Path
    model: Path


@dataclass(frozen=True)
class Security:
    """TLS material and SuperNode keys of a secured run (paths; None when off)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    node_keys: tuple[tuple[Path, Path], ...] = ()  # (private OpenSSH key, public OpenSSH key) per node

    @property
    def tls(self) -> bool:
        return self.ca is not None


def prepare(config: ExperimentConfig, root: Path, address: str, run_start: float) -> FlowerFiles:
    """Write the app folder, FLWR_HOME (with the connection to `address`) and the run config."""
    files = FlowerFiles(
        root,
        root / "app",
        root / "home",
        root / "run-config.toml",
        root / "records.jsonl",
        root / "final-model.npz",
    )
    files.app.mkdir(parents=True, exist_ok=True)
    files.home.mkdir(parents=True, exist_ok=True)
    (files.app / "pyproject.toml").write_text(tomli_w.dumps(APP_PYPROJECT))
    (files.app / "LICENSE").write_text(LICENSE_TEXT)
    files.records.touch()
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
    write_connection(files.home, address, None)
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


def security_material(config: ExperimentConfig, secrets: Path) -> Security:
    """A throwaway CA and SuperLink certificate (security.tls) and one SuperNode key pair per node
    (security.mutual_tls: SuperNode authentication with registered keys)."""
    if not config.security.tls:
        return Security()
    ca = make_ca(secrets)
    cert = make_certificate(ca, secrets, "superlink", [LOOPBACK, "localhost"])
    keys: tuple[tuple[Path, Path], ...] = ()
    if config.security.mutual_tls:
        keys = tuple(node_key_pair(secrets / f"supernode-{i}") for i in range(config.nodes.count))
    return Security(ca.cert, cert.cert, cert.key, keys)


def node_key_pair(stem: Path) -> tuple[Path, Path]:
    """An EC P-384 key pair in OpenSSH format (what flower-supernode and `flwr supernode register`
    read): STEM (private, mode 0600) and STEM.pub."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    private, public = stem, stem.with_name(stem.name + ".pub")
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
    )
    private.chmod(0o600)
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        + b"\n"
    )
    return private, public


def flower_env(home: Path, threads: int) -> dict[str, str]:
    """The environment of every Flower process and `flwr` call of a run."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
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


def superlink_argv(port: int, security: Security, *, simulation: bool = False) -> list[str]:
    argv = [
        executable("flower-superlink"),
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--disable-runtime-dependency-installation",
    ]
    if security.tls:
        argv += [
            "--ssl-ca-certfile",
            str(security.ca),
            "--ssl-certfile",
            str(security.cert),
            "--ssl-keyfile",
            str(security.key),
        ]
    else:
        argv.append("--insecure")
    if security.node_keys:
        argv.append("--enable-supernode-auth")
    if simulation:
        argv.append("--simulation")
    return argv


def supernode_argv(
    superlink: str, port: int, partition: int, partitions: int, security: Security, *, max_wait: float
) -> list[str]:
    argv = [
        executable("flower-supernode"),
        "--superlink",
        superlink,
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--node-config",
        f"{p.PARTITION_ID}={partition} {p.NUM_PARTITIONS}={partitions}",
        "--max-wait-time",
        str(int(max_wait)),
    ]
    argv += ["--root-certificates", str(security.ca)] if security.tls else ["--insecure"]
    if security.node_keys:
        argv += ["--auth-supernode-private-key", str(security.node_keys[partition][0])]
    return argv


def wait_ready(port: int, security: Security, child: Child, timeout: float) -> float:
    """Wait until the SuperLink at LOOPBACK:port answers /health; seconds waited. Raises
    RuntimeError if the process exits or the deadline passes."""
    scheme = "https" if security.tls else "http"
    context = ssl.create_default_context(cafile=str(security.ca)) if security.tls else None
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            tail = re.sub(r"\x1b\[[0-9;]*m", "", child.log_tail(3))
            raise RuntimeError(f"{child.name} exited with {child.poll()} while starting: {tail}")
        try:
            with urllib.request.urlopen(f"{scheme}://{LOOPBACK}:{port}/health", timeout=1.0, context=context):
                return time.monotonic() - started
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise RuntimeError(f"{child.name} did not answer on {LOOPBACK}:{port} within {timeout:.0f}s")


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
    start = text.find("{")
    if start < 0:
        return {}
    try:
        value = json.loads(text[start:])
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def register_node_keys(security: Security, env: dict[str, str]) -> None:
    """Register every SuperNode's public key with the SuperLink (`flwr supernode register`)."""
    for index, (_, public) in enumerate(security.node_keys):
        flwr(["supernode", "register", str(public), CONNECTION, "--name", f"fedgossip-{index}"], env)


def submit(files: FlowerFiles, env: dict[str, str], federation_config: str | None = None) -> int:
    """Submit the app with the run config; return the run id."""
    args = ["run", str(files.app), CONNECTION, "--run-config", str(files.run_config)]
    if federation_config:
        args += ["--federation-config", federation_config]
    answer = flwr(args, env)
    return int(answer["run-id"])


def run_status(run_id: int, env: dict[str, str]) -> dict:
    """The SuperLink's view of the run (`flwr ls --run-id`): status, status-details, traffic."""
    runs = flwr(["ls", CONNECTION, "--run-id", str(run_id)], env).get("runs") or [{}]
    return runs[0]


def stop_run(run_id: int, env: dict[str, str]) -> None:
    """Ask the SuperLink to stop the run; failures are ignored (everything is stopped anyway)."""
    with contextlib.suppress(RuntimeError):
        flwr(["stop", str(run_id), CONNECTION], env, timeout=20)
