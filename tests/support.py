"""What the tests share: CLI runs and their records, peers started by hand with their stubs,
waits with timeouts, interrupts, small datasets on disk, and a loopback Ray cluster."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np

from fedgossip.base.ports import LOOPBACK, free_ports
from fedgossip.client.gossip.transport.identity import LinkKeys
from fedgossip.client.gossip.transport.sender import open_channels
from fedgossip.config import PeerSection, dump_toml, load_config
from fedgossip.launcher.gossip.ray_engine import LOCAL_ONLY
from fedgossip.launcher.supervision.processes import Child, child_env, python_module
from fedgossip.launcher.supervision.proctree import descendants
from fedgossip.proto import gossip_pb2, gossip_pb2_grpc
from fedgossip.reports import read_records
from fedgossip.tasks.data import load_raw

RECORD_FIELDS = frozenset(
    {
        "node",
        "round",
        "time_s",
        "train_loss",
        "test_loss",
        "test_accuracy",
        "num_examples",
        "bytes_sent",
        "bytes_received",
    }
)
"""Keys every metrics record has, in every mode (DESIGN.md's contract)."""

REPO = Path(__file__).resolve().parents[1]
"""The repository's root (README, examples, benchmarks, proto)."""


def cli_argv(*args: str, settings: Sequence[str] = ()) -> list[str]:
    """argv of `fedgossip ARGS --set S ...` run with this interpreter."""
    argv = [sys.executable, "-m", "fedgossip.launcher.cli", *args]
    for item in settings:
        argv += ["--set", item]
    return argv


def start_cli(*args: str, settings: Sequence[str] = ()) -> subprocess.Popen:
    """Start `fedgossip ARGS` in its own session (so a test can signal it alone); output piped."""
    return subprocess.Popen(
        cli_argv(*args, settings=settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=child_env(1),
        start_new_session=True,
    )


def run_cli(*args: str, timeout: float = 150) -> subprocess.CompletedProcess:
    """Run `fedgossip ARGS` in a subprocess (killed on timeout) and return its result."""
    return subprocess.run(
        cli_argv(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(1),
    )


def metrics(run_dir: Path) -> list[dict]:
    """The metrics records of a results folder (a line being written is skipped)."""
    return read_records(run_dir)


def write_node_config(path: Path, peer: PeerSection, *overrides: str) -> Path:
    """A node config: the built-in quickstart with `overrides` and the given [peer] section."""
    config = load_config(None, list(overrides)).replace(peer=peer)
    path.write_text(dump_toml(config))
    return path


def start_peer(config: Path, log: Path) -> Child:
    """Start one peer process from a node config (stop it with .stop())."""
    return Child(
        f"peer-{config.stem}",
        python_module("fedgossip.client.gossip.peer", str(config)),
        log_path=log,
        env=child_env(1),
    )


def wait_healthy(stub: gossip_pb2_grpc.GossipStub, timeout: float = 60) -> gossip_pb2.HealthReply:
    """Wait (with a deadline) until the peer behind `stub` answers Health."""
    return stub.Health(gossip_pb2.HealthRequest(), timeout=timeout, wait_for_ready=True)


def loopback_ports(count: int) -> list[int]:
    return free_ports(count, "127.0.0.1")


def wait_exit(child: Child, timeout: float) -> int:
    """Wait for a child to exit by itself; fail the test (after stopping it) if it does not."""
    try:
        return child.process.wait(timeout)
    except subprocess.TimeoutExpired:
        child.stop()
        raise AssertionError(
            f"{child.name} did not finish within {timeout}s:\n{child.log_tail(20)}"
        ) from None


def run_status(run_dir: Path) -> str | None:
    """The status in a run folder's summary.json (None while the run has not written it)."""
    try:
        return json.loads((run_dir / "summary.json").read_text())["status"]
    except (OSError, ValueError, KeyError):
        return None


def interrupt_in_second_run(
    launcher: subprocess.Popen, first: Path, second: Path, tree: dict
) -> tuple[str, list[int], bytes]:
    """Wait until run folder `first` is complete and the nodes of `second` started, add the
    launcher's processes to `tree` (PID -> psutil.Process), then SIGINT the launcher and wait for
    it: its output, the PIDs of `second`'s nodes, and `first`'s metrics.jsonl as it was."""
    wait_for(lambda: run_status(first) == "complete", 120, "the first run to finish")
    wait_for(lambda: (second / "processes.json").exists(), 60, "the second run's nodes to start")
    tree.update((proc.pid, proc) for proc in descendants([launcher.pid]))
    nodes = list(json.loads((second / "processes.json").read_text()).values())
    first_metrics = (first / "metrics.jsonl").read_bytes()
    launcher.send_signal(signal.SIGINT)
    return launcher.communicate(timeout=90)[0].decode(), nodes, first_metrics


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    """Poll `predicate` until it returns something truthy, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class _Sink(gossip_pb2_grpc.GossipServicer):
    """A neighbour that accepts any push and counts them (those started, those read to the end)."""

    def __init__(self) -> None:
        self.started = 0
        self.pushes = 0

    def PushModel(self, request_iterator, context):
        self.started += 1
        for _ in request_iterator:
            pass
        self.pushes += 1
        return gossip_pb2.PushReply(accepted=True)


@contextlib.contextmanager
def sink_neighbour(port: int, credentials: grpc.ServerCredentials | None = None):
    """An in-process gRPC server on 127.0.0.1:`port` standing in for a neighbour's receiving side."""
    server = grpc.server(futures.ThreadPoolExecutor(4))
    sink = _Sink()
    gossip_pb2_grpc.add_GossipServicer_to_server(sink, server)
    address = f"127.0.0.1:{port}"
    server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    server.start()
    try:
        yield sink
    finally:
        server.stop(grace=None)


def stub_for(address: str, credentials: grpc.ChannelCredentials | None = None) -> gossip_pb2_grpc.GossipStub:
    channel = grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
    return gossip_pb2_grpc.GossipStub(channel)


def aio_stub_for(address: str) -> gossip_pb2_grpc.GossipStub:
    """A stub on a grpc.aio channel of the process's event loop (what a peer's senders use)."""
    (channel,) = open_channels({0: address}, None, []).values()
    return gossip_pb2_grpc.GossipStub(channel)


@contextlib.contextmanager
def launched(out: Path, settings: Sequence[str]):
    """`fedgossip run --out OUT` in the background; interrupted (SIGINT) and reaped when done."""
    launcher = start_cli("run", "--out", str(out), settings=settings)
    try:
        yield launcher
    finally:
        interrupt(launcher)


def interrupt(process: subprocess.Popen, timeout: float = 60) -> None:
    """SIGINT a CLI process started by `start_cli` if it still runs and reap it; SIGKILL its
    process group if it has not exited after `timeout` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


def node_config(out: Path, node: int):
    """The node config the launcher wrote for `node` (its [peer] section says port and keys)."""
    return load_config(out / "nodes" / f"node-{node}.toml")


def peer_address(out: Path, node: int) -> str:
    return node_config(out, node).peer.listen


def keys_of(out: Path, node: int) -> LinkKeys:
    """A launched node's link keys: what an attacker who took over that node holds."""
    return LinkKeys.load(out / "secrets" / f"node-{node}.links", node)


def rounds_done(out: Path, node: int) -> int:
    """The last round `node` recorded so far (0 before any)."""
    if not (out / "metrics.jsonl").exists():
        return 0
    return max((r["round"] for r in metrics(out) if r["node"] == node), default=0)


def set_args(items: Sequence[str]) -> list[str]:
    """`--set ITEM` for each of `items`."""
    return [arg for item in items for arg in ("--set", item)]


def timeless(records: list[dict]) -> list[dict]:
    """What records say that does not depend on timing: all but time_s, in (node, round) order."""
    return sorted(
        ({k: v for k, v in r.items() if k != "time_s"} for r in records),
        key=lambda r: (r["node"], r["round"]),
    )


def kill_during_run(out: Path, settings: Sequence[str], node: int, process: str, before_kill=None, kill=None):
    """Run `fedgossip run --out OUT` with `settings`, SIGKILL the process named `process` in
    processes.json (or call `kill(process)`) once `node` finished round 2 (after calling
    `before_kill(processes)`), and wait for the launcher; returns its exit status and output."""
    launcher = start_cli("run", "--out", str(out), settings=settings)

    def finished_round_2() -> bool:
        assert launcher.poll() is None, "the launcher ended early"
        return (out / "metrics.jsonl").exists() and any(
            r["node"] == node and r["round"] == 2 for r in metrics(out)
        )

    try:
        wait_for(finished_round_2, 120, f"node {node} to finish round 2")
        processes = json.loads((out / "processes.json").read_text())
        if before_kill is not None:
            before_kill(processes)
        if kill is None:
            os.kill(processes[process], signal.SIGKILL)
        else:
            kill(process)
        output, _ = launcher.communicate(timeout=180)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.communicate()
    return launcher.returncode, output.decode(errors="replace")


def digit_images(count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` digits as (count, 8, 8) uint8 images (0..255) and int64 labels."""
    x, y = load_raw("digits")
    return (x[:count] * 255 / 16).round().astype(np.uint8).reshape(-1, 8, 8), y[:count].copy()


def save_hf_digits(folder: Path, count: int = 600, test: int = 0, *, parquet: bool = False) -> Path:
    """The digits as a Hugging Face dataset (columns "image": Image, "label": ClassLabel): a
    DatasetDict saved with save_to_disk (a "test" split of the last `test` images if test > 0;
    a bare Dataset if test == 0), or one parquet file per split with `parquet`."""
    import datasets

    x, y = digit_images(count)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(d) for d in range(10)])}
    )
    full = datasets.Dataset.from_dict({"image": list(x), "label": y.tolist()}, features=features)
    splits = {"train": full.select(range(count - test))}
    if test:
        splits["test"] = full.select(range(count - test, count))
    if parquet:
        folder.mkdir(parents=True, exist_ok=True)
        for name, split in splits.items():
            split.to_parquet(str(folder / f"{name}.parquet"))
    elif test:
        datasets.DatasetDict(splits).save_to_disk(str(folder))
    else:
        splits["train"].save_to_disk(str(folder))
    return folder


@contextlib.contextmanager
def loopback_cluster(nodes: int = 2, cpus: int = 1) -> Iterator:
    """`ray.cluster_utils.Cluster` of `nodes` nodes of `cpus` CPUs on 127.0.0.1 (no dashboard),
    this process connected to it as a driver; shut down at the end. Ray otherwise replaces
    127.0.0.1 by the machine's outward address when a driver connects (`LOCAL_ONLY` stops it, in
    this process and in the launchers it starts)."""
    import ray
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    saved = os.environ.get(LOCAL_ONLY), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOCAL_ONLY] = "0"  # for the launchers started from here
    ray_constants.ENABLE_RAY_CLUSTER = False  # for this process, whenever it imported Ray
    args = {"num_cpus": cpus, "node_ip_address": LOOPBACK}
    cluster = Cluster(initialize_head=True, head_node_args={**args, "include_dashboard": False})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(**args)
        ray.init(address=cluster.address, log_to_driver=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        ray_constants.ENABLE_RAY_CLUSTER = saved[1]
        if saved[0] is None:
            os.environ.pop(LOCAL_ONLY, None)
        else:
            os.environ[LOCAL_ONLY] = saved[0]
