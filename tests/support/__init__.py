"""What the tests share, one module per subject; import it from here (`from tests.support import
run_cli`): cli (fedgossip runs in a subprocess, their records, waits and interrupts), peers (peers
started by hand, raw stubs, the neighbours a test plays, a sender stalled once), models (hand-made
models, small aggregation blocks, the consensus distance computed directly), flower (reply
Messages, deployment runs, the fair setting), data (digits and a user's model module on disk),
results (results folders written by hand), recompute (a comparison's figures recomputed from the
records) and ray_cluster (a loopback Ray cluster)."""

from tests.support.cli import (
    RECORD_FIELDS,
    REPO,
    cli_argv,
    interrupt,
    interrupt_in_second_run,
    keys_of,
    kill_during_run,
    launched,
    metrics,
    node_config,
    peer_address,
    rounds_done,
    run_cli,
    run_status,
    set_args,
    start_cli,
    timeless,
    wait_for,
)
from tests.support.data import USER_MODULE, digit_images, save_hf_digits
from tests.support.flower import FLOWER, fair_config, processes_gone, reply
from tests.support.models import NAMES, SHAPES, direct_consensus, model, small_blocks
from tests.support.peers import (
    TASK,
    StallsOnce,
    aio_stub_for,
    loopback_ports,
    neighbour_model,
    pushed_again,
    records,
    sink_neighbour,
    start_peer,
    start_token_peer,
    stub_for,
    wait_exit,
    wait_healthy,
    write_node_config,
)
from tests.support.ray_cluster import loopback_cluster
from tests.support.recompute import assert_row_matches, run_figures
from tests.support.results import TARGET, make_run

__all__ = [
    "FLOWER",
    "NAMES",
    "RECORD_FIELDS",
    "REPO",
    "SHAPES",
    "TARGET",
    "TASK",
    "USER_MODULE",
    "StallsOnce",
    "aio_stub_for",
    "assert_row_matches",
    "cli_argv",
    "digit_images",
    "direct_consensus",
    "fair_config",
    "interrupt",
    "interrupt_in_second_run",
    "keys_of",
    "kill_during_run",
    "launched",
    "loopback_cluster",
    "loopback_ports",
    "make_run",
    "metrics",
    "model",
    "neighbour_model",
    "node_config",
    "peer_address",
    "processes_gone",
    "pushed_again",
    "records",
    "reply",
    "rounds_done",
    "run_cli",
    "run_figures",
    "run_status",
    "save_hf_digits",
    "set_args",
    "sink_neighbour",
    "small_blocks",
    "start_cli",
    "start_peer",
    "start_token_peer",
    "stub_for",
    "timeless",
    "wait_exit",
    "wait_for",
    "wait_healthy",
    "write_node_config",
]
