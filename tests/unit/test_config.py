"""The experiment config: defaults, overrides, and clear errors that name the key."""

from __future__ import annotations

import math
import typing

import pytest

from fedgossip.config import QUICKSTART, ExperimentConfig, config_from_dict, dump_toml, load_config


def test_quickstart_loads_and_round_trips(tmp_path):
    config = load_config()
    assert config.experiment.name == "quickstart"
    assert config.nodes.count == 8
    path = tmp_path / "resolved.toml"
    path.write_text(dump_toml(config))
    assert load_config(path) == config
    assert QUICKSTART.exists()


def test_overrides_are_parsed_as_toml_values():
    config = load_config(
        None,
        [
            "experiment.rounds=3",
            "strategy.name=average",
            "task.label_noise=[0.1, 0.2]",
            "experiment.name=my run",
        ],
    )
    assert config.experiment.rounds == 3
    assert config.strategy.name == "average"
    assert config.task.label_noise == (0.1, 0.2)
    assert config.experiment.name == "my run"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"experiment": {"rounds": 0}}, "experiment.rounds"),
        ({"experiment": {"rounds": "ten"}}, "experiment.rounds must be an integer"),
        ({"experiment": {"colour": 1}}, "unknown key experiment.colour"),
        ({"experimnt": {}}, "unknown section [experimnt]"),
        ({"nodes": {"count": 1}}, "nodes.count"),
        ({"topology": {"kind": "torus"}}, "topology.kind must be one of"),
        ({"strategy": {"name": "fedavg"}}, "strategy.name (mode gossip)"),
        ({"strategy": {"params": {"own_weight": 1.5}}}, "strategy.params.own_weight"),
        ({"security": {"mutual_tls": True}}, "security.mutual_tls"),
        ({"task": {"partition": "weird"}}, "partition"),
        ({"task": {"oops": 1}}, "unknown key task.oops"),
        ({"peer": {"listen": "nowhere"}}, "peer.listen"),
        ({"peer": {"id": 1, "neighbours": {"1": "127.0.0.1:5"}}}, "must not name the peer itself"),
        ({"launcher": {"engine": "slurm"}}, "launcher.engine must be one of local, ray"),
        ({"launcher": {"ray_address": "head"}}, 'launcher.ray_address must be "auto", HOST:PORT'),
        ({"launcher": {"ray_address": "head:99999"}}, "launcher.ray_address"),
        ({"launcher": {"ray_address": ":6379"}}, "launcher.ray_address"),
        (
            {"experiment": {"mode": "flower"}, "strategy": {"name": "fedavg"}, "launcher": {"engine": "ray"}},
            'launcher.engine "ray" runs gossip peers',
        ),
    ],
)
def test_bad_config_names_the_key(data, message):
    with pytest.raises(ValueError) as err:
        config_from_dict(data)
    assert message in str(err.value)


@pytest.mark.parametrize("item", ["rounds=3", "experiment.=3", "experiment.rounds"])
def test_malformed_override(item):
    with pytest.raises(ValueError, match=r"section\.key=value"):
        load_config(None, [item])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[experiment\nname=")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(bad)


@pytest.mark.parametrize("address", ["", "auto", "10.0.0.5:6379", "head-node.cluster:6379", "[::1]:6379"])
def test_ray_addresses_that_are_accepted(address):
    config = config_from_dict({"launcher": {"engine": "ray", "ray_address": address}})
    assert (config.launcher.engine, config.launcher.ray_address) == ("ray", address)


def test_config_keys_of_the_defences():
    config = load_config(None, ["gossip.max_norm_ratio=10", "gossip.idle_timeout=2"])
    assert config.gossip.max_norm_ratio == 10 and config.gossip.idle_timeout == 2
    with pytest.raises(ValueError, match=r"gossip\.catch_up_rounds"):
        load_config(None, ["gossip.catch_up_rounds=1"])


# --- config values ----------------------------------------------------------------------------


def _float_keys() -> list[tuple[str, str]]:
    """(section, key) of every float-typed key of every config section."""
    keys = []
    for section, hint in typing.get_type_hints(ExperimentConfig).items():
        cls = next(a for a in (*typing.get_args(hint), hint) if isinstance(a, type) and a is not type(None))
        for key, field_hint in typing.get_type_hints(cls).items():
            if field_hint is float or float in typing.get_args(field_hint):
                keys.append((section, key))
    return keys


def test_every_section_has_float_keys_to_check():
    sections = {section for section, _ in _float_keys()}
    assert {"experiment", "task", "topology", "gossip", "flower", "peer"} <= sections


@pytest.mark.parametrize(("section", "key"), _float_keys(), ids=lambda v: v)
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
def test_non_finite_numbers_are_refused_for_every_float_key(section, key, value):
    with pytest.raises(ValueError, match=rf"^{section}\.{key} must be a finite number; got (-?inf|nan)$"):
        config_from_dict({section: {key: value}})


def test_non_finite_inside_a_list_and_huge_integers_are_refused():
    with pytest.raises(ValueError, match=r"^task\.label_noise\[1\] must be a finite number; got nan$"):
        config_from_dict({"task": {"label_noise": [0.1, math.nan]}})
    with pytest.raises(ValueError, match=r"^experiment\.rounds must fit in 64 bits"):
        config_from_dict({"experiment": {"rounds": 2**64}})
    with pytest.raises(ValueError, match=r"^experiment\.round_timeout must fit in 64 bits"):
        config_from_dict({"experiment": {"round_timeout": 10**400}})  # float() of it would overflow


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../../x", "must be a plain file name (it names the results folder), not a path"),
        ("a/b", "not a path"),
        ("a\\b", "not a path"),
        (".", "not a path"),
        ("..", "not a path"),
        ("a\x00b", "must not contain control characters"),
        ("line\nbreak", "must not contain control characters"),
        ("x" * 101, "must be at most 100 characters; got 101"),
        ("  ", "must not be empty"),
    ],
    ids=["traversal", "slash", "backslash", "dot", "dotdot", "nul", "newline", "long", "blank"],
)
def test_experiment_name_must_be_a_plain_file_name(name, problem):
    with pytest.raises(ValueError, match=r"^experiment\.name ") as err:
        config_from_dict({"experiment": {"name": name}})
    assert problem in str(err.value)


def test_good_names_still_pass():
    for name in ("my run", "vca-8.ring", "é [x] :smile:", "x" * 100):
        assert config_from_dict({"experiment": {"name": name}}).experiment.name == name


def test_reading_a_config_resolves_no_type_hint_again(monkeypatch):
    """Each section's hints are resolved once, at import (the fork server's children inherit them):
    parsing a node config calls typing.get_type_hints no more."""
    expected = load_config(None, ["nodes.count=5", "task.learning_rate=0.1"])

    def refuse(*_args, **_kwargs):
        raise AssertionError("typing.get_type_hints called while reading a config")

    monkeypatch.setattr(typing, "get_type_hints", refuse)
    assert load_config(None, ["nodes.count=5", "task.learning_rate=0.1"]) == expected
    with pytest.raises(ValueError, match=r"unknown key nodes\.colour"):
        load_config(None, ["nodes.colour=1"])
