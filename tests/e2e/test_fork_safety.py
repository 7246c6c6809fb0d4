"""Children forked while gRPC calls run in other threads reach their exec: the launcher package
turns gRPC's fork handlers off (grpc/grpc#43055 aborted about 1 in 100 such children here,
Ray's raylet once in CI among them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedgossip.launcher.supervision.processes import child_env

pytestmark = pytest.mark.timeout(120)

SETTING = "GRPC_ENABLE_FORK_SUPPORT"


def python_out(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=100)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_600_children_forked_beside_live_grpc_calls_all_reach_their_exec() -> None:
    env = {name: value for name, value in child_env().items() if name != SETTING}  # as a user's shell
    out = python_out(str(Path(__file__).with_name("fork_beside_grpc.py")), "600", env=env)
    assert out.endswith("died before exec: 0 of 600"), out


def test_the_setting_reaches_every_child_and_a_users_own_value_is_kept() -> None:
    assert os.environ[SETTING] == "false"
    assert child_env()[SETTING] == "false"
    env = {**child_env(), SETTING: "1"}
    read = "import fedgossip.launcher, os; print(os.environ['GRPC_ENABLE_FORK_SUPPORT'])"
    assert python_out("-c", read, env=env) == "1"
