"""The model registry: every torch model is a factory named by `package.module:function`.

Ours are registered here by name and resolved through the same import path as a user's
`task.model = "package.module:function"`. A factory is called as

    factory(input_shape: tuple[int, ...], num_classes: int, **options) -> torch.nn.Module

where input_shape is one example's shape ((features,) for tabular data, (channels, height,
width) for images) and options are the TaskConfig fields the registry lists for it (none for a
user's factory). This module imports no torch; the factory's module is imported when a learner
is built.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass

_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


@dataclass(frozen=True)
class ModelEntry:
    """A registered factory: its import path and the TaskConfig fields passed to it as keywords."""

    path: str
    options: tuple[str, ...] = ()


TORCH_MODELS: dict[str, ModelEntry] = {
    "mlp": ModelEntry("fedgossip.tasks.torch_models:mlp", ("hidden",)),
    "cnn": ModelEntry("fedgossip.tasks.torch_models:cnn"),
    "lenet5": ModelEntry("fedgossip.tasks.torch_models:lenet5"),
}
MODEL_NAMES = (*TORCH_MODELS, "linear")


def is_factory_path(spec: str) -> bool:
    """True if `spec` has the form package.module:function."""
    return bool(_PATH.match(spec))


def model_entry(model: str) -> ModelEntry | None:
    """The registry entry of a torch model name, or an entry without options for a user's factory
    path; None for "linear" (scikit-learn, not a torch factory)."""
    if model == "linear":
        return None
    if isinstance(model, str) and model in TORCH_MODELS:
        return TORCH_MODELS[model]
    if not isinstance(model, str) or not is_factory_path(model):
        raise ValueError(
            f"task.model must be one of {', '.join(MODEL_NAMES)} or 'package.module:function'; got {model!r}"
        )
    return ModelEntry(model)


def resolve_factory(path: str) -> Callable:
    """The callable at `package.module:function`; ValueError if the module does not import or the
    attribute is missing or not callable."""
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # a user's module may fail in any way while importing
        raise ValueError(
            f"task.model {path!r}: cannot import module {module_name!r} ({type(err).__name__}: {err}); "
            "it must be importable from the working directory or PYTHONPATH"
        ) from err
    factory = getattr(module, attribute, None)
    if factory is None:
        raise ValueError(f"task.model {path!r}: module {module_name!r} has no attribute {attribute!r}")
    if not callable(factory):
        raise ValueError(f"task.model {path!r}: {attribute!r} is not callable")
    return factory
