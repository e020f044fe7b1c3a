"""Ray: joining (or starting) the cluster, and the Ray Data graph units → read → embed and stage.

Kept apart from the run loop so the loop stays about planning and committing, and so that the
graph's resource settings are in one place.

Blocks: Ray Data merges what a task yields into blocks of up to ``target_max_block_size`` bytes
(128 MiB by default), so with its default a unit's rows would travel as one block: a whole unit
would go to one actor (a big shard never shared by the pool, nor by the cluster's nodes), and the
driver would hear of its rows only when the unit is done. ``BLOCK_BYTES`` (4 MiB, or
``CORPUS_EMBED_BLOCK_BYTES``) keeps blocks small: the reader's blocks of a big unit spread over
every actor, and the run's progress moves every few MiB of rows. Each actor call stages one
Parquet part per unit it holds rows of, so a unit is published as about rows / ``batch_rows`` parts.

Embed and stage in one operator: the pool's actor (``StagingEmbeddingActor``) writes its own
output to staging and hands Ray only the writer records. A separate write operator cost a Ray
task per batch (scheduling, an object-store copy of the vectors, a worker's CPU), taken from the
embedding on a small machine (bench/README.md, "Levers"). Each actor takes two calls at once
(``max_concurrent_calls_per_actor=2``): its torch work runs on one thread of its own, one call
at a time (``actors.actor``), while the other call's input is fetched or its output written.

Read tasks: at most ``READ_TASKS_PER_ACTOR`` (one) per actor the pool may hold run at once
(``read_tasks``). A read task yields a block in far less time than an actor embeds it, so more
would only queue blocks; and each one Ray starts is a new worker process whose start-up (importing
Ray, pyarrow and this package) took the CPU from the actors loading their models. Left to Ray
Data's default (as many as the free CPUs allow, four at ``READ_TASK_CPUS``), a local run on 2
cores started four, and its actor's load stretched from ~5 s to ~9 s (bench/README.md, "Levers").

Length order: each block a reader yields (``read_block_rows`` rows, 1024 by default) is sorted by
text length before it leaves the read task (``length_sorted``). An actor call takes ``batch_rows``
consecutive rows, and sorts and batches only those: with the block sorted first, a call holds
texts of like length and its forward passes carry little padding, as ``encode`` gets by sorting
its whole input. Rows are matched by ``seq`` and counted, never by position (``actors.rows``), so
the order changes only where a unit's rows sit inside its published files.
"""
from __future__ import annotations

import json
import logging
import math
import os
import socket
import sys
import threading
import warnings
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from actors.actor import ActorConfig, EmbeddingActor
from pipeline.config import InputConfig, JobConfig, StorageConfig
from pipeline.errors import UserError
from pipeline.readers import read_unit
from pipeline.sink import write_parts
from pipeline.storage import Folder
from pipeline.units import Unit

READ_TASK_CPUS = 0.25
READ_TASKS_PER_ACTOR = 1
CALLS_PER_ACTOR = 2
SORT_BLOCKS_BY_LENGTH = True
BLOCK_BYTES = 4 * 1024 * 1024
BLOCK_BYTES_ENV = "CORPUS_EMBED_BLOCK_BYTES"
# A cluster that accepts the connection but never answers (a stale head) gives up after this long.
CONNECT_TIMEOUT_S = 60


class _RaysNotesOnOurChoices(logging.Filter):
    """Drops Ray's warnings about what this module chose on purpose, so a default run's stderr shows
    only what the user should read: the join runs on a thread (bounded by ``CONNECT_TIMEOUT_S``;
    the CLI sets its own SIGTERM handler), and Ray Data's progress bars are off unless ``verbose``."""

    NOTES = ("SIGTERM handler is not set", "Progress bars disabled", "Progress bars for operators disabled")
    # A run with fewer blocks than pool actors (a refresh of one small shard) is no mistake of the user's.
    FEW_INPUTS = "The minimum number of concurrent actors for"

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOTES)


_QUIET = _RaysNotesOnOurChoices()
_NOTED_BY = ("ray._private.worker", "ray.data._internal.progress")


class ClusterError(UserError):
    """The Ray cluster named by ``RAY_ADDRESS`` cannot be reached."""


def _gcs_address(address: str) -> str | None:
    """``host:port`` of the GCS a ``RAY_ADDRESS`` names (``ray://`` clients and ``auto`` resolved)."""
    if address == "auto":
        from ray._private.services import find_gcs_addresses  # noqa: PLC0415 - Ray's own lookup

        found = find_gcs_addresses()
        return next(iter(found), None)
    if address.startswith("ray://"):
        return None
    if "://" in address:
        return None
    return address


def _reachable(address: str, timeout: float = 3.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def ensure_ray(num_cpus: int | None = None, verbose: bool = False) -> None:
    """Join the cluster named by ``RAY_ADDRESS``, or start a new, quiet local Ray.

    Without ``RAY_ADDRESS`` a local Ray is always started (``address="local"``): Ray's own default
    would join whatever its ``ray_current_cluster`` file names, and a head killed without
    ``ray stop`` leaves that file behind, so the run would wait forever on a dead cluster. With
    ``RAY_ADDRESS`` the address is probed first and the connection is bounded by
    ``CONNECT_TIMEOUT_S``: a cluster that does not answer fails fast, naming the address.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    quiet_ray_logs(verbose)
    kwargs: dict[str, Any] = {"logging_level": logging.INFO if verbose else logging.WARNING,
                              "log_to_driver": verbose, "configure_logging": True}
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **kwargs)
    else:
        gcs = _gcs_address(address)
        if address == "auto" and gcs is None:
            raise ClusterError("RAY_ADDRESS=auto but no running Ray cluster was found on this machine; start one "
                               "(`ray start --head`) or unset RAY_ADDRESS to run on a local Ray")
        if gcs is not None and not _reachable(gcs):
            raise ClusterError(f"the Ray cluster at RAY_ADDRESS={address!r} ({gcs}) does not answer; start it, "
                               f"fix RAY_ADDRESS, or unset it to run on a local Ray")
        _init_with_deadline(ray, address, kwargs)
    quiet_ray_logs(verbose)


def quiet_ray_logs(verbose: bool) -> None:
    """Unless ``verbose``, no Ray INFO lines, and none of Ray's notes on what this module chose on
    purpose (see ``_RaysNotesOnOurChoices``); Ray's other warnings still show. Called when Ray is joined and
    when a dataset is built, since Ray may have been started by someone else (a test, a notebook)."""
    for name in _NOTED_BY:
        if verbose:
            logging.getLogger(name).removeFilter(_QUIET)
        else:
            logging.getLogger(name).addFilter(_QUIET)
    for name in ("ray", "ray.data", "ray.data._internal"):      # no INFO lines ("Dataset ... finished")
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    if not verbose:
        warnings.filterwarnings("ignore", message=_RaysNotesOnOurChoices.FEW_INPUTS, category=UserWarning)


def _init_with_deadline(ray: Any, address: str, kwargs: dict[str, Any]) -> None:
    failure: list[BaseException] = []

    def connect() -> None:
        try:
            ray.init(address=address, **kwargs)
        except BaseException as error:  # noqa: BLE001 - re-raised on the caller's thread
            failure.append(error)

    thread = threading.Thread(target=connect, name="corpus-embed-ray-connect", daemon=True)
    thread.start()
    thread.join(CONNECT_TIMEOUT_S)
    if thread.is_alive():
        raise ClusterError(f"the Ray cluster at RAY_ADDRESS={address!r} accepted the connection but did not answer "
                           f"within {CONNECT_TIMEOUT_S} s; check that its head is alive (`ray status`)")
    if failure:
        raise ClusterError(f"could not join the Ray cluster at RAY_ADDRESS={address!r}: "
                           f"{type(failure[0]).__name__}: {failure[0]}")


def alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [node for node in ray.nodes() if node.get("Alive")]


def actor_threads(config: JobConfig) -> int | None:
    """Torch threads per actor on a one-node Ray: the node's CPUs shared by the pool's actors.

    Ray's CPU numbers are logical: ``cpus_per_actor: 1`` on a 2-core machine would leave one core
    idle during a local run (the read tasks and Ray need little: a few percent of the actor's
    CPU time, see bench/README.md), and one actor with 2 threads embeds ~1.4x faster than with 1.
    On a cluster of several nodes the actors' placement is unknown, so each actor keeps
    ceil(cpus_per_actor) threads.
    """
    resources = config.resources
    own = max(1, math.ceil(resources.cpus_per_actor))
    nodes = alive_nodes()
    if len(nodes) != 1:
        return own
    node_cpus = int(nodes[0].get("Resources", {}).get("CPU", 0))
    return max(own, node_cpus // max(1, resources.max_actors))


class StagingEmbeddingActor(EmbeddingActor):
    """The pool's actor: embeds a batch (``EmbeddingActor``) and stages its rows (``sink.write_parts``)
    in the same call, returning only the writer records (see the module's docstring for why).

    The write runs on Ray's calling thread, outside the actor's torch thread, so that it overlaps
    the next call's embedding.
    """

    def __init__(self, config: ActorConfig, output: Folder, run_id: str, metadata: dict[str, str]):
        super().__init__(config)
        self.output, self.run_id, self.metadata = output, run_id, metadata

    def __call__(self, batch: pa.Table) -> pa.Table:
        return write_parts(super().__call__(batch), self.output, self.run_id, self.metadata)


def length_sorted(block: pa.Table) -> pa.Table:
    """The block's rows, shortest text first (stable; rows without text, rejects and ends, last)."""
    order = pc.array_sort_indices(pc.utf8_length(block.column("text")), null_placement="at_end")
    return block.take(order)


def _read_units(batch: pa.Table, input_config: dict[str, Any], storage: dict[str, Any], block_rows: int,
                sort_by_length: bool) -> Iterator[pa.Table]:
    source = InputConfig.model_validate(input_config)
    storage_config = StorageConfig.model_validate(storage)
    for encoded in batch.column("unit").to_pylist():
        for block in read_unit(Unit.from_dict(json.loads(encoded)), source, storage_config, block_rows):
            yield length_sorted(block) if sort_by_length else block


def read_tasks(max_actors: int) -> int:
    """How many read tasks run at once: ``READ_TASKS_PER_ACTOR`` per actor the pool may hold (see the
    module's docstring for why so few)."""
    return max(1, max_actors * READ_TASKS_PER_ACTOR)


def block_bytes() -> int:
    """Bytes per Ray Data block: ``CORPUS_EMBED_BLOCK_BYTES`` if it is a positive int, else ``BLOCK_BYTES``
    (a bad value is named on stderr and ignored: it changes how work is cut, never what is written)."""
    raw = os.environ.get(BLOCK_BYTES_ENV, "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    if raw:
        print(f"[corpus-embed] {BLOCK_BYTES_ENV}={raw!r} is not a positive number of bytes; using {BLOCK_BYTES}",
              file=sys.stderr, flush=True)
    return BLOCK_BYTES


def build_dataset(config: JobConfig, units: list[Unit], output: Folder, run_id: str, metadata: dict[str, str],
                  verbose: bool = False) -> Any:
    """The lazy Ray Dataset whose output rows are the staging writers' records."""
    import ray
    from ray.data import ActorPoolStrategy

    quiet_ray_logs(verbose)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = verbose
    context.target_max_block_size = block_bytes()     # see the module's docstring
    if hasattr(context, "print_on_execution_start"):
        context.print_on_execution_start = verbose
    resources = config.resources
    actor = ActorConfig(stack=config.stack_config(), pooling=config.token_pooling,
                        granularity=config.output.granularity, dtype=config.output.dtype,
                        keep_text=config.output.keep_text, precision=resources.precision,
                        max_batch_tokens=resources.max_batch_tokens, torch_threads=actor_threads(config))
    items = [{"unit": json.dumps(unit.to_dict())} for unit in units]
    dataset = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 1000)))
    dataset = dataset.map_batches(
        _read_units, batch_size=1, batch_format="pyarrow", num_cpus=READ_TASK_CPUS,
        compute=ray.data.TaskPoolStrategy(size=read_tasks(resources.max_actors)),
        fn_kwargs={"input_config": config.input.model_dump(), "storage": config.storage.model_dump(),
                   "block_rows": resources.read_block_rows, "sort_by_length": SORT_BLOCKS_BY_LENGTH},
    )
    sizes = ({"min_size": resources.actors[0], "max_size": resources.actors[1]} if isinstance(resources.actors, list)
             else {"size": resources.actors})
    pool = ActorPoolStrategy(**sizes, max_concurrent_calls_per_actor=CALLS_PER_ACTOR, enable_true_multi_threading=True)
    return dataset.map_batches(
        StagingEmbeddingActor, compute=pool, batch_size=resources.batch_rows, batch_format="pyarrow",
        fn_constructor_kwargs={"config": actor, "output": output, "run_id": run_id, "metadata": metadata},
        num_cpus=resources.cpus_per_actor, num_gpus=resources.gpus_per_actor or None,
    )
