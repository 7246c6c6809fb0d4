"""Bad input is a clear error (exit 2, or the documented status), never a traceback.

Most cases fail before any node starts, so they run through the real CLI in a second or two.
File-system failures use what really fails for root (chmod does not stop root): a path under a
regular file, /sys, a file-size limit (RLIMIT_FSIZE: EFBIG) and, where the sandbox allows mount
namespaces, a read-only or full tmpfs mounted in a private namespace (`unshare -m`), which
vanishes with the process.
"""

from __future__ import annotations

import errno
import json
import resource
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from fedgossip.config import load_config
from fedgossip.launcher.supervision.memory import available_mib, estimate
from fedgossip.launcher.supervision.processes import child_env
from fedgossip.reports import read_records
from tests.support import cli_argv, run_cli

FAST_RUN = ("task.model=linear", "topology.kind=ring", "nodes.count=2")
BAD_TOPOLOGY = ("topology.kind=regular", "topology.degree=3", "nodes.count=5")  # n * d odd


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Rich wraps at 80 columns when not on a terminal; messages are checked on one line."""
    monkeypatch.setenv("COLUMNS", "1000")


def sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def assert_clear(result: subprocess.CompletedProcess, *fragments: str, code: int = 2) -> str:
    """The run exited with `code`, printed every fragment and no traceback; returns the output."""
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert "Traceback" not in output, output
    for fragment in fragments:
        assert fragment in output, output
    return output


def peers_alive(pids: typing.Iterable[int]) -> list[int]:
    """The PIDs that still run a gossip peer."""
    alive = []
    for pid in pids:
        try:
            if b"fedgossip.client.gossip.peer" in Path(f"/proc/{pid}/cmdline").read_bytes():
                alive.append(pid)
        except OSError:
            pass
    return alive


# --- the config file ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d: d, "Is a directory"),
        (lambda d: d / "missing.toml", "config file not found"),
        (lambda d: _write(d / "latin1.toml", b'[experiment]\nname = "caf\xe9"\n'), "is not UTF-8 text"),
        (lambda d: _write(d / "broken.toml", b"[experiment\n"), "is not valid TOML"),
        (lambda d: Path("/dev/zero"), "is larger than 1 MiB"),
    ],
    ids=["directory", "missing", "not-utf8", "not-toml", "endless"],
)
def test_a_bad_config_file_is_a_clear_error(tmp_path, make, reason):
    path = make(tmp_path)
    assert_clear(run_cli("run", str(path), "--out", str(tmp_path / "out")), "error: ", str(path), reason)
    assert not (tmp_path / "out").exists()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- the results folder ------------------------------------------------------------------------


def test_out_under_a_regular_file_or_on_a_file(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    assert_clear(
        run_cli("run", "--out", str(afile / "run")),
        f"error: cannot write the results folder {afile / 'run'}: {afile / 'run' / 'logs'}: Not a directory",
    )
    assert_clear(
        run_cli("run", "--out", str(afile)),
        f"error: cannot write the results folder {afile}: it is a file, not a folder",
    )
    assert afile.read_text() == "not a folder"


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux sysfs")
def test_out_where_the_kernel_refuses_a_folder():
    result = run_cli("run", "--out", "/sys/fedgossip-run")
    assert_clear(result, "error: cannot write the results folder /sys/fedgossip-run: Operation not permitted")


@pytest.fixture(scope="session")
def mount_namespace(tmp_path_factory) -> Path:
    """A mount point for tmpfs mounts made in a private mount namespace (skip where impossible)."""
    point = tmp_path_factory.mktemp("mnt")
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", 'mount -t tmpfs -o size=4k tmpfs "$0"', str(point)],
        capture_output=True,
        timeout=30,
    )
    if probe.returncode != 0:
        pytest.skip(f"no mount namespaces here: {probe.stderr.decode(errors='replace').strip()}")
    return point


INSPECT = """
import json, subprocess, sys, pathlib
result = subprocess.run(sys.argv[2:], capture_output=True, text=True, timeout=150)
run = pathlib.Path(sys.argv[1])
read = lambda name: (run / name).read_text() if (run / name).is_file() else None
print(json.dumps({"code": result.returncode, "stdout": result.stdout, "stderr": result.stderr,
                  "files": sorted(p.name for p in run.parent.iterdir()), "run": run.is_dir(),
                  "metrics": read("metrics.jsonl"), "processes": read("processes.json")}))
"""


def in_tmpfs(
    point: Path, options: str, *cli: str, fill: bool = False
) -> tuple[subprocess.CompletedProcess, dict]:
    """Run `fedgossip CLI --out POINT/run` with a fresh tmpfs (mount `options`) at `point`, in a
    private mount namespace; return its result and what the namespace's tmpfs held afterwards."""
    filler = 'head -c 1048576 /dev/zero > "$0/filler" 2>/dev/null; ' if fill else ""
    script = f'mount -t tmpfs -o {options} tmpfs "$0" || exit 77; {filler}exec "$@"'
    argv = [sys.executable, "-c", INSPECT, str(point / "run"), *cli_argv(*cli, "--out", str(point / "run"))]
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, str(point), *argv],
        capture_output=True,
        text=True,
        timeout=170,
        env=child_env(1),
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    return subprocess.CompletedProcess(cli, seen["code"], seen["stdout"], seen["stderr"]), seen


def test_out_on_a_read_only_file_system(mount_namespace):
    result, _ = in_tmpfs(mount_namespace, "ro", "run")
    run = mount_namespace / "run"
    assert_clear(result, f"error: cannot write the results folder {run}: Read-only file system")


def test_out_on_a_full_file_system_leaves_nothing(mount_namespace):
    result, seen = in_tmpfs(mount_namespace, "size=8k", "run", fill=True)
    run = mount_namespace / "run"
    assert_clear(result, f"error: cannot write the results folder {run}: No space left on device")
    assert seen["files"] == ["filler"] and not seen["run"]


@pytest.mark.timeout(200)
def test_a_disk_that_fills_mid_run_fails_cleanly_with_whole_lines(mount_namespace):
    result, seen = in_tmpfs(mount_namespace, "size=48k", "run", *sets(*FAST_RUN, "experiment.rounds=400"))
    assert_clear(result, "failed: disk full (No space left on device writing metrics.jsonl)", code=1)
    assert "status         │ failed" in seen["stdout"]
    text = seen["metrics"]
    assert text and text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]  # every line whole
    assert 0 < len(records) < 2 * 400
    assert peers_alive(json.loads(seen["processes"]).values()) == []


# --- a disk full seen through a file-size limit (works everywhere, no mounts) -----------------


def _limit_file_size(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.timeout(200)
def test_file_size_limit_mid_run_stops_the_run_failed(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        cli_argv("run", "--out", str(out), *sets(*FAST_RUN, "experiment.rounds=400")),
        capture_output=True,
        text=True,
        timeout=180,
        env=child_env(1),
        preexec_fn=_limit_file_size(6000),
    )
    output = assert_clear(result, "failed: disk full (File too large writing metrics.jsonl)", code=1)
    assert "could not write" in output and "accuracy.png: File too large" in output
    text = (out / "metrics.jsonl").read_text()
    assert text.endswith("\n") and len(text) <= 6000
    records = [json.loads(line) for line in text.splitlines()]
    assert len(records) < 2 * 400 and len(read_records(out)) == len(records)
    assert not (out / "accuracy.png").exists()  # the partial plot was removed
    assert peers_alive(json.loads((out / "processes.json").read_text()).values()) == []


APPEND_UNDER_LIMIT = """
import json, resource, sys
from fedgossip.config import load_config
from fedgossip.launcher.runs.results import ResultsFolder, ResultsWriteError
folder = ResultsFolder(sys.argv[1], load_config())
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
written = 0
try:
    for i in range(1000):
        folder.append({"node": i, "round": 1, "pad": "x" * 37})
        written += 1
except ResultsWriteError as err:
    folder.append({"node": "after"})  # dropped: the run is stopping
    print(json.dumps({"written": written, "errno": err.errno, "failure": folder.failure}))
"""


def test_append_cut_off_by_the_disk_keeps_only_whole_lines(tmp_path):
    limit = 1000
    done = subprocess.run(
        [sys.executable, "-c", APPEND_UNDER_LIMIT, str(tmp_path / "run"), str(limit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    lines = [json.dumps({"node": i, "round": 1, "pad": "x" * 37}) + "\n" for i in range(1000)]
    whole = next(n for n in range(1000) if sum(map(len, lines[: n + 1])) > limit)  # the line cut
    assert report == {
        "written": whole,
        "errno": errno.EFBIG,
        "failure": "failed: disk full (File too large writing metrics.jsonl)",
    }
    data = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert data == "".join(lines[:whole])  # the part-written line was cut back; nothing after it
    assert len(data) < limit


def test_infinite_round_timeout_through_the_cli(tmp_path):
    out = tmp_path / "out"
    result = run_cli("run", "--out", str(out), *sets("experiment.round_timeout=inf"))
    assert_clear(result, "error: experiment.round_timeout must be a finite number; got inf")
    assert not out.exists()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            ("strategy.name=krum", "strategy.params.f=1", "topology.kind=ring", "nodes.count=6"),
            "error: strategy 'krum' with params {'f': 1} needs 5 models per merge; a gossip peer merges "
            "its own model and its neighbours' (degree + 1), and the smallest degree of topology 'ring' "
            "on 6 nodes is 2 (node 0): 3 models; the largest f allowed is 0",
        ),
        (  # a star's leaves have one neighbour: two models, too few for krum whatever f
            ("strategy.name=multi-krum", "topology.kind=star", "nodes.count=5"),
            "smallest degree of topology 'star' on 5 nodes is 1 (node 1): 2 models; no value of f allows",
        ),
        (
            (
                'experiment.mode="flower"',
                'flower.engine="inprocess"',
                "strategy.name=krum",
                "strategy.params.f=2",
            ),
            "error: strategy 'krum' with params {'f': 2} needs 7 models per round; nodes.count = 4 and "
            "flower.fraction_train = 1.0 give 4; the largest f allowed is 0",
        ),
        (
            (
                'experiment.mode="flower"',
                "strategy.name=krum",
                "strategy.params.f=1",
                "nodes.count=10",
                "flower.fraction_train=0.3",
            ),
            "needs 5 models per round; nodes.count = 10 and flower.fraction_train = 0.3 give 3",
        ),
    ],
    ids=["gossip-ring", "gossip-star", "flower-all-nodes", "flower-fraction"],
)
def test_krum_f_too_large_for_the_models_per_aggregation_is_a_launch_error(tmp_path, settings, message):
    out = tmp_path / "out"
    settings = ("task.model=linear", "nodes.count=4", *settings)
    assert_clear(run_cli("run", "--out", str(out), *sets(*settings)), message)
    assert not out.exists()  # nothing started


def test_path_like_name_through_the_cli_fails_before_anything_runs(tmp_path):
    result = subprocess.run(
        cli_argv("run", *sets('experiment.name="../../x"')),
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(1),
        cwd=tmp_path,
    )
    assert_clear(result, "error: experiment.name must be a plain file name")
    assert list(tmp_path.iterdir()) == []


def test_too_many_nodes_through_the_cli_start_nothing(tmp_path):
    config = load_config(None, ["nodes.count=500", "launcher.fork_server=false"])
    available = available_mib()
    if available is None or estimate(config).total_mib <= available:
        pytest.skip("this machine has room for 500 MLP peers")
    out = tmp_path / "out"
    result = run_cli("run", "--out", str(out), *sets("nodes.count=500", "launcher.fork_server=false"))
    assert_clear(result, "error: nodes.count = 500 needs about 90.4 GiB of memory", "GiB available")
    assert not out.exists()


# --- console markup -------------------------------------------------------------------------


def test_brackets_in_messages_are_shown_literally(tmp_path):
    result = run_cli("run", "--out", str(tmp_path / "o"), *sets("experiment.mode=[bogus]"))
    assert_clear(result, "error: experiment.mode must be one of gossip, flower; got '[bogus]'")
    result = run_cli("run", "--out", str(tmp_path / "[o]"), *sets("experiment.name=[bogus]", *BAD_TOPOLOGY))
    assert_clear(result, "[bogus]: gossip mode, 5 nodes", f"-> {tmp_path / '[o]'}", "error: topology.degree")
    missing = tmp_path / "[red]run[/]"
    assert_clear(run_cli("compare", str(missing)), f"error: {missing} is not a results folder")


# --- nothing left behind ----------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_a_failed_topology_leaves_nothing_and_the_rerun_succeeds(tmp_path):
    out = tmp_path / "a" / "b" / "run"
    result = run_cli("run", "--out", str(out), *sets(*BAD_TOPOLOGY))
    assert_clear(result, "error: topology.degree = 3: a random regular graph on 5 nodes needs degree < nodes")
    assert list(tmp_path.iterdir()) == []  # the run, and the folders made for it, are gone
    rerun = run_cli("run", "--out", str(out), *sets(*FAST_RUN, "experiment.rounds=2"))
    assert_clear(rerun, "status         │ complete", code=0)
    assert sorted((r["node"], r["round"]) for r in read_records(out)) == [(0, 1), (0, 2), (1, 1), (1, 2)]


def test_a_folder_that_existed_is_kept_with_what_it_held(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert_clear(run_cli("run", "--out", str(out), *sets(*BAD_TOPOLOGY)), "error: topology.degree")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
