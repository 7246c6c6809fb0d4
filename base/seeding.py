"""Independent numpy random streams derived from the experiment seed, one per use (and node)."""

from __future__ import annotations

import numpy as np

# Fixed stream ids (never hash(): it changes between processes), so every process derives the same
# generator for the same (seed, use, node) and no two uses share random numbers.
_STREAMS = {
    "split": 0,
    "synthetic": 1,
    "partition": 2,
    "init": 3,
    "shuffle": 4,
    "label_noise": 5,
    "feature_noise": 6,
    "stream": 7,
    "fair": 8,
    "scenario": 9,  # who attacks, crashes, straggles (keyed by the choice)
    "network": 10,  # per link: losses and jitter (keyed by sender, receiver)
    "churn": 11,  # per node: crashes at a rate (keyed by node)
    "attack": 12,  # per node: the noise of a noise attacker
    "topology": 13,  # per resampling epoch: the neighbours drawn
    "async": 14,  # per node: asynchronous gossip's pauses between local units
    "eval_subset": 15,  # the class-balanced evaluation subset (task.eval_examples), one for all nodes
    "ticks": 16,  # per node: the tick schedule's intervals between trainings
    "dp_regression": 17,  # DP Bayesian regression: simulated data, priors, MCMC (keyed by the cell)
    # privacy (ids apart from the rest): Flower's DP noise (per round; per node and round)
    "central-dp": 220,
    "local-dp": 221,
    "dp-share": 222,  # per node: the noise on the models a gossip peer pushes
    "secagg": 223,  # per node and round: SecAgg+'s stochastic rounding (Flower draws from numpy's global one)
    # personalised learning (ids from 40: other uses may take the next small ones)
    "gmm_synthetic": 40,  # the synthetic mixture: keyed 0 components, 1 training pool, 2 test set, 3 novel
    "covariate": 41,  # the covariate partition: keyed 0 training groups, 1 test groups, 2 feature shifts
    "local_eval": 42,  # per node: its local test split (task.eval)
    "fedgmm": 43,  # per node: FedGMM's initial mixture
}


def stream(seed: int, use: str, *keys: int) -> np.random.Generator:
    """Generator for one named use of `seed`, optionally specialised by keys such as the node id."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_STREAMS[use], *keys)))
