"""The Ray Data graph: units → read tasks → embedding actor pool → staging writers.

Kept apart from the run loop so the loop stays about planning and committing, and so that the
graph's resource settings are in one place.
"""
from __future__ import annotations

import json
import logging
import math
import os
from typing import Any, Iterator

import pyarrow as pa

from pipeline.config import JobConfig
from pipeline.readers import read_unit
from pipeline.sink import write_parts
from pipeline.units import Unit

READ_TASK_CPUS = 0.25
WRITE_TASK_CPUS = 0.25


def ensure_ray(num_cpus: int | None = None) -> None:
    """Connect to the cluster named by ``RAY_ADDRESS``, or start a quiet local Ray."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], **kwargs)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, **kwargs)


def actor_threads(resources: Any) -> int | None:
    """Torch threads per actor on a one-node Ray: the node's CPUs shared by the pool's actors.

    Ray's CPU numbers are logical: ``cpus_per_actor: 1`` on a 2-core machine would leave one core
    idle during a local run (the read and write tasks need little: a few percent of the actor's
    CPU time, see bench/README.md), and one actor with 2 threads embeds ~1.4x faster than with 1.
    On a cluster of several nodes the actors' placement is unknown, so the actor keeps
    ceil(cpus_per_actor) threads (None here).
    """
    import ray

    nodes = [node for node in ray.nodes() if node.get("Alive")]
    if len(nodes) != 1:
        return None
    node_cpus = int(nodes[0].get("Resources", {}).get("CPU", 0))
    most_actors = resources.actors[1] if isinstance(resources.actors, list) else resources.actors
    own = max(1, math.ceil(resources.cpus_per_actor))
    return max(own, node_cpus // max(1, most_actors))


def _read_units(batch: pa.Table, input_config: dict[str, Any], storage: dict[str, Any], block_rows: int) -> Iterator[pa.Table]:
    from pipeline.config import InputConfig, StorageConfig

    input_cfg = InputConfig.model_validate(input_config)
    storage_cfg = StorageConfig.model_validate(storage)
    for encoded in batch.column("unit").to_pylist():
        yield from read_unit(Unit.from_dict(json.loads(encoded)), input_cfg, storage_cfg, block_rows)


def build_dataset(config: JobConfig, units: list[Unit], run_id: str, metadata: dict[str, str]) -> Any:
    """The lazy Ray Dataset whose output rows are the staging writers' records."""
    import ray
    from ray.data import ActorPoolStrategy

    from actors.actor import EmbeddingActor

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = os.environ.get("CORPUS_EMBED_PROGRESS_BARS", "1") != "0"
    resources = config.resources
    storage = config.storage.model_dump()
    items = [{"unit": json.dumps(unit.to_dict())} for unit in units]
    dataset = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 1000)))
    dataset = dataset.map_batches(
        _read_units, batch_size=1, batch_format="pyarrow", num_cpus=READ_TASK_CPUS,
        fn_kwargs={"input_config": config.input.model_dump(), "storage": storage, "block_rows": resources.read_block_rows},
    )
    if isinstance(resources.actors, list):
        pool = ActorPoolStrategy(min_size=resources.actors[0], max_size=resources.actors[1])
    else:
        pool = ActorPoolStrategy(size=resources.actors)
    dataset = dataset.map_batches(
        EmbeddingActor, fn_constructor_kwargs={"job": config.model_dump(), "torch_threads": actor_threads(resources)},
        compute=pool,
        batch_size=resources.batch_rows, batch_format="pyarrow",
        num_cpus=resources.cpus_per_actor, num_gpus=resources.gpus_per_actor or None,
    )
    return dataset.map_batches(
        write_parts, batch_size=None, batch_format="pyarrow", num_cpus=WRITE_TASK_CPUS,
        fn_kwargs={"output_url": config.output.path, "storage": storage, "run_id": run_id, "metadata": metadata},
    )
