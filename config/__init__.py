"""Experiment configuration: one TOML schema shared by the launcher, the gossip peer and Flower apps."""

from fedgossip.config.experiment import (
    QUICKSTART,
    ExperimentConfig,
    apply_override,
    config_from_dict,
    dump_toml,
    load_config,
)
from fedgossip.config.privacy import PrivacySection
from fedgossip.config.runtime_sections import (
    FlowerSection,
    GossipSection,
    LauncherSection,
    PeerSection,
    SecuritySection,
)
from fedgossip.config.sections import (
    FLOWER_BUILTIN_STRATEGIES,
    FLOWER_STRATEGIES,
    GOSSIP_STRATEGIES,
    TOPOLOGIES,
    ExperimentSection,
    NodesSection,
    ScenarioSection,
    StrategySection,
    TopologySection,
)

__all__ = [
    "FLOWER_BUILTIN_STRATEGIES",
    "FLOWER_STRATEGIES",
    "GOSSIP_STRATEGIES",
    "QUICKSTART",
    "TOPOLOGIES",
    "ExperimentConfig",
    "ExperimentSection",
    "FlowerSection",
    "GossipSection",
    "LauncherSection",
    "NodesSection",
    "PeerSection",
    "PrivacySection",
    "ScenarioSection",
    "SecuritySection",
    "StrategySection",
    "TopologySection",
    "apply_override",
    "config_from_dict",
    "dump_toml",
    "load_config",
]
