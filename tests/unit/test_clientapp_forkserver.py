"""The ClientApp fork server of a launcher's SuperNode and the run's `flwr-clientapp` shim
(launcher/flower/clientapp_forkserver.py, clientapp_shim.py), real processes: the shim hands its
arguments, environment, working directory and stdout/stderr to a forked child that runs flwr's
ClientApp command, relays signals and exits as the child did; with no fork server it execs the
plain command; the fork server dies with the launcher that started it, and a child with its shim."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from fedgossip.base.ports import LOOPBACK, free_ports
from fedgossip.config import load_config
from fedgossip.launcher.flower import clientapp_shim
from fedgossip.launcher.flower.clientapp_forkserver import CLIENTAPP_PARTS, clientapp_preload
from fedgossip.launcher.supervision.processes import child_env
from fedgossip.tasks.registry import model_entry

SHIM = [sys.executable, "-S", str(Path(clientapp_shim.__file__).resolve())]
STARTER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from fedgossip.launcher.flower.clientapp_forkserver import CLIENTAPP_PARTS, serving
    from fedgossip.launcher.flower.clientapp_shim import ADDRESS_ENV
    from fedgossip.launcher.supervision.forkserver_process import Preload
    from fedgossip.launcher.supervision.processes import child_env
    with serving(Preload((CLIENTAPP_PARTS[0],)), [], Path(sys.argv[1]), child_env(1)) as forks:
        print(forks[ADDRESS_ENV], flush=True)
        time.sleep(120)
    """
)


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def imported(stderr: str) -> set[str]:
    """The modules a process imported, from its PYTHONPROFILEIMPORTTIME lines."""
    names = {
        line.split("|")[-1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    return names - {"imported package"}


def shim(args: list[str], env: dict[str, str], cwd: Path, **kwargs) -> subprocess.Popen:
    env = {**env, "PYTHONPROFILEIMPORTTIME": "1"}
    return subprocess.Popen([*SHIM, *args], env=env, cwd=cwd, text=True, **kwargs)


@pytest.mark.timeout(90)
def test_the_shim_runs_the_clientapp_as_a_fork_server_child_and_the_server_dies_with_the_launcher(tmp_path):
    env = child_env(1)
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER, str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    started: list[subprocess.Popen] = [starter]
    try:
        env[clientapp_shim.ADDRESS_ENV] = starter.stdout.readline().strip()
        server = wait_for(lambda: psutil.Process(starter.pid).children(), 30, "the fork server")[0]
        address = env[clientapp_shim.ADDRESS_ENV]
        wait_for(lambda: clientapp_shim.connect(address), 60, "the fork server to listen").close()

        # arguments and stdout; the shim imported the standard library only (no fallback)
        done = shim(["--help"], env, tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        started.append(done)
        out, err = done.communicate(timeout=30)
        assert done.returncode == 0, err
        assert out.startswith("usage: flwr-clientapp ")
        assert imported(err) and {m.split(".")[0] for m in imported(err)} <= sys.stdlib_module_names

        # environment (HOME), working directory and stderr: flwr reads the token file they locate
        (tmp_path / "token").write_text("")
        for args, home, cwd in (
            (["--token-file", "~/token"], tmp_path, "/"),
            (["--token-file", "token"], "/", tmp_path),
        ):
            done = shim(args, {**env, "HOME": str(home)}, Path(cwd), stderr=subprocess.PIPE)
            started.append(done)
            _, err = done.communicate(timeout=30)
            assert done.returncode == 1 and "`--token-file` does not contain a token" in err, err

        # a relayed SIGTERM: flwr's graceful exit (0); the child ran in the shim's directory
        port = free_ports(1, LOOPBACK)[0]  # nobody listens: flwr retries until stopped
        runtime = ["--token", "t", "--insecure", "--runtime-api-address", f"{LOOPBACK}:{port}"]
        log = tmp_path / "clientapp.log"
        with open(log, "w") as stderr:
            done = shim(runtime, env, tmp_path, stderr=stderr)
        started.append(done)
        wait_for(lambda: "Connection attempt failed" in log.read_text(), 30, "the ClientApp to run")
        (child,) = server.children()
        assert child.name() == "flwr-clientapp" and child.cwd() == str(tmp_path)
        done.send_signal(signal.SIGTERM)
        assert done.wait(30) == 0 and "Task stopped." in log.read_text()
        assert not child.is_running()

        # a child killed: the shim dies of the same signal; a shim killed: its child is stopped
        for victim in ("child", "shim"):
            done = shim(runtime, env, tmp_path, stderr=subprocess.DEVNULL)
            started.append(done)
            (child,) = wait_for(server.children, 30, "the child")
            if victim == "child":
                child.kill()
                assert done.wait(30) == -signal.SIGKILL
            else:
                done.kill()
                assert not psutil.wait_procs([child], timeout=30)[1], "the child outlived its shim"

        # the starter (the launcher) killed: its fork server ends, its socket and folder removed
        starter.kill()
        server.wait(30)
        assert not Path(address).parent.exists()
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait(10)


@pytest.mark.timeout(60)
def test_without_a_fork_server_the_shim_execs_the_plain_clientapp_command(tmp_path):
    env = {**child_env(1), clientapp_shim.ADDRESS_ENV: f"fedgossip-nobody-{os.getpid()}"}
    done = shim(["--help"], env, tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = done.communicate(timeout=50)
    finally:
        if done.poll() is None:
            done.kill()
    assert done.returncode == 0 and out.startswith("usage: flwr-clientapp ")
    assert "flwr.supernode.cli.flwr_clientapp" in imported(err)  # the fallback imported it


@pytest.mark.timeout(30)
def test_the_fork_server_preloads_the_clientapp_and_torch_only_for_a_model_that_needs_it():
    def modules(model: str) -> tuple[str, ...]:
        config = load_config(None, ["experiment.mode=flower", "task.dataset=digits", f"task.model={model}"])
        return clientapp_preload(config).modules

    for model in ("linear", "mlp"):
        assert set(CLIENTAPP_PARTS) <= set(modules(model))
        assert set(model_entry(model).family.preload) <= set(modules(model))
    assert not [m for m in modules("linear") if "torch" in m]
    assert [m for m in modules("mlp") if "torch" in m]


BUILD_AFTER_PRELOAD = textwrap.dedent(
    """
    import sys
    from fedgossip.config import load_config
    from fedgossip.launcher.flower import clientapp_process
    from fedgossip.launcher.flower.clientapp_forkserver import clientapp_preload
    from fedgossip.launcher.supervision.forkserver_process import load
    config = load_config(None, ["experiment.mode=flower", "task.dataset=digits", "task.model=mlp"])
    clientapp_process.without_package_init(clientapp_process.PACKAGE)
    load(clientapp_preload(config))
    before = set(sys.modules)
    import httpx
    from fedgossip.client import flower_app
    httpx.Client().close()  # as the ClientApp's connection to its SuperNode
    flower_app._build(config, 0, None)  # a train or evaluate message's learner
    print(sorted(set(sys.modules) - before))
    """
)


@pytest.mark.timeout(60)
def test_a_clientapp_message_imports_nothing_the_fork_server_did_not_preload():
    """What a forked ClientApp imports it pays at every message (httpcore: 20-100 ms under load):
    its HTTP client and its learner's build import no module after the fork server's preload."""
    done = subprocess.run(
        [sys.executable, "-c", BUILD_AFTER_PRELOAD],
        capture_output=True,
        text=True,
        timeout=50,
        env=child_env(1),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
