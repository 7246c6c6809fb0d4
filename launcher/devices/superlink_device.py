"""`fedgossip superlink DIR`: what the SuperLink device of a Flower bundle runs (its start.sh).

It does on the device what the launcher's deployment engine does on loopback, with the launcher's
own functions: the Flower files (`flower/`: app, FLWR_HOME, run config, records.jsonl), the
`flower-superlink` on the inventory's address with the bundle's certificate and SuperNode
authentication, the SuperNodes' keys registered, the run submitted and followed until the SuperLink
reports it finished (SuperNodes may join late: they have flower.startup_timeout), then every
process it started stopped by PID. The ServerApp records on this device's clock from its own start.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from fedgossip.base.certificates import issued_paths
from fedgossip.base.ports import LOOPBACK
from fedgossip.config import load_config
from fedgossip.launcher.devices.flower_bundle import NODE_CONFIG, SUPERLINK_LOG
from fedgossip.launcher.devices.folders import MANIFEST, PKI
from fedgossip.launcher.flower.files import flower_env, prepare, write_connection
from fedgossip.launcher.flower.flwr_cli import register_node_keys, run_status, stop_run, submit
from fedgossip.launcher.flower.outcome import checked, time_limit
from fedgossip.launcher.flower.processes import superlink_argv, wait_ready
from fedgossip.launcher.flower.security import Security
from fedgossip.launcher.supervision.processes import Child, supervised
from fedgossip.launcher.supervision.proctree import ProcessTracker

STATUS_POLL_S = 2.0
ANY_ADDRESS = ("0.0.0.0", "::")


def run_superlink_device(folder: Path, say=print) -> int:
    """Run the SuperLink device in `folder` to the end of its run; 0 if the run completed, else 1
    (`say` tells what happens, a line at a time). LaunchError when a Flower process or call fails."""
    folder = folder.resolve()
    manifest = json.loads((folder / MANIFEST).read_text())
    if manifest.get("role") != "superlink":
        raise ValueError(
            f"{folder}: not a SuperLink device folder ({MANIFEST} says {manifest.get('role')!r})"
        )
    config = load_config(folder / NODE_CONFIG)
    host, _, port_text = manifest["listen"].rpartition(":")
    host, port = host.strip("[]"), int(port_text)
    local = LOOPBACK if host in ANY_ADDRESS else host  # where this device's own calls reach it
    pki = folder / PKI
    issued = issued_paths(pki, "superlink")
    keys = sorted(pki.glob("supernode-*.pub"), key=lambda p: int(p.stem.split("-")[1]))
    # the private keys stay on the SuperNodes: only the public ones are read here
    security = Security(pki / "ca.pem", issued.cert, issued.key, tuple((pub, pub) for pub in keys))
    files = prepare(config, folder / "flower", 0.0)
    env = flower_env(files.home, config.task.threads)
    write_connection(files.home, f"{local}:{port}", security.ca)
    tracker = ProcessTracker()
    with supervised() as children:
        superlink = Child(
            "superlink",
            superlink_argv(port, security, host),
            log_path=folder / SUPERLINK_LOG,
            env=env,
            cwd=files.root,
        )
        children.append(superlink)
        run_id = None
        try:
            checked(lambda: wait_ready(port, security, superlink, config.flower.startup_timeout, local))
            checked(lambda: register_node_keys(keys, env))
            run_id = checked(lambda: submit(files.app, files.run_config, env))
            say(f"SuperLink on {host}:{port}: run {run_id} submitted; waiting for {len(keys)} SuperNodes")
            status = checked(lambda: follow(run_id, superlink, tracker, env, time_limit(config, 2)))
        except KeyboardInterrupt:
            if run_id is not None:
                stop_run(run_id, env)
            raise
        finally:
            tracker.scan([superlink.pid])
            tracker.stop_leftovers(leaves_first=True)
    say(f"run {run_id}: {status}")
    return 0 if status == "finished:completed" else 1


def follow(run_id: int, superlink: Child, tracker: ProcessTracker, env: dict[str, str], limit: float) -> str:
    """The run's final status, asked every few seconds until the SuperLink reports it finished; the
    run is stopped when the SuperLink dies or the time limit passes (RuntimeError)."""
    deadline = time.monotonic() + limit
    while True:
        tracker.scan([superlink.pid])
        if superlink.poll() is not None:
            raise RuntimeError(f"the SuperLink exited with {superlink.poll()}: {superlink.log_tail(2)}")
        status = str(run_status(run_id, env).get("status", ""))
        if status.startswith("finished"):
            return status
        if time.monotonic() > deadline:
            stop_run(run_id, env)
            raise RuntimeError(f"run {run_id} exceeded its time limit of {limit:.0f}s and was stopped")
        time.sleep(STATUS_POLL_S)
