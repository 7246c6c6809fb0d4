"""Byte-compile a code tree as `pip install` does for an installed package, before it is measured.

A wheel's modules are compiled at install (the README's commands install `.`), so a user's
processes load fedgossip from .pyc files. An editable checkout run with PYTHONDONTWRITEBYTECODE=1
(set on some machines, CI sandboxes among them) has none and recompiles every module it imports in
every process: 0.4 CPU-s of the quickstart's 4.2 (launcher, fork server, peers). The benchmarks
compile the trees they time (this one and a `--before`/`--baseline` tree) so that they measure what
an installed package costs, the same for both sides.
"""

from __future__ import annotations

import compileall
import os
from pathlib import Path

SKIP = {".venv", ".git", "build", "dist", "tests", "__pycache__", "node_modules"}


def compile_trees(*roots: Path | None) -> None:
    """Write the .pyc of every module under each of `roots` given (None: skipped), in __pycache__
    as the interpreter would, not descending into virtual environments, git's folder, build
    outputs and the tests."""
    for root in filter(None, roots):
        for folder, subfolders, files in os.walk(root):
            subfolders[:] = [name for name in subfolders if name not in SKIP and not name.startswith(".")]
            for name in files:
                path = os.path.join(folder, name)
                if name.endswith(".py") and not compileall.compile_file(path, quiet=1):
                    raise RuntimeError(f"{path} does not compile")
