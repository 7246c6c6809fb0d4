"""A mechanism is one registry entry plus its parts: a toy one, registered here with its gossip plan,
Flower strategy and report defined in this module, is accepted by the config, and the gossip
round plan, the Flower strategy builder, the launcher's summary, plot and table and the comparison
all find its parts through the registry, with no other file edited."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from flwr.serverapp.strategy import FedAvg
from rich.console import Console

from fedgossip.client.gossip.rounds import RoundPlan, round_plan
from fedgossip.config import ExperimentConfig, load_config
from fedgossip.launcher.experiments.run import run_experiment
from fedgossip.reports.groups import group_runs, load_run
from fedgossip.reports.mechanisms import MechanismReport
from fedgossip.reports.tables import compare_cells, compare_header, csv_table
from fedgossip.server.flower_strategies import build_strategy
from fedgossip.strategies import registry
from fedgossip.strategies.mechanisms import Mechanism, mechanism, register_mechanism
from fedgossip.strategies.registry import Param, integer


class ToyGossip(RoundPlan):
    """The toy's gossip plan: the model goes to the first `share` neighbours only."""

    def recipients(self, round_: int) -> set[int]:
        return set(self.neighbours[: self.config.strategy.params["share"]])

    def fields(self, round_: int) -> dict[str, Any]:
        return {"sent_to": sorted(self.recipients(round_))}


class ToyStrategy(FedAvg):
    """The toy's Flower strategy: FedAvg that keeps what the builder gave it."""

    def __init__(self, share: int, labels: Mapping[int, int], node_wait: float) -> None:
        super().__init__(min_train_nodes=share, min_evaluate_nodes=share, min_available_nodes=share)
        self.share, self.labels, self.node_wait = share, labels, node_wait


def toy_strategy(config: ExperimentConfig, labels: Mapping[int, int], node_wait: float) -> ToyStrategy:
    return ToyStrategy(config.strategy.params["share"], labels, node_wait)


class ToyReport(MechanismReport):
    """The toy's report: how many node records a run has, and its share."""

    title = "toy mechanism"
    labels = ("toy_share",)
    stats = ("toy_records",)
    run_rows = (("toy records", lambda toy: toy["records"], "d"),)
    columns = (("share", "toy_share", ""), ("toy records", "toy_records", ".1f"))

    def summary(self, records: list[dict], config: ExperimentConfig) -> dict[str, Any] | None:
        nodes = [r for r in records if isinstance(r["node"], int)]
        return {"records": len(nodes), "share": config.strategy.params["share"]}

    def figures(self, records: list[dict], config: ExperimentConfig) -> dict[str, Any]:
        toy = self.summary(records, config)
        return {"toy_share": f"share {toy['share']}", "toy_records": toy["records"]}

    def plot(self, records: list[dict], config: ExperimentConfig, path: str | Path, title: str) -> Path:
        Path(path).write_text(f"{title}: {len(records)} records")
        return Path(path)


def check_share(params: Mapping[str, Any], num_nodes: int) -> None:
    if params["share"] >= num_nodes:
        raise ValueError(f"strategy.params.share must be below nodes.count; got {params['share']}")


@pytest.fixture
def toy(monkeypatch) -> Mechanism:
    """The toy mechanism, registered for one test only."""
    monkeypatch.setattr(registry, "MECHANISMS", dict(registry.MECHANISMS))
    return register_mechanism(
        "toy",
        (Param("share", 1, integer(1)),),
        doc="A toy: the model goes to the first `share` neighbours.",
        check_nodes=check_share,
        gossip_plan=f"{__name__}:ToyGossip",
        flower_strategy=f"{__name__}:toy_strategy",
        report=f"{__name__}:ToyReport",
        schedules=("sync",),
    )


def test_the_config_accepts_the_mechanism_and_checks_it_with_its_entry(toy):
    config = load_config(None, ['strategy.name="toy"', "strategy.params.share=2"])
    assert config.strategy.params == {"share": 2}
    assert toy.modes == ("gossip", "flower") and "toy" in registry.names("flower")
    assert load_config(None, ['strategy.name="toy"']).strategy.params == {"share": 1}  # its default
    with pytest.raises(ValueError, match=re.escape("strategy.params.share must be below nodes.count; got 4")):
        load_config(None, ['strategy.name="toy"', "nodes.count=4", "strategy.params.share=4"])
    with pytest.raises(ValueError, match=re.escape("strategy.params.share")):
        load_config(None, ['strategy.name="toy"', "strategy.params.share=0"])
    with pytest.raises(
        ValueError, match=re.escape("gossip.schedule 'async' cannot run with strategy.name 'toy'")
    ):
        load_config(None, ['strategy.name="toy"', 'gossip.schedule="async"'])


def test_a_mechanism_runs_only_in_the_modes_whose_part_it_names(monkeypatch):
    monkeypatch.setattr(registry, "MECHANISMS", dict(registry.MECHANISMS))
    register_mechanism(
        "gossip-toy", (), doc="", check_nodes=check_share, gossip_plan=f"{__name__}:ToyGossip", report="a:b"
    )
    assert "gossip-toy" in registry.names("gossip") and "gossip-toy" not in registry.names("flower")
    with pytest.raises(ValueError, match=re.escape("strategy.name (mode flower)")):
        load_config(None, ['experiment.mode="flower"', 'strategy.name="gossip-toy"'])
    with pytest.raises(ValueError, match=re.escape("strategy 'gossip-toy' has no flower_strategy")):
        mechanism("gossip-toy").part("flower_strategy")
    with pytest.raises(
        ValueError, match=re.escape("strategy 'gossip-toy', report 'a:b': cannot import module 'a'")
    ):
        mechanism("gossip-toy").part("report")
    with pytest.raises(ValueError, match=re.escape("names neither a gossip_plan nor a flower_strategy")):
        register_mechanism("idle", (), doc="", check_nodes=check_share, report="a:b")
    with pytest.raises(
        ValueError, match=re.escape("gossip_plan must be package.module:attribute; got 'ToyGossip'")
    ):
        register_mechanism("bad", (), doc="", check_nodes=check_share, gossip_plan="ToyGossip", report="a:b")


def test_the_gossip_round_plan_is_the_mechanisms(toy):
    config = load_config(None, ['strategy.name="toy"', "strategy.params.share=2", "nodes.count=5"])
    plan = round_plan(config, 0, [4, 1, 3])
    assert type(plan) is ToyGossip
    assert plan.recipients(1) == {1, 3} and plan.fields(1) == {"sent_to": [1, 3]}


def test_the_flower_strategy_is_built_by_the_mechanisms_part(toy):
    config = load_config(None, ['experiment.mode="flower"', 'strategy.name="toy"', "strategy.params.share=2"])
    labels = {10: 0, 11: 1}
    strategy = build_strategy(config, labels=labels, node_wait=7.5)
    assert type(strategy) is ToyStrategy
    assert (strategy.share, strategy.labels, strategy.node_wait) == (2, labels, 7.5)
    assert strategy.min_train_nodes == 2


def test_a_run_of_the_mechanism_has_its_summary_plot_table_and_comparison_columns(toy, tmp_path):
    """A whole Flower federation in this process with the toy strategy: summary.json's "toy" object,
    toy.png and the run table's row come from its report; so do the comparison's columns."""
    overrides = [
        'experiment.mode="flower"',
        'flower.engine="inprocess"',
        'strategy.name="toy"',
        "strategy.params.share=2",
        "nodes.count=3",
        "experiment.rounds=2",
    ]
    out = io.StringIO()
    summary, code = run_experiment(
        load_config(None, overrides), tmp_path / "run", Console(file=out, width=200)
    )
    assert code == 0, summary.get("errors")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["toy"] == {"records": 6, "share": 2}
    assert (tmp_path / "run" / "toy.png").read_text().startswith("quickstart: toy mechanism: ")
    assert "toy records" in out.getvalue() and "│ 6 " in out.getvalue()
    run_experiment(
        load_config(None, [*overrides[:2], "nodes.count=3", "experiment.rounds=1"]),
        tmp_path / "average",
        Console(file=io.StringIO()),
    )
    rows = [group.row() for group in group_runs([load_run(tmp_path / "run"), load_run(tmp_path / "average")])]
    header = compare_header(rows)
    assert header[:3] == ["run", "strategy", "share"] and "toy records" in header
    cells = {line[0]: dict(zip(header, line, strict=True)) for line in compare_cells(rows)}
    assert cells["run"]["share"] == "share 2" and cells["run"]["toy records"] == "6.0"
    assert cells["average"]["share"] == "-" and cells["average"]["toy records"] == "-"
    assert "toy_share" in csv_table(rows).splitlines()[0]
