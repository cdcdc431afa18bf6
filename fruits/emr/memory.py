"""Spark's executor and driver sizes, checked against an instance type, written
into the request.

YARN kills a container that outgrows its memory request, and a fruits task's
Python worker lives outside the JVM heap: an ONNX Runtime session and its batch
buffers, about 1 GB resident at its peak (bench/memory.py: 0.97-0.99 GB per
worker). So every executor's memory overhead includes PYTHON_MB_PER_TASK for
each of its tasks, next to a small heap (features are never collected; the
driver ran 10,000 images in 512 MB).

Not ``spark.executor.pyspark.memory``: PySpark turns it into an RLIMIT_AS on
each worker, a limit on virtual memory, and an ONNX Runtime worker reserves
about 1.4 GB of address space for 0.94 GB resident (measured at batch 64), so
it would fail with MemoryError under a 1,280 MB limit that its real use fits.

Executors have 2 cores: on an m5.xlarge (12 GB for YARN) two of them fill a node
and still leave room for the driver's container, which runs on a core node in
cluster mode; one 4-core executor per node would leave the driver's node with
no executor at all. `executors_per_node` says how many fit.
"""

from __future__ import annotations

import json
from pathlib import Path

from fruits.config import ConfigError

INSTANCES = Path(__file__).resolve().parents[2] / "env" / "instances.json"
EXECUTOR_CORES = 2
PYTHON_MB_PER_TASK = 1280  # measured peak 0.99 GB per worker, plus a quarter
EXECUTOR_HEAP_MB = 1536
EXECUTOR_OVERHEAD_MB = 512
DRIVER_MB = 2048
DRIVER_OVERHEAD_MB = 512
EXECUTOR_OVERHEAD_WITH_PYTHON_MB = EXECUTOR_OVERHEAD_MB + EXECUTOR_CORES * PYTHON_MB_PER_TASK
EXECUTOR_CONTAINER_MB = EXECUTOR_HEAP_MB + EXECUTOR_OVERHEAD_WITH_PYTHON_MB


def instance(instance_type: str) -> dict:
    types = json.loads(INSTANCES.read_text())["types"]
    if instance_type not in types:
        raise ConfigError(
            f"no YARN memory figure for {instance_type} in {INSTANCES.name} (has: {', '.join(types)}): add it there"
        )
    return types[instance_type]


def executors_per_node(instance_type: str) -> int:
    """How many executors YARN can place on one node of this type."""
    node = instance(instance_type)
    fitting = min(node["vcpus"] // EXECUTOR_CORES, node["yarn_mb"] // EXECUTOR_CONTAINER_MB)
    if fitting < 1:
        raise ConfigError(
            f"{instance_type} ({node['vcpus']} vCPUs, {node['yarn_mb']} MB for YARN) cannot hold one executor "
            f"of {EXECUTOR_CORES} tasks ({EXECUTOR_CONTAINER_MB} MB): choose a larger type"
        )
    return fitting


def spark_memory(worker_types: list[str]) -> dict[str, str]:
    """spark-defaults properties, after checking every worker type holds an executor."""
    for instance_type in worker_types:
        executors_per_node(instance_type)
    return {
        "spark.executor.cores": str(EXECUTOR_CORES),
        "spark.executor.memory": f"{EXECUTOR_HEAP_MB}m",
        "spark.executor.memoryOverhead": f"{EXECUTOR_OVERHEAD_WITH_PYTHON_MB}m",
        "spark.driver.memory": f"{DRIVER_MB}m",
        "spark.driver.memoryOverhead": f"{DRIVER_OVERHEAD_MB}m",
    }
