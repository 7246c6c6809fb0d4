"""What `pip install .` installs, read from pyproject.toml without building a wheel: every package
folder of the source tree (a folder with an __init__.py) is listed, so the wheel is complete after
a restructure, and the tests are not, so they never ship with fedgossip."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.support import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SETUPTOOLS = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
PACKAGES: list[str] = SETUPTOOLS["packages"]
FOLDERS: dict[str, str] = SETUPTOOLS["package-dir"]  # fedgossip.X -> X, subpackages below it


def folder_of(package: str) -> Path:
    """The source folder setuptools takes `package` from: its nearest mapped parent's folder, then
    one folder per remaining part of the name."""
    parts = package.split(".")
    for cut in range(len(parts), 0, -1):
        parent = ".".join(parts[:cut])
        if parent in FOLDERS:
            return REPO / FOLDERS[parent] / Path(*parts[cut:])
    raise AssertionError(f"{package} has no folder in [tool.setuptools.package-dir]")


def package_folders() -> set[Path]:
    """Every folder with an __init__.py under the mapped source folders."""
    roots = [REPO / folder for folder in FOLDERS.values()]
    return {init.parent for root in roots for init in root.rglob("__init__.py")}


def test_no_test_package_is_installed():
    assert not [name for name in PACKAGES if "tests" in name.split(".")]
    assert not [name for name in FOLDERS if "tests" in name.split(".")]
    assert not [folder for folder in FOLDERS.values() if Path(folder).parts[0] == "tests"]


def test_every_package_folder_of_the_source_tree_is_installed():
    listed = {folder_of(name) for name in PACKAGES}
    missing = sorted(str(folder.relative_to(REPO)) for folder in package_folders() - listed)
    assert not missing, f"package folders missing from [tool.setuptools] packages: {missing}"


def test_every_listed_package_is_a_package_folder():
    stale = [name for name in PACKAGES if not (folder_of(name) / "__init__.py").is_file()]
    assert not stale, f"listed in [tool.setuptools] packages but not a package folder: {stale}"


def test_every_top_level_package_folder_but_the_tests_is_mapped():
    top = {init.parent.name for init in REPO.glob("*/__init__.py")} - {"tests"}
    assert top == set(FOLDERS.values())
