"""The experiment config: defaults, overrides, and clear errors that name the key."""

from __future__ import annotations

import pytest

from fedgossip.config import QUICKSTART, config_from_dict, dump_toml, load_config


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
