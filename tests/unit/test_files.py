"""Atomic writes: a file is replaced whole, a failure in the middle (the disk fills while the new
text is written) leaves the old file intact and no temporary file, and the error names the file."""

from __future__ import annotations

import errno
import json
import os

import pytest

from fedgossip.base.files import write_atomic, write_json
from fedgossip.config import load_config
from fedgossip.launcher.runs.results import ResultsFolder


def full_disk(*_args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_file_is_replaced_whole(tmp_path):
    path = tmp_path / "sweep.json"
    write_json(path, {"runs": [1]})
    write_json(path, {"runs": [1, 2]})
    assert json.loads(path.read_text()) == {"runs": [1, 2]}
    assert os.listdir(tmp_path) == ["sweep.json"]


def test_a_failure_in_the_middle_keeps_the_old_file_and_names_it(tmp_path, monkeypatch):
    path = tmp_path / "sweep.json"
    write_json(path, {"runs": ["old"]})
    monkeypatch.setattr(os, "fsync", full_disk)  # after the new text went to the temporary file
    with pytest.raises(OSError) as raised:
        write_json(path, {"runs": ["new"] * 1000})
    assert (raised.value.errno, raised.value.filename) == (errno.ENOSPC, str(path))
    assert json.loads(path.read_text()) == {"runs": ["old"]}
    assert os.listdir(tmp_path) == ["sweep.json"]  # the temporary file is gone


def test_a_missing_folder_is_an_error_naming_the_file(tmp_path):
    with pytest.raises(FileNotFoundError) as raised:
        write_atomic(tmp_path / "missing" / "summary.json", "{}")
    assert raised.value.filename == str(tmp_path / "missing" / "summary.json")


def test_a_results_folder_keeps_its_json_file_when_a_rewrite_fails(tmp_path, monkeypatch):
    folder = ResultsFolder(tmp_path / "run", load_config())
    folder.write_processes({"node-0": 10})
    monkeypatch.setattr(os, "fsync", full_disk)
    folder.write_processes({"node-0": 10, "node-1": 11})
    monkeypatch.undo()
    folder.close()
    assert json.loads((folder.path / "processes.json").read_text()) == {"node-0": 10}
    assert folder.warnings == [f"could not write {folder.path / 'processes.json'}: No space left on device"]
