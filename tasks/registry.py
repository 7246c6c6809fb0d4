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

from collections.abc import Callable
from dataclasses import dataclass

from fedgossip.base.loading import is_reference, load_callable


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


def model_entry(model: str) -> ModelEntry | None:
    """The registry entry of a torch model name, or an entry without options for a user's factory
    path; None for "linear" (scikit-learn, not a torch factory)."""
    if model == "linear":
        return None
    if isinstance(model, str) and model in TORCH_MODELS:
        return TORCH_MODELS[model]
    if not isinstance(model, str) or not is_reference(model):
        raise ValueError(
            f"task.model must be one of {', '.join(MODEL_NAMES)} or 'package.module:function'; got {model!r}"
        )
    return ModelEntry(model)


def resolve_factory(path: str) -> Callable:
    """The callable at `package.module:function`; ValueError (naming task.model) if the module does
    not import or the attribute is missing or not callable."""
    try:
        return load_callable(path)
    except ValueError as err:
        raise ValueError(f"task.model {path!r}: {err}") from None
