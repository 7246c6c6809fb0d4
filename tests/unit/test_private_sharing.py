"""DP for what gossip peers push (client/gossip/private_sharing.py): a release against its
formula computed here, one release a round whatever the recipients, and its epsilon equal to
Flower's central DP with fixed clipping at the same sigma and rounds (FL and gossip compared at
equal epsilon)."""

from __future__ import annotations

import numpy as np
import pytest

from fedgossip.base.ports import free_ports
from fedgossip.client.gossip.peer import GossipPeer
from fedgossip.client.gossip.private_sharing import PrivateLinks, SharedModelNoise
from fedgossip.client.gossip.transport.identity import (
    LinkKeys,
    observer_metadata,
    read_observer_secret,
    write_link_keys,
)
from fedgossip.config import PeerSection, PrivacySection, load_config
from fedgossip.proto import gossip_pb2
from fedgossip.server.flower_privacy import central_epsilon
from tests.support import stub_for

pytestmark = pytest.mark.timeout(30)

PRIVACY = PrivacySection(mechanism="dp-share", noise_multiplier=0.7, max_grad_norm=0.5)


def _model(rng: np.random.Generator, scale: float) -> list[np.ndarray]:
    return [
        (scale * rng.standard_normal((4, 3))).astype(np.float32),
        (scale * rng.standard_normal(3)).astype(np.float32),
        np.array(7, dtype=np.int64),  # a step count: sent as it is
    ]


def test_a_release_is_the_last_one_plus_the_clipped_update_and_the_noise():
    rng = np.random.default_rng(0)
    initial, trained = _model(rng, 0.1), _model(rng, 1.0)
    noise = SharedModelNoise(PRIVACY, initial, np.random.default_rng(5))
    released = noise.release(trained)
    update = [t.astype(np.float64) - i for t, i in zip(trained[:2], initial[:2], strict=True)]
    norm = np.sqrt(sum((u**2).sum() for u in update))
    assert norm > PRIVACY.max_grad_norm  # the update is clipped
    replay = np.random.default_rng(5)
    std = PRIVACY.noise_multiplier * PRIVACY.max_grad_norm
    for got, start, u in zip(released[:2], initial[:2], update, strict=True):
        expected = start + u * PRIVACY.max_grad_norm / norm + std * replay.standard_normal(start.shape)
        np.testing.assert_allclose(got, expected.astype(np.float32), rtol=1e-6, atol=1e-6)
        assert got.dtype == np.float32
    assert released[2] == 7 and released[2].dtype == np.int64
    again = noise.release(trained)  # relative to the first release now, the draws following on
    update = [t.astype(np.float64) - r for t, r in zip(trained[:2], released[:2], strict=True)]
    scale = min(1.0, PRIVACY.max_grad_norm / np.sqrt(sum((u**2).sum() for u in update)))
    for got, start, u in zip(again[:2], released[:2], update, strict=True):
        expected = start + scale * u + std * replay.standard_normal(start.shape)
        np.testing.assert_allclose(got, expected.astype(np.float32), rtol=1e-6, atol=1e-6)


class _Recorder:
    def __init__(self) -> None:
        self.pushed: list[tuple[int, list[np.ndarray]]] = []
        self.stubs = {"kept": True}

    def push(self, round_, arrays, *args, **kwargs):
        self.pushed.append((round_, arrays))
        return {}


def test_one_release_a_round_whatever_pushes_it_and_epsilon_as_central_dp():
    rng = np.random.default_rng(1)
    initial = _model(rng, 0.1)
    links = PrivateLinks(_Recorder(), SharedModelNoise(PRIVACY, initial, np.random.default_rng(2)))
    for round_ in (1, 1, 2):
        links.push(round_, _model(rng, 1.0), 10)
    pushed = links._links.pushed
    assert pushed[0][1] is pushed[1][1] and pushed[2][1] is not pushed[0][1]
    assert links.stubs == {"kept": True}  # everything else is the transport's
    assert links.noise.releases == 2
    central = PrivacySection(mechanism="central-fixed-server", noise_multiplier=0.7, max_grad_norm=0.5)
    assert links.noise.epsilon == pytest.approx(central_epsilon(central, 2), rel=1e-12)


def test_dp_share_is_gossip_only():
    with pytest.raises(ValueError, match="'dp-share' noises what gossip peers push"):
        load_config(None, ['experiment.mode="flower"', 'privacy.mechanism="dp-share"'])


def test_a_peer_pushes_its_release_and_keeps_its_own_model():
    """Three linear-model peers on a line, in process: the neighbours get the middle peer's
    release (its formula, from the peer's seeded stream), the peer keeps its noiseless model, and
    its round record carries the release's epsilon."""
    from fedgossip.base.seeding import stream
    from fedgossip.client.gossip.inprocess import InProcessNetwork
    from fedgossip.client.gossip.peer import GossipPeer
    from fedgossip.config import PeerSection

    network, line = InProcessNetwork(), {0: [1], 1: [0, 2], 2: [1]}
    base = load_config(
        None,
        ["task.model=linear", "nodes.count=3", "experiment.rounds=2", 'privacy.mechanism="dp-share"'],
    )
    peers = []
    for node, neighbours in line.items():
        addresses = {str(n): f"127.0.0.1:{n + 1}" for n in neighbours}
        peer = PeerSection(id=node, listen=f"127.0.0.1:{node + 1}", neighbours=addresses)
        peers.append(GossipPeer(base.replace(peer=peer), network))
    middle = peers[1]
    model = [a + 0.5 for a in middle.learner.get_weights()]
    kept = [a.copy() for a in model]
    middle.links.push(1, model, 10, linked={0, 2}, alive={0, 2}, deadline=0.0, recipients={0, 2})
    reference = SharedModelNoise(base.privacy, middle.initial, stream(0, "dp-share", 1)).release(model)
    for node in (0, 2):
        (message,) = peers[node].inbox.close(1)
        for got, expected in zip(message.arrays, reference, strict=True):
            np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(reference[0], model[0])
    for own, before in zip(model, kept, strict=True):  # the peer's own model is not noised
        np.testing.assert_array_equal(own, before)
    record = middle.records.round(
        1, model, [], discarded=None, train_loss=0.1, test_loss=None, test_accuracy=None, bytes_sent=0
    )["record"]
    assert record["privacy"] == "dp-share"
    assert record["epsilon"] == pytest.approx(
        central_epsilon(PrivacySection(mechanism="central-fixed-server"), 1), rel=1e-12
    )


def _get_model(address: str, metadata) -> tuple[int, list[np.ndarray]]:
    """A peer's served model (GetModel over gRPC, with `metadata`'s credentials): round, tensors."""
    chunks = list(stub_for(address).GetModel(gossip_pb2.GetModelRequest(), timeout=20, metadata=metadata))
    header, data = chunks[0].header, b"".join(c.data for c in chunks)
    arrays, offset = [], 0
    for spec in header.tensors:
        arrays.append(np.frombuffer(data, spec.dtype, int(np.prod(spec.shape)), offset).reshape(spec.shape))
        offset += arrays[-1].nbytes
    return header.round, arrays


@pytest.mark.timeout(60)
def test_get_model_serves_a_neighbour_the_last_release_and_only_the_observer_the_model(tmp_path):
    """Two peers with link keys and an observer secret, on real gRPC servers: after a round, the
    neighbour's GetModel (the catch-up path, and a call with its link key) gets the peer's last
    release, never its own merged model; the observer, proving its secret, gets the model."""
    secrets = tmp_path / "secrets"
    keys = write_link_keys([(0, 1)], [0, 1], secrets, observer=True)
    ports = free_ports(2)
    base = load_config(
        None, ["task.model=linear", "nodes.count=2", "experiment.rounds=3", 'privacy.mechanism="dp-share"']
    )
    peers = []
    try:
        for node in (0, 1):
            section = PeerSection(
                id=node,
                listen=f"127.0.0.1:{ports[node]}",
                neighbours={str(1 - node): f"127.0.0.1:{ports[1 - node]}"},
                link_keys_file=str(keys[node]),
            )
            peers.append(GossipPeer(base.replace(peer=section)))
        neighbour, peer = peers
        peer.start(lambda event: None)
        model = [a + 0.5 for a in peer.learner.get_weights()]
        release = peer.sharing.release(model)  # what its round-1 push sends
        peer.keep(model, 1)
        address = f"127.0.0.1:{ports[1]}"
        fetched = neighbour.watch.fetch(1)  # how a neighbour that fell behind catches up
        served_round, served = _get_model(address, LinkKeys.load(keys[0], 0).metadata(1))
        assert fetched.round == served_round == 1
        for caught, got, want, own in zip(fetched.arrays, served, release, model, strict=True):
            np.testing.assert_array_equal(caught, want)
            np.testing.assert_array_equal(got, want)
            assert not np.allclose(got, own)
        observed_round, observed = _get_model(address, observer_metadata(read_observer_secret(secrets)))
        assert observed_round == 1
        for got, own in zip(observed, model, strict=True):
            np.testing.assert_array_equal(got, own)
    finally:
        for peer in peers:
            peer.close()
