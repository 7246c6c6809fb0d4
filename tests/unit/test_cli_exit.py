"""The `fedgossip` command ends without the interpreter's teardown of its modules, yet as an
ordinary exit would: the same status, the exit handlers run, the output flushed; a non-daemon thread
still running is waited for."""

from __future__ import annotations

import subprocess
import sys

import pytest

ENDING = """
import atexit, sys, threading, time
from fedgossip.launcher.cli import _exit_without_teardown
atexit.register(lambda: print("exit handler ran"))
print("buffered output", end="")
if sys.argv[1] == "thread":
    threading.Thread(target=lambda: (time.sleep(0.5), print(" thread done", end=""))).start()
_exit_without_teardown(SystemExit(int(sys.argv[2]) if sys.argv[2].isdigit() else sys.argv[2]))
"""


def end(thread: str, code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", ENDING, thread, code], capture_output=True, text=True, timeout=60
    )


@pytest.mark.timeout(120)
def test_the_command_ends_with_its_status_its_exit_handlers_and_its_output():
    done = end("none", "3")
    assert (done.returncode, done.stdout) == (3, "buffered outputexit handler ran\n")
    named = end("none", "no such run")  # SystemExit("text"): the text on stderr, status 1
    assert (named.returncode, named.stderr.strip()) == (1, "no such run")
    waited = end("thread", "0")
    assert (waited.returncode, waited.stdout) == (0, "buffered output thread doneexit handler ran\n")
