"""The registries of models, datasets, topologies, attacks and engines: every entry is complete
and consistent with what reads it, and a new entry is picked up with no other edit."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import threading
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import tomllib

from fedgossip.base.constraints import StrOptions
from fedgossip.base.loading import load_callable
from fedgossip.config import (
    ExperimentConfig,
    ExperimentSection,
    FlowerSection,
    LauncherSection,
    NodesSection,
    runtime_sections,
)
from fedgossip.config import sections as config_sections
from fedgossip.config.sections import ScenarioSection, TopologySection
from fedgossip.launcher.runs import engines
from fedgossip.launcher.supervision import memory
from fedgossip.launcher.supervision.forkserver import preload_for
from fedgossip.scenario import attacks, topology
from fedgossip.schema.fields import FIELDS
from fedgossip.tasks import TaskConfig, build_learner, load_dataset, node_dataset
from fedgossip.tasks import datasets as dataset_registry
from fedgossip.tasks import registry as model_registry
from fedgossip.tasks.source import Source

REPO = Path(__file__).resolve().parents[2]


# ---- models -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(model_registry.MODELS))
def test_every_model_entry_loads_its_learner_factory_and_preload(name):
    entry = model_registry.MODELS[name]
    assert callable(load_callable(entry.family.learner))
    for module in entry.family.preload:
        importlib.import_module(module)
    assert not entry.path or callable(model_registry.resolve_factory(entry.path))
    assert set(entry.options) <= {f.name for f in dataclasses.fields(TaskConfig)}
    for table in (memory.PER_NODE_MIB, memory.FORKED_MIB, memory.PACKED_PEER_MIB, memory.FORK_SERVER_MIB):
        assert entry.family.memory in table
    assert set(entry.family.preload) <= set(preload_for(name).modules)


def toy_net(input_shape, num_classes):
    """A user-style factory: one linear layer."""
    import torch

    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(np.prod(input_shape)), num_classes))


def test_a_registered_model_is_accepted_built_preloaded_and_sized(monkeypatch):
    toy = model_registry.ModelEntry("tests.unit.test_registries:toy_net", images=True)
    monkeypatch.setitem(model_registry.MODELS, "toy", toy)
    learner = build_learner(TaskConfig(model="toy"), 0, 2, seed=0)
    assert type(learner).__name__ == "TorchLearner" and len(learner.get_weights()) == 2
    with pytest.raises(ValueError, match=r"task.model 'toy' needs images"):
        TaskConfig(model="toy", dataset="synthetic")
    assert "fedgossip.tasks.torch_models" in preload_for("toy").modules
    linear = dataclasses.replace(toy, path="", images=False, family=model_registry.SKLEARN_LINEAR)
    monkeypatch.setitem(model_registry.MODELS, "toy-linear", linear)
    assert type(build_learner(TaskConfig(model="toy-linear"), 0, 2, seed=0)).__name__ == "LinearLearner"
    assert "fedgossip.tasks.torch_learner" not in preload_for("toy-linear").modules
    need = memory.estimate(ExperimentConfig(task=TaskConfig(model="toy-linear")))
    assert need is not None and need.per_node_mib == memory.PER_NODE_MIB["linear"]


# ---- datasets ---------------------------------------------------------------------------------


def _extras() -> set[str]:
    return set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])


@pytest.mark.parametrize("name", list(dataset_registry.DATASETS))
def test_every_dataset_entry_is_complete(name):
    entry = dataset_registry.DATASETS[name]
    assert not entry.source or callable(load_callable(entry.source))
    assert not entry.extra or entry.extra in _extras()
    assert not entry.prepared or (entry.path and entry.source)  # prepared from a path it names
    assert entry.source or entry.path  # read whole, or per node from its path
    if entry.bundled is not None:
        assert not entry.prepared and entry.source == "fedgossip.tasks.data:bundled_source"
        found = importlib.util.find_spec(entry.bundled.package)
        if found is not None:
            assert (Path(next(iter(found.submodule_search_locations))) / entry.bundled.file).is_file()
        assert preload_for("linear", name).raw_data == (name,)
    else:
        assert preload_for("linear", name).raw_data == ()


def toy_source(task, seed):
    """A user-style source: 40 seeded tabular examples of 2 classes."""
    rng = np.random.default_rng(seed)
    return Source(rng.normal(size=(40, 3)), np.arange(40) % 2, 2, (3,), None)


def test_a_registered_dataset_is_accepted_loaded_and_checked(monkeypatch):
    toy = dataset_registry.DatasetEntry("tests.unit.test_registries:toy_source", tabular=True)
    monkeypatch.setitem(dataset_registry.DATASETS, "toy", toy)
    data = load_dataset(TaskConfig(dataset="toy", model="linear"), seed=1)
    assert (len(data.y_train), len(data.y_test), data.num_classes) == (32, 8, 2)
    assert len(node_dataset(TaskConfig(dataset="toy"), 0, 2, seed=1).y_train) == 16
    with pytest.raises(ValueError, match="is tabular"):
        TaskConfig(dataset="toy", model="cnn")
    with pytest.raises(ValueError, match=r"task.path applies to the datasets npz, hf, mnist, prepared"):
        TaskConfig(dataset="toy", path="x")
    monkeypatch.setitem(dataset_registry.DATASETS, "toy", dataclasses.replace(toy, path="a toy file"))
    with pytest.raises(ValueError, match=r"task.dataset 'toy' needs task.path: a toy file"):
        TaskConfig(dataset="toy")
    with pytest.raises(ValueError, match=r"task.dataset must be one of digits, .*, toy; got 'other'"):
        TaskConfig(dataset="other")


# ---- topologies -------------------------------------------------------------------------------

NETWORKX = {
    "ring": lambda t, n, seed: nx.cycle_graph(n),
    "complete": lambda t, n, seed: nx.complete_graph(n),
    "star": lambda t, n, seed: nx.star_graph(n - 1),
    "regular": lambda t, n, seed: nx.random_regular_graph(t.degree, n, seed=seed),
    "erdos-renyi": lambda t, n, seed: nx.erdos_renyi_graph(n, t.probability, seed=seed),
    "small-world": lambda t, n, seed: nx.watts_strogatz_graph(n, t.degree, t.probability, seed=seed),
}


def test_the_config_allows_exactly_the_registered_topologies():
    assert tuple(topology.GENERATORS) == config_sections.TOPOLOGIES
    fields = {f.name for f in dataclasses.fields(TopologySection)}
    for generator in topology.GENERATORS.values():
        assert set(topology.parameters(generator)) <= fields | {"seed"}


@pytest.mark.parametrize("kind", list(NETWORKX))
def test_each_generator_gives_the_graph_networkx_gives(kind):
    section = TopologySection(kind=kind, degree=4, probability=0.6)
    for seed in (0, 3):
        graph = topology.build_topology(section, 10, seed)
        assert sorted(graph.edges) == sorted(NETWORKX[kind](section, 10, seed).edges)


def test_a_registered_topology_is_accepted_and_built(monkeypatch):
    def chain(n, *, degree, seed):
        """Each node linked to the next `degree` ones, in a seeded order."""
        order = np.random.default_rng(seed).permutation(n).tolist()
        return nx.Graph((order[i], order[j]) for i in range(n) for j in range(i + 1, min(n, i + 1 + degree)))

    monkeypatch.setitem(topology.GENERATORS, "chain", chain)
    kinds = StrOptions(*config_sections.TOPOLOGIES, "chain")  # config/ sits below: its one line
    monkeypatch.setitem(TopologySection.constraints, "kind", kinds)
    graph = topology.build_topology(TopologySection(kind="chain", degree=1), 6, seed=2)
    assert sorted(graph.edges) == sorted(chain(6, degree=1, seed=2).edges) and nx.is_connected(graph)


# ---- attacks ----------------------------------------------------------------------------------


def test_the_config_allows_exactly_the_registered_attacks():
    assert ("none", *attacks.ATTACKS) == config_sections.ATTACKS
    fields = {f.name for f in dataclasses.fields(ScenarioSection)}
    record_fields = {f.name for f in FIELDS}
    for entry in attacks.ATTACKS.values():
        assert entry.kind in ("model", "data") and set(entry.params) <= fields
        assert set(entry.records) <= record_fields


@pytest.mark.parametrize("name", list(attacks.ATTACKS))
def test_each_attack_is_dispatched_by_its_kind(name):
    kind = attacks.ATTACKS[name].kind
    scenario = ScenarioSection(attack=name, attackers=(0,))
    initial = [np.ones(3, np.float32)]
    forger = attacks.model_attacker(name, scenario, initial, np.random.default_rng(0))
    assert (forger is not None) == (kind == "model")
    assert (attacks.poisoner(name, scenario) is not None) == (kind == "data")
    assert attacks.model_attacker(None, scenario, initial, np.random.default_rng(0)) is None
    assert attacks.poisoner(None, scenario) is None
    refused = contextlib.nullcontext() if not attacks.ATTACKS[name].gossip_only else pytest.raises(ValueError)
    with refused:
        scenario.check_nodes(4, "flower")


def test_a_registered_attack_is_dispatched_and_recorded(monkeypatch):
    def zeros(attacker, own):
        return [np.zeros_like(a) for a in own]

    monkeypatch.setitem(
        attacks.ATTACKS,
        "zeros",
        attacks.Attack("model", zeros, records={"trigger_success": lambda learner, scenario: 0.5}),
    )
    names = StrOptions(*config_sections.ATTACKS, "zeros")  # config/ sits below: its one line
    monkeypatch.setitem(ScenarioSection.constraints, "attack", names)
    scenario = ScenarioSection(attack="zeros", attackers=(0,))
    forger = attacks.model_attacker("zeros", scenario, [np.ones(2)], np.random.default_rng(0))
    assert forger.forge([np.ones(2)])[0].tolist() == [0.0, 0.0]
    assert attacks.poisoner("zeros", scenario) is None
    assert attacks.record_fields(scenario, learner=None) == {"trigger_success": 0.5}


# ---- engines ----------------------------------------------------------------------------------


def test_every_engine_the_config_allows_resolves():
    assert tuple(engines.GOSSIP_ENGINES) == runtime_sections.ENGINES
    for name in engines.FLOWER_ENGINES:
        FlowerSection(engine=name)
    with pytest.raises(ValueError, match=f"must be one of {', '.join(engines.FLOWER_ENGINES)};"):
        FlowerSection(engine="other")
    for registry in (engines.GOSSIP_ENGINES, engines.FLOWER_ENGINES):
        for entry in registry.values():
            module = entry.function.partition(":")[0]
            assert importlib.util.find_spec(module) is not None  # imported only when used (Ray)
    for name in engines.GOSSIP_ENGINES:
        config = ExperimentConfig(launcher=LauncherSection(engine=name))
        assert engines.configured_engine(config) is engines.GOSSIP_ENGINES[name]
    flower = ExperimentSection(mode="flower")
    for name in engines.FLOWER_ENGINES:
        config = ExperimentConfig(experiment=flower, flower=FlowerSection(engine=name))
        assert engines.configured_engine(config) is engines.FLOWER_ENGINES[name]
        assert (memory.estimate(config) is not None) == engines.FLOWER_ENGINES[name].node_processes


def fake_engine(*args, label):
    """An engine function that says what it was called with."""
    return label, args


def test_a_registered_engine_is_configured_loaded_and_sized(monkeypatch):
    toy = engines.Engine(
        "tests.unit.test_registries:fake_engine", node_processes=False, options={"label": "t"}
    )
    monkeypatch.setitem(engines.GOSSIP_ENGINES, "toy", toy)
    names = StrOptions(*runtime_sections.ENGINES, "toy")  # config/ sits below: its one line
    monkeypatch.setitem(LauncherSection.constraints, "engine", names)
    config = ExperimentConfig(launcher=LauncherSection(engine="toy"), nodes=NodesSection(count=4))
    assert engines.configured_engine(config) is toy
    assert toy.load()(config, "results", "lines") == ("t", (config, "results", "lines"))
    assert memory.estimate(config) is None  # its nodes are not processes of this machine


@pytest.mark.timeout(120)
def test_a_dp_sgd_run_preloads_opacus_and_no_other_run_does():
    assert not set(model_registry.DP_SGD_PRELOAD) & set(preload_for("mlp", "digits").modules)
    private = preload_for("mlp", "digits", dp_sgd=True).modules
    assert set(model_registry.DP_SGD_PRELOAD) <= set(private)
    assert private.index("fedgossip.tasks.torch_learner") < private.index("opacus.validators")
    before = set(threading.enumerate())
    for name in model_registry.DP_SGD_PRELOAD:
        importlib.import_module(name)
    assert set(threading.enumerate()) <= before  # no thread a fork would lose
