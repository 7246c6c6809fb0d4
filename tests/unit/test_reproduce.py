"""`fedgossip reproduce`'s plan: methods x seeds from each setting's base config, optional methods
the config refuses skipped, a refused method that is not optional stopping the plan."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fedgossip.config import load_config
from fedgossip.launcher.experiments import papers, reproduce
from fedgossip.launcher.experiments.papers import FAIR_INCENTIVES, VANISHING_VARIANCE, Method
from fedgossip.reports.reproductions import setting_section


def test_the_plan_is_every_method_times_the_seeds_and_optional_methods_the_config_refuses_are_skipped(
    monkeypatch,
):
    spec = replace(
        VANISHING_VARIANCE,
        methods=(
            Method("plain", ("strategy.name=average",)),
            Method("future", ("gossip.not_a_key_yet=1",), optional=True),
        ),
    )
    monkeypatch.setitem(papers.REPRODUCTIONS, spec.name, spec)
    planned = reproduce.plan(spec.name, "quick")
    seeds = spec.settings["quick"].seeds
    assert [run.name for run in planned.runs] == [f"plain_seed={s}" for s in range(seeds)]
    assert [run.config.experiment.seed for run in planned.runs] == list(range(seeds))
    assert all(run.config.nodes.count == 4 for run in planned.runs)  # the quick setting's overrides
    ((skipped, why),) = planned.skipped
    assert skipped.label == "future" and "gossip.not_a_key_yet" in why
    record = planned.record()
    assert record["skipped"][0]["label"] == "future" and record["methods"][0]["runs"] == [
        run.name for run in planned.runs
    ]


def test_a_setting_with_its_own_base_config_plans_its_runs_from_it():
    """fair-incentives --full runs the authors' regime (examples/fair-authors.toml), the default
    setting examples/fair-flower.toml; the plan's record names the config its runs came from."""
    full, default = reproduce.plan("fair-incentives", "full"), reproduce.plan("fair-incentives")
    assert full.config_path.name == "fair-authors.toml" and default.config_path.name == "fair-flower.toml"
    assert full.record()["config"] == "examples/fair-authors.toml" == FAIR_INCENTIVES.config_of("full")
    authors = load_config(full.config_path)
    assert [m.label for m, _ in full.methods] == [
        f"{method}-{variant}" for variant in ("script", "readme") for method in ("fair", "random", "fedavg")
    ]
    for method, runs in full.methods:
        for run in runs:  # the script's noise as the base config has it; the README's: 0.2, E = 1
            want = (
                authors.task
                if "script" in method.label
                else replace(authors.task, label_noise=0.2, local_epochs=1)
            )
            assert run.config.task == want and run.config.nodes.count == 30
    assert {run.config.strategy.params["selection"] for run in full.runs} == {"fair", "random", "all"}
    assert {run.config.task.dataset for run in default.runs} == {"digits"}


def test_seeds_overrides_the_settings_count_and_the_record_says_both(monkeypatch):
    spec = replace(VANISHING_VARIANCE, methods=(Method("plain", ("strategy.name=average",)),))
    monkeypatch.setitem(papers.REPRODUCTIONS, spec.name, spec)
    planned = reproduce.plan(spec.name, "quick", seeds=3)
    assert [run.config.experiment.seed for run in planned.runs] == [0, 1, 2]
    record = planned.record()
    assert record["seeds"] == 3 and record["default_seeds"] == spec.settings["quick"].seeds
    heading = setting_section(record, [])[2]  # the write-up names the command that made it
    assert heading.startswith(f"Made by `fedgossip reproduce {spec.name} --quick --seeds 3`")


def test_a_method_that_is_not_optional_and_refused_stops_the_plan_naming_its_run(monkeypatch):
    spec = replace(VANISHING_VARIANCE, methods=(Method("bad", ("nodes.count=1",)),))
    monkeypatch.setitem(papers.REPRODUCTIONS, spec.name, spec)
    with pytest.raises(ValueError, match=r"run bad_seed=0: nodes.count"):
        reproduce.plan(spec.name, "quick")
