"""The experiment config of a Flower run: the run config's `config-toml` (the experiment config as
TOML text; "" = the built-in default) plus its `overrides`, read alike by the ServerApp and ClientApp."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from fedgossip.base.flower_protocol import CONFIG_TOML, OVERRIDES
from fedgossip.config.experiment import ExperimentConfig, apply_override, config_from_dict, load_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# The built-in experiment of a bare `flwr run .` (no config-toml): the quickstart, federated.
DEFAULT_OVERRIDES = (
    'experiment.name="flower"',
    'experiment.mode="flower"',
    "experiment.rounds=10",
    'strategy.name="fedavg"',
)


def experiment_from_run_config(run_config: Mapping[str, Any]) -> ExperimentConfig:
    """The experiment config of a run: `config-toml` (or the built-in default) plus `overrides`."""
    text = str(run_config.get(CONFIG_TOML, "") or "")
    items = [item.strip() for item in str(run_config.get(OVERRIDES, "") or "").split(";")]
    items = [item for item in items if item]
    if not text.strip():
        config = load_config(None, [*DEFAULT_OVERRIDES, *items])
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"run config {CONFIG_TOML} is not valid TOML: {err}") from None
        for item in items:
            apply_override(data, item)
        config = config_from_dict(data)
    if config.experiment.mode != "flower":
        raise ValueError(
            f"experiment.mode must be 'flower' for the Flower apps; got {config.experiment.mode!r}"
        )
    return config
