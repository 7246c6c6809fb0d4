"""The one loader of `package.module:attribute` references: a user's strategy, model factory or
mechanism part, and our own registered parts named the same way.

A console script does not search the working directory, so it is added to `sys.path` (after
everything else) before the first import: a user's module next to their config is found. A
reference whose top-level package is a folder of the user's own places (the working directory,
then PYTHONPATH's entries, where the launcher puts the launch directory for processes that run
elsewhere) is imported from there even when an installed package has the same name (Opacus
installs a package `examples`, which took `examples.custom.clipped_mean` away from the
repository's own `examples/` folder).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import re
import sys
import traceback
from collections.abc import Callable
from typing import Any

REFERENCE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
"""``package.module:attribute``."""

_IMPORT_SYSTEM = os.path.dirname(importlib.__file__)


def is_reference(text: object) -> bool:
    """True if `text` is a string of the form ``package.module:attribute``."""
    return isinstance(text, str) and REFERENCE.fullmatch(text) is not None


def load_callable(reference: str) -> Callable[..., Any]:
    """The callable named by `reference` (``package.module:attribute``).

    Raises
    ------
    ValueError
        When the module cannot be imported (any error while importing it, described with the
        innermost frame of the user's code), or has no such attribute, or it is not callable.
    """
    module_name, _, attribute = reference.partition(":")
    top_name = module_name.partition(".")[0]
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        _prefer_users_places(top_name)
        module = importlib.import_module(module_name)
    except Exception as err:  # a user's module may fail in any way while importing
        top = sys.modules.get(top_name)
        origin = f"; its package was imported from {_location(top)}" if top is not None else ""
        raise ValueError(
            f"cannot import module {module_name!r} ({describe_error(err)}); "
            f"it must be importable from the working directory or PYTHONPATH{origin}"
        ) from None
    found = getattr(module, attribute, None)
    if found is None:
        raise ValueError(f"module {module_name!r} has no attribute {attribute!r}")
    if not callable(found):
        raise ValueError(f"{attribute!r} is not callable (module {module_name!r})")
    return found


def _prefer_users_places(top: str) -> None:
    """Import the top-level package `top` from the user's own places (`_users_places`) if it is
    a folder (or module) there and not imported yet: before an installed package of the same
    name, which a folder without __init__.py (a namespace package) would otherwise lose to
    wherever it is on the path."""
    if top in sys.modules:
        return
    local = importlib.machinery.PathFinder.find_spec(top, _users_places())
    if local is None:
        return
    module = importlib.util.module_from_spec(local)
    sys.modules[top] = module
    try:
        if local.loader is not None:
            local.loader.exec_module(module)
    except BaseException:
        del sys.modules[top]
        raise


def _users_places() -> list[str]:
    """The working directory, then PYTHONPATH's entries outside the interpreter's installation
    (a process may carry its whole sys.path in PYTHONPATH, site-packages included, as Flower's
    simulation process does for Ray's workers)."""
    installed = {os.path.realpath(root) for root in (sys.prefix, sys.base_prefix, sys.exec_prefix)}

    def users(path: str) -> bool:
        real = os.path.realpath(path)
        return not any(real == root or real.startswith(root + os.sep) for root in installed)

    pythonpath = [
        os.path.abspath(entry) for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry
    ]
    return [os.getcwd(), *(entry for entry in pythonpath if users(entry))]


def _location(module: object) -> str:
    """Where a module was imported from: its file, or its package's folders."""
    file = getattr(module, "__file__", None)
    return file or ", ".join(getattr(module, "__path__", [])) or "an unknown place"


def describe_error(err: BaseException, skip: tuple[str, ...] = ()) -> str:
    """``Type: message (at file:line in function)``: the innermost frame outside the import
    machinery, this module and the files `skip` (the caller's own)."""
    frames = [
        frame
        for frame in traceback.extract_tb(err.__traceback__)
        if not frame.filename.startswith(("<frozen", _IMPORT_SYSTEM))
        and frame.filename not in (__file__, *skip)
    ]
    where = f" (at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
    return f"{type(err).__name__}: {err}{where}"
