"""fedgossip from Python (notebooks): build a config, run it (blocking or not), sweep it, read and
compare results. The CLI runs through the same functions: one path, the same checks and messages.

    import fedgossip.api as fg
    results = fg.run(nodes={"count": 4}, experiment={"rounds": 5}, out="results/demo")
    results.records            # a pandas DataFrame, one row per metrics record
    fg.compare("results/a", "results/b").table
"""

from fedgossip.api.configs import ConfigError
from fedgossip.api.configs import make_config as config
from fedgossip.api.handle import RunHandle, start
from fedgossip.api.results import Comparison, Results, compare
from fedgossip.api.runs import run
from fedgossip.api.sweeps import sweep

__all__ = [
    "Comparison",
    "ConfigError",
    "Results",
    "RunHandle",
    "compare",
    "config",
    "run",
    "start",
    "sweep",
]
