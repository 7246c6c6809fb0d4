"""The emulated hosts of one run (launcher.network = "namespaces"): gossip, one per node process,
its peers on the host's own address, the links shaped by the kernel when scenario.network_layer =
"kernel"; Flower deployment, one for the SuperLink and one per SuperNode; and the map written to
the results folder's network.json.

Made before the first node process starts and removed after the last one stopped (the local
engine's block), on error and Ctrl-C as at the end; after a SIGKILL of the launcher the run's
watchdog removes them (launcher/supervision/namespaces.py registers them with it).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

from fedgossip.config import ExperimentConfig
from fedgossip.launcher.network.delays import DelayProcess, queued_links
from fedgossip.launcher.network.shaping import check_kernel_layer, link_shapes, queues_delays, shape_links
from fedgossip.launcher.runs.outcome import LaunchError
from fedgossip.launcher.runs.results import ResultsFolder
from fedgossip.launcher.supervision.namespaces import EmulatedHosts, NamespaceError, check_machine

NETWORK = "network.json"


def check_network(config: ExperimentConfig) -> None:
    """ValueError naming the key if this machine cannot run `config`'s network: emulated hosts
    (root, iproute2, namespaces) and the kernel's layer (netem or netfilter queues for delays)."""
    check_machine(config.launcher.network)
    if config.launcher.network == "namespaces":
        check_kernel_layer(config.scenario)


def make_hosts(count: int) -> EmulatedHosts:
    """`count` emulated hosts; LaunchError (one line, exit 1) if iproute2 cannot make them."""
    try:
        return EmulatedHosts(count)
    except NamespaceError as err:
        raise LaunchError(f"cannot make the emulated hosts: {err}") from None


@contextlib.contextmanager
def flower_hosts(config: ExperimentConfig, results: ResultsFolder) -> Iterator[EmulatedHosts | None]:
    """A Flower deployment's emulated hosts for the block (None on loopback): the SuperLink in
    host 0, the SuperNode of node n in host n + 1; network.json says which is where."""
    if config.launcher.network != "namespaces":
        yield None
        return
    with make_hosts(config.nodes.count + 1) as hosts:
        where = [
            {"namespace": name, "address": address}
            for name, address in zip(hosts.namespaces, hosts.addresses, strict=True)
        ]
        description = {"prefix": hosts.prefix, "gateway": hosts.gateway, "superlink": where[0]}
        results.write_json(
            NETWORK, {**description, "nodes": {str(n): host for n, host in enumerate(where[1:])}}
        )
        yield hosts


class RunHosts:
    """The run's emulated hosts: node n lives in host n // nodes.per_process."""

    def __init__(self, config: ExperimentConfig, results: ResultsFolder) -> None:
        count = config.nodes.count
        self.per_process = config.nodes.per_process
        self.delays: DelayProcess | None = None
        self.hosts = make_hosts(math.ceil(count / self.per_process))
        try:
            self.delays = self.shape(config, results)
            results.write_json(NETWORK, self.describe(count))
        except NamespaceError as err:
            self.close()
            raise LaunchError(f"cannot shape the links of the emulated hosts: {err}") from None
        except BaseException:
            self.close()
            raise

    def shape(self, config: ExperimentConfig, results: ResultsFolder) -> DelayProcess | None:
        """Shape the links under the kernel layer (per_process = 1: host n = node n): tc, and the
        delay process for the delays where the kernel has no netem (returned, None otherwise)."""
        scenario = config.scenario
        if scenario.network_layer != "kernel" or not scenario.network_faults:
            return None
        shapes = link_shapes(scenario, config.nodes.count)
        delays = None
        if queues_delays(scenario):
            held = {link: (shape.delay_ms, shape.jitter_ms) for link, shape in shapes.items()}
            log = results.logs / "delays.log"
            delays = DelayProcess(self.hosts, queued_links(self.hosts, held), config.experiment.seed, log)
            shapes = {link: shape.without_delay() for link, shape in shapes.items()}
        try:
            shape_links(self.hosts, shapes)
        except BaseException:
            if delays is not None:
                delays.close()
            raise
        return delays

    def address_of(self, node: int) -> str:
        """The address of the host of `node`."""
        return self.hosts.addresses[node // self.per_process]

    def namespace_of(self, node: int) -> str:
        """The network namespace of the host of `node`."""
        return self.hosts.namespaces[node // self.per_process]

    def describe(self, count: int) -> dict:
        """What network.json says: the prefix of every name the run made, the launcher's address
        on the bridge, each node's host (namespace, address) and the delay process's PID (or null)."""
        return {
            "prefix": self.hosts.prefix,
            "gateway": self.hosts.gateway,
            "delay_process": self.delays.pid if self.delays else None,
            "nodes": {
                str(node): {"namespace": self.namespace_of(node), "address": self.address_of(node)}
                for node in range(count)
            },
        }

    def close(self) -> None:
        """Stop the delay process, remove the hosts (and whatever still runs in them)."""
        if self.delays is not None:
            self.delays.close()
        self.hosts.close()

    def __enter__(self) -> RunHosts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
