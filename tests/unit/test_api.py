"""The Python API without starting a run: configs built from a file, a dict or keywords are the
CLI's (same config, same error messages, as a catchable ConfigError), records as a DataFrame whose
columns are the record fields, and comparisons whose table and figures are those the CLI writes."""

from __future__ import annotations

import json
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import pytest

import fedgossip.api as fg
from fedgossip.api.sweeps import grid_items
from fedgossip.config import QUICKSTART, dump_toml, load_config
from fedgossip.config.experiment import read_config_data
from fedgossip.reports import read_records
from fedgossip.schema.fields import FIELDS
from tests.support import REPO, make_run

pytestmark = pytest.mark.timeout(60)


def cli_message(*overrides: str, path=None) -> str:
    """What `fedgossip run PATH --set ...` prints after `error: ` (the CLI prints str(ValueError))."""
    with pytest.raises(ValueError) as err:
        load_config(path, overrides)
    return str(err.value)


def test_a_dict_a_file_and_keywords_give_the_configs_the_cli_gives():
    example = REPO / "examples" / "gossip-vca.toml"
    from_cli = load_config(example, ["nodes.count=4", "experiment.rounds=7"])
    assert fg.config(example, ["nodes.count=4", "experiment.rounds=7"]) == from_cli
    assert fg.config(example, {"nodes.count": 4, "experiment.rounds": 7}) == from_cli
    assert fg.config(str(example), nodes={"count": 4}, experiment={"rounds": 7}) == from_cli
    assert fg.config(read_config_data(example), {"nodes.count": 4}, experiment={"rounds": 7}) == from_cli
    assert fg.config(load_config(example), nodes={"count": 4}, experiment={"rounds": 7}) == from_cli
    assert fg.config() == load_config(None) == load_config(QUICKSTART)
    assert dump_toml(fg.config(nodes={"count": 4})) == dump_toml(load_config(None, ["nodes.count=4"]))


@pytest.mark.parametrize(
    ("keywords", "overrides"),
    [
        ({"nodes": {"bogus": 1}}, ["nodes.bogus=1"]),
        ({"nodes": {"count": 0}}, ["nodes.count=0"]),
        ({"strategy": {"name": "nope"}}, ['strategy.name="nope"']),
        ({"experiment": {"rounds": "ten"}}, ['experiment.rounds="ten"']),
        ({"bogus": {"x": 1}}, ["bogus.x=1"]),
        ({"experiment": {"learning_rate": float("inf")}}, ["experiment.learning_rate=inf"]),
    ],
)
def test_bad_keys_raise_the_cli_message_as_a_config_error(keywords, overrides):
    expected = cli_message(*overrides)
    with pytest.raises(fg.ConfigError) as err:
        fg.config(**keywords)
    assert str(err.value) == expected
    with pytest.raises(ValueError) as err:  # ConfigError is a ValueError, as the CLI catches
        fg.config(None, overrides)
    assert str(err.value) == expected


def test_a_missing_file_and_a_value_toml_cannot_hold_are_config_errors(tmp_path):
    with pytest.raises(fg.ConfigError) as err:
        fg.config(tmp_path / "none.toml")
    assert str(err.value) == cli_message(path=tmp_path / "none.toml")
    with pytest.raises(fg.ConfigError, match=r"^experiment\.rounds: not a TOML value"):
        fg.config(experiment={"rounds": None})
    with pytest.raises(fg.ConfigError, match="is a TOML file, a dict or an ExperimentConfig"):
        fg.config(42)


def test_records_are_a_dataframe_whose_columns_are_the_record_fields(tmp_path):
    run = make_run(tmp_path / "run", "vca", seed=1)
    frame = fg.Results(run).records
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    declared = [field.name for field in FIELDS]
    assert list(frame.columns) == [name for name in declared if any(name in line for line in lines)]
    assert len(frame) == len(lines) == len(read_records(run))
    for (_, row), line in zip(frame.iterrows(), lines, strict=True):
        assert {key: row[key] for key in line} == line
    assert fg.Results(run).status == "complete"
    assert fg.Results(run).config.strategy.name == "vca"


def test_without_pandas_the_dataframe_says_how_to_get_it(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run", "vca", seed=1)
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'fedgossip\[notebook\]'"):
        _ = fg.Results(run).records
    assert fg.Results(run).summary["status"] == "complete"  # the rest needs no pandas


def test_compare_gives_the_cli_table_and_its_figures_as_matplotlib_figures(sweep_dir, tmp_path):
    import pandas as pd
    from matplotlib.figure import Figure

    comparison = fg.compare(sweep_dir, out=tmp_path / "out")
    written = json.loads((tmp_path / "out" / "compare.json").read_text())["groups"]
    assert comparison.rows == written
    table = comparison.table  # compare.csv's
    assert list(table["label"]) == [row["label"] for row in written]
    assert list(table["seeds"]) == [3, 2]
    assert list(table["final_mean_accuracy_mean"]) == [row["final_mean_accuracy"]["mean"] for row in written]
    assert table.equals(pd.read_csv(tmp_path / "out" / "compare.csv"))
    assert set(comparison.figures) == {"compare.png", "compare-final.png"}
    for name, figure in comparison.figures.items():
        assert isinstance(figure, Figure)
        assert figure.axes and figure.axes[0].lines  # something is drawn
        assert (tmp_path / "out" / name).stat().st_size > 10_000
    with pytest.raises(fg.ConfigError, match="is not a results folder"):
        fg.compare(tmp_path / "out")


def test_a_grid_in_python_is_the_cli_grid():
    items = grid_items({"strategy.name": ["average", "vca"], "nodes.count": [4, 8], "x.y": ["true", 0.5]})
    assert items == ["strategy.name=average,vca", "nodes.count=4,8", 'x.y="true",0.5']


def test_a_sweep_checks_every_grid_point_with_the_cli_message_before_running(tmp_path):
    from fedgossip.launcher.experiments.sweep import plan

    with pytest.raises(ValueError) as cli:
        plan(None, ["nodes.count=4"], ["strategy.name=average,nope"], 1)
    with pytest.raises(fg.ConfigError) as api:
        fg.sweep(
            None, grid={"strategy.name": ["average", "nope"]}, out=tmp_path / "sweep", nodes={"count": 4}
        )
    assert str(api.value) == str(cli.value)
    assert str(api.value).startswith("run strategy.name=nope_seed=0: ")
    # the config given in Python was written as given (the grid may change the strategy)
    written = tomllib.loads((tmp_path / "sweep" / "sweep-config.toml").read_text())
    quickstart = read_config_data(QUICKSTART)
    assert written == {**quickstart, "nodes": {**quickstart["nodes"], "count": 4}}
    assert "params" not in written["strategy"]  # not the resolved config
    assert not (tmp_path / "sweep" / "sweep.json").exists()  # nothing ran
