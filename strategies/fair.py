"""The fair-incentive mechanism, explore then exploit, as a pure state machine (no I/O, no
framework; all randomness from the generator it is given). After Lin et al., "Fair yet
Asymptotically Equal Collaborative Learning" (ICML 2023); see docs in :data:`DOC`.

A runtime (the Flower adapter in ``fedgossip.server.fair``; each gossip peer's plan in
``fedgossip.client.gossip.fair``) asks :meth:`FairMechanism.choose`
which nodes train in a round, gives :meth:`FairMechanism.aggregate` their updates
g_i = theta_i - theta and example counts, adds the returned step to the global model, and hands
that model to :meth:`FairMechanism.receivers`; :meth:`FairMechanism.fields` are the round's
per-node metrics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._typing import FloatArray, NDArrays
from .contributions import MAX_EXACT_NODES, cosine_shapley, running_mean
from .mechanisms import register_mechanism
from .registry import Param, choice, integer, real
from .selection import select_nodes, selection_probabilities, selection_size
from .stopping import RULES as STOPPING_RULES
from .stopping import ExploreStop

DOC = """Fair incentives: explore, then exploit (Lin et al., ICML 2023).

Explore (every node, every round): each node trains from the global theta and reports
g_i = theta_i - theta; w_i = n_i / sum_j n_j (example counts over all nodes);
theta <- theta + sum_i w_i g_i. Node i's contribution phi_i is its cosine-gradient Shapley value
(utility U(S) = cos(g_N, sum_{j in S} w_j g_j), stratified Monte Carlo with one coalition per size,
or exact); psi = running mean of phi. Exploring stops when a Hotelling T^2 test on the last tau
rounds of phi of min(N, test_nodes) nodes gives p > alpha (between min_explore and max_explore
rounds; "hotelling-history": the authors' code's test, every round so far against the mean of all
but the last tau), or after explore_rounds ("fixed").

Exploit: p = softmax(beta psi) with a floor; each round k = floor(ratio N) nodes drawn without
replacement get the latest theta, train and upload; theta <- theta + sum_{i in S} w_i g_i (w not
renormalised over S); the others keep the last model they received (stale).

Parameters: selection "fair" (the mechanism), "random" (same explore phase, then k uniform
nodes) or "all" (every node every round: FedAvg, contributions still measured); shapley
"montecarlo" | "exact"; stopping "hotelling" | "hotelling-history" | "fixed"; alpha, tau,
test_nodes, min_explore, max_explore, explore_rounds; beta, ratio, floor (probability floor, see
selection_probabilities; the authors' 1e-30 makes a low-psi node practically never selected).

Gossip mode (fedgossip.client.gossip.fair): every peer runs this mechanism over its own
neighbourhood, itself one of the players, drawing max(1, floor(ratio degree)) of its neighbours
to send its model to; see docs/fair-gossip.md.
"""

SELECTIONS = ("fair", "random", "all")

PARAMS = (
    Param("selection", "fair", choice(*SELECTIONS)),
    Param("shapley", "montecarlo", choice("montecarlo", "exact")),
    Param("stopping", "hotelling", choice(*STOPPING_RULES)),
    Param("alpha", 0.7, real(0.0, 1.0)),
    Param("tau", 15, integer(2)),
    Param("test_nodes", 10, integer(1)),
    Param("min_explore", 1, integer(1)),
    Param("max_explore", 100, integer(1)),
    Param("explore_rounds", 20, integer(1)),
    Param("beta", 150.0, real(0.0)),
    Param("ratio", 0.4, real(0.0, 1.0)),
    Param("floor", 0.01, real(0.0, 1.0)),
)


def check_nodes(params: Mapping[str, Any], num_nodes: int) -> None:
    """The parameters against the node count (ValueError naming the key)."""
    tested = min(num_nodes, params["test_nodes"])
    if params["selection"] != "all" and params["stopping"] != "fixed" and params["tau"] <= tested:
        raise ValueError(
            f"strategy.params.tau must exceed the {tested} nodes the stopping test watches "
            f"(min(nodes.count, test_nodes)); got {params['tau']}"
        )
    if params["min_explore"] > params["max_explore"]:
        raise ValueError("strategy.params.min_explore must not exceed strategy.params.max_explore")
    if params["shapley"] == "exact" and num_nodes > MAX_EXACT_NODES:
        raise ValueError(
            f'strategy.params.shapley = "exact" enumerates 2^N coalitions: N <= {MAX_EXACT_NODES}'
        )
    try:
        selection_size(params["ratio"], num_nodes)
    except ValueError as err:
        raise ValueError(f"strategy.params.ratio: {err}") from None


FAIR = register_mechanism(
    "fair",
    PARAMS,
    doc=DOC,
    check_nodes=check_nodes,
    gossip_plan="fedgossip.client.gossip.fair:FairGossip",
    flower_strategy="fedgossip.server.fair:fair_strategy",
    report="fedgossip.reports.fair:FairReport",
    schedules=("sync",),  # its rounds of selection are synchronous
)


def _norm(tensors: Sequence[np.ndarray]) -> float:
    """The L2 norm of a model's tensors taken as one vector."""
    return float(np.sqrt(sum(float(np.vdot(t, t)) for t in tensors)))


def _cosine(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float | None:
    """cos(a, b) of two models taken as vectors (None when either is zero)."""
    norms = _norm(a) * _norm(b)
    if norms == 0:
        return None
    return sum(float(np.vdot(x, y)) for x, y in zip(a, b, strict=True)) / norms


class FairMechanism:
    """The state of one fair-incentive run over nodes 0..N-1 (see :data:`DOC`)."""

    def __init__(
        self,
        num_nodes: int,
        params: Mapping[str, Any],
        rng: np.random.Generator,
        candidates: Sequence[int] | None = None,
    ) -> None:
        """``candidates``: the nodes the exploit phase draws from (default: all, k = floor(ratio N)).
        A gossip peer plays its own game with its neighbours but draws among them only, and at
        least one whatever its degree: k = max(1, floor(ratio * len(candidates)))."""
        self.params = FAIR.bind(params)
        if candidates is None:  # a gossip peer's game is checked through its config's node count
            check_nodes(self.params, num_nodes)
        self.num_nodes = num_nodes
        self.rng = rng
        self.candidates = np.arange(num_nodes) if candidates is None else np.array(sorted(set(candidates)))
        if not len(self.candidates) or not set(self.candidates.tolist()) <= set(range(num_nodes)):
            raise ValueError(f"candidates must be some of the nodes 0..{num_nodes - 1}; got {candidates}")
        gossip = candidates is not None
        self.k = selection_size(self.params["ratio"], len(self.candidates), at_least_one=gossip)
        self.stop = ExploreStop(
            num_nodes,
            rng,
            rule="fixed" if self.params["selection"] == "all" else self.params["stopping"],
            alpha=self.params["alpha"],
            tau=self.params["tau"],
            test_nodes=self.params["test_nodes"],
            min_explore=self.params["min_explore"],
            max_explore=self.params["max_explore"],
            explore_rounds=self.params["explore_rounds"],
        )
        self.exploring = True
        self.explore_rounds = 0
        self.psi: FloatArray | None = None
        self.probabilities: FloatArray | None = None
        self.sizes = np.zeros(num_nodes)
        self.last_received = np.zeros(num_nodes, dtype=np.int64)  # round of the last global model
        self._round: dict[str, Any] = {}

    @property
    def phase(self) -> str:
        """ "explore" or "exploit" (the phase of the next round)."""
        return "explore" if self.exploring else "exploit"

    def choose(self, round_: int) -> list[int]:
        """The nodes that get the global model and train in round ``round_``."""
        if self.exploring:
            chosen = [int(i) for i in self.candidates]
        else:
            drawn = select_nodes(self.probabilities[self.candidates], self.k, self.rng)
            chosen = [int(i) for i in self.candidates[drawn]]
        self._round = {"round": round_, "phase": self.phase, "chosen": chosen, "phi": None}
        self._round.update(norms={}, alignments={})
        return chosen

    def aggregate(self, updates: Mapping[int, NDArrays], sizes: Mapping[int, int]) -> list[FloatArray]:
        """The step sum_i w_i g_i (float64 tensors) of the updates delivered this round (node ->
        g_i, node -> example count); in an explore round also the contributions. A chosen node
        that delivered nothing counts as a zero update."""
        if not updates:
            raise ValueError("no node delivered an update")
        for node, count in sizes.items():
            self.sizes[node] = count
        weights = self.sizes / self.sizes.sum()
        reference = next(iter(updates.values()))
        zero = [np.zeros(np.shape(t)) for t in reference]
        step = [
            sum((weights[i] * np.asarray(g[t], dtype=np.float64) for i, g in updates.items()), z)
            for t, z in enumerate(zero)
        ]
        if self._round["phase"] == "explore":
            everyone = [updates.get(i, zero) for i in range(self.num_nodes)]
            phi = cosine_shapley(everyone, weights, method=self.params["shapley"], rng=self.rng)
            self.psi = running_mean(self.psi, phi, self.explore_rounds)
            self.explore_rounds += 1
            self._round["phi"] = phi
            if self.params["selection"] != "all" and self.stop.add(phi):
                self.exploring = False
                self.probabilities = self._probabilities()
        self._round["delivered"] = sorted(updates)
        self._round["norms"] = {i: _norm(g) for i, g in updates.items()}
        self._round["alignments"] = {i: _cosine(g, step) for i, g in updates.items()}
        return step

    def _probabilities(self) -> FloatArray:
        """Each node's chance to be drawn in the exploit phase (0 for a node not a candidate):
        softmax(beta psi) with the floor over the candidates, or uniform ("random")."""
        n = len(self.candidates)
        if self.params["selection"] == "random":
            drawn = np.full(n, 1.0 / n)
        else:
            psi = self.psi[self.candidates]
            drawn = selection_probabilities(psi, self.params["beta"], self.params["floor"])
        probabilities = np.zeros(self.num_nodes)
        probabilities[self.candidates] = drawn
        return probabilities

    def receivers(self) -> list[int]:
        """The nodes given the new global model at the end of the round: those that delivered."""
        delivered = self._round.get("delivered", [])
        self.last_received[delivered] = self._round["round"]
        return delivered

    def fields(self) -> dict[int, dict[str, Any]]:
        """The round's metrics per node: phase, selected, staleness (rounds since the node last
        received the global model), contribution (phi; explore rounds), psi,
        selection_probability (exploit rounds), explore_p_value (the stopping test's p, if run);
        for a node that delivered, update_norm ||g_i|| and update_alignment cos(g_i, step)."""
        round_, phi = self._round["round"], self._round["phi"]
        p_value = self.stop.p_values[-1] if phi is not None and self.stop.p_values else None
        return {
            i: {
                "phase": self._round["phase"],
                "selected": i in self._round["chosen"],
                "staleness": int(round_ - self.last_received[i]),
                "contribution": None if phi is None else float(phi[i]),
                "psi": None if self.psi is None else float(self.psi[i]),
                "selection_probability": None
                if self._round["phase"] == "explore"
                else float(self.probabilities[i]),
                "explore_p_value": p_value,
                "update_norm": self._round["norms"].get(i),
                "update_alignment": self._round["alignments"].get(i),
            }
            for i in range(self.num_nodes)
        }
