"""The model registry: every model is one entry naming its factory and what the rest needs of it.

A torch model is a factory named by `package.module:function`. Ours are registered here by name
and resolved through the same import path as a user's `task.model = "package.module:function"`.
A factory is called as

    factory(input_shape: tuple[int, ...], num_classes: int, **options) -> torch.nn.Module

where input_shape is one example's shape ((features,) for tabular data, (channels, height,
width) for images) and options are the TaskConfig fields the registry lists for it (none for a
user's factory). Each entry's family says which learner trains it, which modules the fork server
imports before forking peers of that model, and its memory class (`launcher/supervision/memory`).
This module imports no torch; the factory's module is imported when a learner is built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fedgossip.base.loading import is_reference, load_callable


@dataclass(frozen=True)
class Family:
    """A kind of model: the learner class that trains it (`package.module:Class`), the modules a
    fork server imports for it before forking (never one that starts a thread: scikit-learn
    imports pandas and pyarrow when installed, whose allocator does), its memory class, whether
    its learner trains with FedProx's proximal term (`proximal_mu` sent by the server), and its
    warm-up (`package.module:function`, "" for none): called by a fork server after the imports
    as `warm_up(task)` (a TaskConfig of a bundled dataset), it runs the run's model once so that
    the forked nodes inherit the library's first-use work (torch: its kernels' setup) instead of
    each paying it; it must leave the random state as it found it and start no thread."""

    learner: str
    preload: tuple[str, ...]
    memory: str
    proximal: bool = True
    warm_up: str = ""


TORCH = Family(
    "fedgossip.tasks.torch_learner:TorchLearner",
    ("fedgossip.tasks.torch_learner", "fedgossip.tasks.torch_models"),
    memory="torch",
    warm_up="fedgossip.tasks.torch_learner:warm_up",
)
DP_SGD_PRELOAD = (
    "fedgossip.tasks.dp_sgd",
    "opacus.validators",
    "opacus.accountants",
    "opacus.accountants.analysis.rdp",
    "opacus.accountants.utils",
)
"""What a node training with DP-SGD imports beyond its torch family (Opacus' layer checks and
accountant: seconds a node): a fork server preloads it only for a run with privacy.mechanism
"dp-sgd", so no other node pays for it (none of it starts a thread)."""
SKLEARN_LINEAR = Family("fedgossip.tasks.linear:LinearLearner", (), memory="linear", proximal=False)
DP_REGRESSION = Family(
    "fedgossip.tasks.dp_regression_learner:DPRegressionLearner", (), memory="linear", proximal=False
)
FEDGMM = Family("fedgossip.tasks.fedgmm_learner:FedGMMLearner", (), memory="linear", proximal=False)


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its factory's import path ("" when its learner builds it), the
    TaskConfig fields passed to the factory as keywords, whether it needs image examples, and
    its family."""

    path: str
    options: tuple[str, ...] = ()
    images: bool = False
    family: Family = TORCH


MODELS: dict[str, ModelEntry] = {
    "mlp": ModelEntry("fedgossip.tasks.torch_models:mlp", ("hidden",)),
    "cnn": ModelEntry("fedgossip.tasks.torch_models:cnn", images=True),
    "lenet5": ModelEntry("fedgossip.tasks.torch_models:lenet5", images=True),
    "fair-cnn": ModelEntry("fedgossip.tasks.torch_models:fair_cnn", images=True),
    "linear": ModelEntry("", family=SKLEARN_LINEAR),
    "dp-bayesian-regression": ModelEntry("", family=DP_REGRESSION),
    "fedgmm": ModelEntry("", family=FEDGMM),
}


def model_entry(model: str) -> ModelEntry:
    """The registry entry of a model name, or a torch entry without options for a user's factory
    path; ValueError naming task.model for anything else."""
    if isinstance(model, str) and model in MODELS:
        return MODELS[model]
    if not isinstance(model, str) or not is_reference(model):
        raise ValueError(
            f"task.model must be one of {', '.join(MODELS)} or 'package.module:function'; got {model!r}"
        )
    return ModelEntry(model)


def resolve_factory(path: str) -> Callable:
    """The callable at `package.module:function`; ValueError (naming task.model) if the module does
    not import or the attribute is missing or not callable."""
    try:
        return load_callable(path)
    except ValueError as err:
        raise ValueError(f"task.model {path!r}: {err}") from None
