"""`base.loading.load_callable`: a reference whose top-level package is a folder of the working
directory or of a PYTHONPATH entry is imported from there even when an installed package has the
same name (Opacus installs `examples`), and an import that fails says where the package came from."""

from __future__ import annotations

import os
import sys

import pytest

from fedgossip.base.loading import load_callable

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def shadowed(tmp_path, monkeypatch):
    """An installed regular package `shadowpkg` (no `rules` in it) first on the path, and a working
    directory whose folder `shadowpkg/` (no __init__.py) holds `rules.py`."""
    site = tmp_path / "site"
    (site / "shadowpkg").mkdir(parents=True)
    (site / "shadowpkg" / "__init__.py").write_text("WHERE = 'installed'\n")
    work = tmp_path / "work"
    (work / "shadowpkg").mkdir(parents=True)
    (work / "shadowpkg" / "rules.py").write_text("def rule():\n    return 'from the working directory'\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.chdir(work)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    yield work
    for name in [n for n in sys.modules if n == "shadowpkg" or n.startswith("shadowpkg.")]:
        del sys.modules[name]


def test_a_folder_of_the_working_directory_wins_over_an_installed_package_of_its_name(shadowed):
    assert load_callable("shadowpkg.rules:rule")() == "from the working directory"
    assert list(sys.modules["shadowpkg"].__path__) == [str(shadowed / "shadowpkg")]


def test_a_folder_of_a_pythonpath_entry_wins_too_in_a_process_that_runs_elsewhere(
    shadowed, tmp_path, monkeypatch
):
    elsewhere = tmp_path / "results"  # Flower's processes run in the results folder
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("PYTHONPATH", str(shadowed))  # the launch directory (processes.import_path)
    assert load_callable("shadowpkg.rules:rule")() == "from the working directory"


def test_pythonpath_entries_inside_the_interpreters_installation_are_not_the_users(
    shadowed, tmp_path, monkeypatch
):
    """Flower's simulation process puts its whole sys.path, site-packages included, in PYTHONPATH
    before the launch directory: the installed package must not win from there."""
    prefix = tmp_path / "venv"
    (prefix / "site" / "shadowpkg").mkdir(parents=True)
    (prefix / "site" / "shadowpkg" / "__init__.py").write_text("WHERE = 'installed'\n")
    monkeypatch.setattr(sys, "prefix", str(prefix))
    elsewhere = tmp_path / "results"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(prefix / "site"), str(shadowed)]))
    assert load_callable("shadowpkg.rules:rule")() == "from the working directory"


def test_a_package_imported_before_is_kept_and_the_error_says_where_it_came_from(shadowed):
    import shadowpkg  # the installed one, imported by someone before the reference is loaded

    assert shadowpkg.WHERE == "installed"
    with pytest.raises(ValueError, match=r"its package was imported from .*site.shadowpkg.__init__\.py"):
        load_callable("shadowpkg.rules:rule")
    assert sys.modules["shadowpkg"] is shadowpkg


def test_a_working_directory_package_that_fails_to_import_leaves_nothing_half_made(shadowed):
    (shadowed / "brokenpkg").mkdir()
    (shadowed / "brokenpkg" / "__init__.py").write_text("raise RuntimeError('broken on import')\n")
    with pytest.raises(ValueError, match="RuntimeError: broken on import"):
        load_callable("brokenpkg.rules:rule")
    assert "brokenpkg" not in sys.modules
