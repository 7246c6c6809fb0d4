"""Every registry rule in a gossip run through the CLI (on the virtual-time engine: every peer in one
process, each loading its node config and merging as a peer process does, with the records of real
peer processes: tests/e2e/test_virtual_engine.py), and a user's rule from a temporary module in both
runtimes (real peer processes, real gRPC), through the CLI so that the module comes from PYTHONPATH
or from the directory the user launched from. (Every rule in a Flower federation in-process:
tests/unit/test_flower_inprocess.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fedgossip.launcher.supervision.processes import child_env
from fedgossip.strategies.registry import RULES
from tests.support import INPROCESS, INPROCESS_NODES, INPROCESS_ROUNDS, REPO, cli_argv, metrics

NODES, ROUNDS = INPROCESS_NODES, INPROCESS_ROUNDS
GOSSIP = [
    f"nodes.count={NODES}",
    f"experiment.rounds={ROUNDS}",
    "topology.kind=complete",  # every node hears 3 others: krum's n = 4 > 2f + 2 with f = 0
    "task.model=linear",
]
FLOWER = INPROCESS

USER_RULES = '''
import json

import numpy as np


def recording(own, received, weights, *, calls, scale=1.0):
    """The plain mean of own (if any) and received; appends one JSON line per call to `calls`."""
    with open(calls, "a") as sink:
        sink.write(json.dumps({"own": own is not None, "received": len(received),
                               "weights": weights, "scale": scale}) + "\\n")
    models = received if own is None else [own, *received]
    return [np.mean(np.stack(tensors), axis=0).astype(tensors[0].dtype) for tensors in zip(*models)]


def raising(own, received, weights):
    raise RuntimeError("the user rule broke")


def wrong_shape(own, received, weights):
    return [tensor.reshape(-1)[:1].copy() for tensor in received[0]]
'''


@pytest.fixture
def user_module(tmp_path) -> tuple[str, dict[str, str]]:
    """A module of user rules in a temporary folder, and the environment that can import it."""
    folder = tmp_path / "user_code"
    folder.mkdir()
    (folder / "my_rules.py").write_text(textwrap.dedent(USER_RULES))
    return "my_rules", child_env(1, {"PYTHONPATH": str(folder)})


def run(
    out: Path, settings: list[str], env: dict[str, str] | None = None, timeout: float = 200, code: int = 0
) -> dict:
    """`fedgossip run --out OUT --set ...` in a subprocess (expected exit status `code`); its summary.json."""
    result = subprocess.run(
        cli_argv("run", "--out", str(out), settings=settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or child_env(1),
        cwd=out.parent,
    )
    assert result.returncode == code, result.stdout + result.stderr
    return json.loads((out / "summary.json").read_text())


def assert_complete(out: Path, summary: dict) -> list[dict]:
    assert summary["status"] == "complete" and summary["errors"] == [], summary
    return assert_all_rounds(out, summary)


def assert_all_rounds(out: Path, summary: dict) -> list[dict]:
    """Every node recorded every round."""
    assert summary["rounds_completed"] == ROUNDS
    records = [r for r in metrics(out) if isinstance(r["node"], int)]
    assert {(r["node"], r["round"]) for r in records} == {
        (n, k) for n in range(NODES) for k in range(1, ROUNDS + 1)
    }
    return records


@pytest.mark.timeout(200)
@pytest.mark.parametrize("name", list(RULES))
def test_every_rule_runs_in_a_gossip_run(tmp_path, name):
    out = tmp_path / "run"
    summary = run(out, [*GOSSIP, f"strategy.name={name}", "launcher.engine=simulation"])
    assert_complete(out, summary)
    assert summary["final_mean_accuracy"] > 0.5
    assert f'name = "{name}"' in (out / "config.toml").read_text()


@pytest.mark.timeout(200)
def test_a_user_rule_is_called_every_merge_in_gossip_and_every_round_in_flower(tmp_path, user_module):
    module, env = user_module
    settings = [f"strategy.name={module}:recording", "strategy.params.scale=2.5"]
    for mode, base, calls_expected in (("gossip", GOSSIP, ROUNDS * NODES), ("flower", FLOWER, ROUNDS)):
        calls = tmp_path / f"calls-{mode}.jsonl"
        out = tmp_path / mode
        summary = run(out, [*base, *settings, f'strategy.params.calls="{calls}"'], env)
        assert_complete(out, summary)
        lines = [json.loads(line) for line in calls.read_text().splitlines()]
        assert len(lines) == calls_expected, mode
        assert all(line["scale"] == 2.5 for line in lines)
        assert all(line["own"] == (mode == "gossip") for line in lines)  # a Flower server has no own
        assert all(line["received"] == NODES - (mode == "gossip") for line in lines)
        assert all(w > 0 for line in lines for w in line["weights"])  # example counts


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("function", "reason"),
    [("raising", "RuntimeError: the user rule broke"), ("wrong_shape", "the result has shape (1,)")],
)
def test_a_failing_user_rule_leaves_the_run_going(tmp_path, user_module, function, reason):
    module, env = user_module
    name = f"{module}:{function}"
    out = tmp_path / "gossip"
    summary = run(out, [*GOSSIP, f"strategy.name={name}"], env, code=3)
    # every merge failed, so the run goes on to the end but says it is degraded (exit 3)
    assert summary["status"] == "degraded" and summary["errors"][0].startswith("degraded:"), summary
    assert_all_rounds(out, summary)
    for node in range(NODES):
        log = (out / "logs" / f"node-{node}.log").read_text()
        failures = [line for line in log.splitlines() if f"strategy '{name}' failed" in line]
        assert len(failures) == ROUNDS and all(reason in line for line in failures), log
        assert all("keeping the own model" in line for line in failures)

    out = tmp_path / "flower"
    records = assert_complete(out, run(out, [*FLOWER, f"strategy.name={name}"], env))
    server = [r for r in metrics(out) if r["node"] == "server"]
    # the global model never changes: every round evaluates the initial model again
    assert {r["test_accuracy"] for r in server} == {server[0]["test_accuracy"]}
    assert {r["test_accuracy"] for r in records} == {server[0]["test_accuracy"]}
    log = (out / "logs" / "inprocess.log").read_text()
    for round_ in range(1, ROUNDS + 1):
        assert f"strategy '{name}' failed in round {round_}: " in log, log
    assert reason in log and "keeping the previous global model" in log


USER_MODEL = """

def net(input_shape, num_classes):
    from torch import nn

    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), num_classes))
"""


@pytest.mark.timeout(250)
def test_a_user_rule_is_found_from_the_launch_directory_without_pythonpath(tmp_path):
    """`fedgossip run` (the console script, which does not search the working directory by
    itself) started in the folder holding the module, with no PYTHONPATH, in both runtimes; the
    Flower run also takes its model from there."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "mymod.py").write_text(textwrap.dedent(USER_RULES) + USER_MODEL)
    env = {k: v for k, v in child_env(1).items() if k != "PYTHONPATH"}
    script = str(Path(sys.executable).parent / "fedgossip")
    gossip = [*GOSSIP, "nodes.count=2"]
    flower = [*FLOWER, "task.model=mymod:net"]
    for mode, base, calls_expected in (("gossip", gossip, ROUNDS * 2), ("flower", flower, ROUNDS)):
        calls = tmp_path / f"calls-{mode}.jsonl"
        out = tmp_path / mode
        settings = [*base, "strategy.name=mymod:recording", f'strategy.params.calls="{calls}"']
        argv = [script, "run", "--out", str(out), *(arg for s in settings for arg in ("--set", s))]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=200, env=env, cwd=folder)
        assert result.returncode == 0, result.stdout + result.stderr
        assert json.loads((out / "summary.json").read_text())["status"] == "complete"
        assert len(calls.read_text().splitlines()) == calls_expected, mode


@pytest.mark.timeout(200)
def test_the_readmes_custom_rule_example_runs_from_the_repository_root(tmp_path):
    """README: "Run from the repository root: fedgossip run examples/custom/gossip.toml". With
    Opacus installed (the test extras, the privacy extra), an installed package named `examples`
    took `examples.custom.clipped_mean` away from the repository's `examples/` folder."""
    env = {k: v for k, v in child_env(1).items() if k != "PYTHONPATH"}
    script = str(Path(sys.executable).parent / "fedgossip")
    out = tmp_path / "custom"
    argv = [script, "run", "examples/custom/gossip.toml", "--out", str(out), "--set", "experiment.rounds=2"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=150, env=env, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["strategy"].endswith(":centred_clipping"), summary


def test_child_processes_import_from_the_launch_directory_and_a_relative_pythonpath(tmp_path, monkeypatch):
    """What Flower's processes (started in the results folder) rely on: the launcher's child
    environment carries the launch directory and PYTHONPATH's relative entries made absolute."""
    (tmp_path / "mymod.py").write_text("VALUE = 'launch directory'\n")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "mylib.py").write_text("VALUE = 'relative entry'\n")
    elsewhere = tmp_path / "results"
    elsewhere.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", "lib")
    code = "import mymod, mylib; print(mymod.VALUE, '/', mylib.VALUE)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(1),
        cwd=elsewhere,
    )
    assert result.stdout.strip() == "launch directory / relative entry", result.stderr
