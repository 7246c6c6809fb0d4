"""Flower as the tests drive it: reply Messages as a SuperNode would deliver them, the settings
of a two-SuperNode deployment run, and the check that every process of such a run is gone."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    MessageType,
    Metadata,
    MetricRecord,
    RecordDict,
)
from rich.console import Console

from fedgossip.base import flower_protocol as p
from fedgossip.config import load_config
from fedgossip.launcher.experiments.run import run_experiment
from fedgossip.launcher.supervision.processes import child_env
from fedgossip.launcher.supervision.proctree import alive
from fedgossip.reports import read_records
from tests.support.cli import wait_for
from tests.support.models import NAMES

FLOWER = [
    "--set",
    "experiment.mode=flower",
    "--set",
    "flower.engine=deployment",
    "--set",
    "nodes.count=2",
    "--set",
    "flower.startup_timeout=60",
    "--set",
    "flower.round_timeout=60",
]
"""`fedgossip run` arguments of a Flower deployment run of two SuperNodes on loopback ports."""


def run_inprocess(out: Path, args: Sequence[str], config_file: str | None = None) -> dict:
    """`fedgossip run [CONFIG_FILE] --out OUT ARGS` on the in-process Flower engine (ARGS: `--set`
    pairs; `flower.engine` is set to "inprocess"), run in this process as the CLI runs it
    (`run_experiment`): the reference a deployment or simulation run is compared with, without a
    process start and its imports. Returns the summary of the run, which must complete."""
    settings = [arg for arg in args if arg != "--set"] + ['flower.engine="inprocess"']
    console = Console(file=io.StringIO())
    summary, code = run_experiment(load_config(config_file, settings), out, console)
    assert code == 0 and summary["status"] == "complete", console.file.getvalue()
    return summary


def processes_gone(run: Path) -> dict[str, int]:
    """The processes of the run (processes.json) that are still alive."""
    pids = json.loads((run / "processes.json").read_text())
    assert pids.get("superlink") and pids.get("supernode-0") and pids.get("supernode-1")
    assert any(name.startswith("flower-superexe") for name in pids), pids  # descendants were tracked
    return {name: pid for name, pid in pids.items() if name != "flower_run_id" and alive(pid)}


def reply(
    node_id: int,
    arrays: list[np.ndarray] | None,
    examples: int,
    kind: str = MessageType.TRAIN,
    error: str | None = None,
    partition: int | None = None,
) -> Message:
    """A reply Message as a SuperNode would deliver it."""
    metadata = Metadata(
        run_id=1,
        message_id=f"r{node_id}",
        src_node_id=node_id,
        dst_node_id=1,
        reply_to_message_id=f"m{node_id}",
        group_id="",
        created_at=time.time(),
        ttl=3600.0,
        message_type=kind,
    )
    if error is not None:
        return Message(metadata=metadata, error=Error(2, error))
    content = RecordDict({p.METRICS: MetricRecord({p.TRAIN_LOSS: 0.5, p.NUM_EXAMPLES: examples})})
    if arrays is not None:
        content[p.ARRAYS] = ArrayRecord({n: Array(a) for n, a in zip(NAMES, arrays, strict=True)})
    if partition is not None:
        content[p.NODE] = ConfigRecord({p.PARTITION_ID: partition, p.NUM_PARTITIONS: 4})
    return Message(metadata=metadata, content=content)


def fair_config(*overrides: str):
    """strategy.name = "fair" on an in-process Flower federation of 5 nodes over a streamed task with
    label noise: 3 explore rounds of 7, then exploit rounds selecting 40%; `overrides` on top."""
    return load_config(
        None,
        [
            'experiment.mode="flower"',
            'flower.engine="inprocess"',
            'strategy.name="fair"',
            "nodes.count=5",
            "experiment.rounds=7",
            "task.stream_chunks=6",
            "task.label_noise=0.6",
            "task.local_epochs=2",
            'strategy.params.stopping="fixed"',
            "strategy.params.explore_rounds=3",
            "strategy.params.ratio=0.4",
            *overrides,
        ],
    )


INPROCESS_NODES, INPROCESS_ROUNDS = 4, 3
INPROCESS = [
    'experiment.mode="flower"',
    'flower.engine="inprocess"',
    "flower.fraction_evaluate=0.0",
    f"nodes.count={INPROCESS_NODES}",
    f"experiment.rounds={INPROCESS_ROUNDS}",
    "task.model=linear",
]
"""A small in-process Flower run of the linear model (no evaluation round)."""


def ctrl_c_after_round_1(
    argv: list[str],
    run: Path,
    log: Path,
    node: int | str,
    timeout: float,
    at_round_1: Callable = lambda launcher: None,
):
    """Start the launcher (`argv`, its output to `log`) in a session of its own, wait up to
    `timeout` for `node`'s record of round 1 in `run`, call `at_round_1(launcher)`, send SIGINT and wait for
    the launcher (killed if it outlives 60 s). Returns (the launcher's exit code, what
    `at_round_1` returned)."""
    with open(log, "wb") as out:
        launcher = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=child_env(1), start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # even if the shell ignores it
        )  # fmt: skip
        try:
            wait_for(lambda: (run / "metrics.jsonl").exists() and any(
                r["round"] == 1 and r["node"] == node for r in read_records(run)), timeout, "round 1"
            )  # fmt: skip
            seen = at_round_1(launcher)
            launcher.send_signal(signal.SIGINT)
            launcher.wait(60)
        finally:
            if launcher.poll() is None:
                launcher.kill()
                launcher.wait(10)
    return launcher.returncode, seen
