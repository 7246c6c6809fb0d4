"""The launcher's own Flower commands lean on flwr 1.42's internals (flwr is pinned): these tests
fail when a symbol they patch or skip moves, so a flwr upgrade cannot silently bring the waits
and imports back (launcher/flower/supernode_process.py, clientapp_process.py, files.py)."""

from __future__ import annotations

import inspect
import subprocess
import sys
import time

import pytest

from fedgossip.config import load_config
from fedgossip.launcher.flower import clientapp_process, supernode_process
from fedgossip.launcher.flower.files import SUPEREXEC_POLL_S, flower_env, prepare


def test_the_supernodes_idle_and_reply_waits_are_the_sleeps_of_its_module_time():
    from flwr.supernode import start_client_internal

    assert start_client_internal.time is time  # what supernode_process replaces
    source = inspect.getsource(start_client_internal)
    assert "time.sleep(3)" in source and "time.sleep(0.5)" in source
    assert "from time import" not in source and "from time import sleep" not in source


def test_the_supernode_sleeps_at_most_the_idle_poll(monkeypatch):
    slept = []
    monkeypatch.setattr(time, "sleep", slept.append)
    for seconds in (3, 0.5, 0.1):
        supernode_process._sleep(seconds)
    assert slept == [supernode_process.IDLE_POLL_S, supernode_process.IDLE_POLL_S, 0.1]


def test_superexec_reads_its_task_poll_interval_from_the_launchers_environment(tmp_path, monkeypatch):
    from flwr.supercore.superexec import run_superexec

    name = run_superexec._TASK_POLL_INTERVAL_ENV
    monkeypatch.setenv(name, flower_env(tmp_path, 1)[name])
    assert run_superexec._get_task_poll_interval() == float(SUPEREXEC_POLL_S) < 1.0


def test_flwrs_clientapp_command_imports_the_supernode_and_ours_does_not():
    probe = (
        "import sys\n"
        "{prepare}"
        "from flwr.supernode.cli.flwr_clientapp import flwr_clientapp\n"
        "print('flwr.supernode.start_client_internal' in sys.modules, 'sqlalchemy' in sys.modules)\n"
    )
    module = clientapp_process.__name__
    skip = f"from {module} import PACKAGE, without_package_init\nwithout_package_init(PACKAGE)\n"
    theirs, ours = (
        subprocess.run([sys.executable, "-c", probe.format(prepare=prepared)], capture_output=True, text=True)
        for prepared in ("", skip)
    )
    assert theirs.stdout.split() == ["True", "True"], theirs.stderr  # the imports ours saves
    assert ours.stdout.split() == ["False", "False"], ours.stderr


def test_a_runs_clientapp_command_is_found_first_and_runs_flwrs_clientapp(tmp_path):
    files = prepare(load_config(None, []), tmp_path / "flower", 0.0)
    env = flower_env(files.home, 1, files.bin)
    done = subprocess.run(["flwr-clientapp", "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: flwr-clientapp ") and "--runtime-api-address" in done.stdout


def test_without_package_init_refuses_a_module():
    with pytest.raises(ImportError, match="is not a package"):
        clientapp_process.without_package_init("json.decoder")
