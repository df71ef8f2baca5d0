"""A real multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``: a head node and worker
nodes, each its own raylet and object store), with this process connected to it as the driver."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.cluster_utils import Cluster

# Each node's object store. The model travels as ~110 MB of checkpoint bytes (InceptionResnetV1, fp32)
# and a model switch holds two for a moment; Ray spills to disk beyond this, it does not fail.
OBJECT_STORE_BYTES = 256 * 1024 * 1024
# A node that dies without a word is declared dead after this many missed 1-s health checks (Ray's default
# waits about half a minute, which a test of a crash would spend waiting).
HEALTH_CHECKS = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}


@dataclass
class LocalCluster:
    """``cluster.address`` is what ``DFF_RAY_ADDRESS`` takes; ``workers`` the nodes besides the head."""

    cluster: Cluster
    workers: list[Any] = field(default_factory=list)  # ray._private.node.Node

    @property
    def address(self) -> str:
        return self.cluster.address

    @property
    def head_node_id(self) -> str:
        return self.cluster.head_node.node_id

    def add_worker(self, num_cpus: int = 1) -> Any:
        node = self.cluster.add_node(num_cpus=num_cpus, object_store_memory=OBJECT_STORE_BYTES)
        self.cluster.wait_for_nodes()
        self.workers.append(node)
        return node

    def remove_worker(self, node_id: str) -> None:
        """Kill the worker node ``node_id`` (its raylet and every worker process on it), as a crash would."""
        node = next(n for n in self.workers if n.node_id == node_id)
        self.workers.remove(node)
        self.cluster.remove_node(node, allow_graceful=False)


@contextmanager
def local_cluster(worker_nodes: int = 1, cpus_per_node: int = 1, timeout_s: float = 60.0) -> Iterator[LocalCluster]:
    """A head node and ``worker_nodes`` more, ``cpus_per_node`` CPUs each; ``ray.init`` connects this
    process. Shut down (driver and nodes) at the end."""
    started = time.monotonic()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": cpus_per_node,
            "object_store_memory": OBJECT_STORE_BYTES,
            "_system_config": HEALTH_CHECKS,
        },
    )
    local = LocalCluster(cluster)
    try:
        for _ in range(worker_nodes):
            local.add_worker(cpus_per_node)
        ray.init(address=cluster.address, include_dashboard=False)
        while ray.cluster_resources().get("CPU", 0) < cpus_per_node * (worker_nodes + 1):
            assert time.monotonic() - started < timeout_s, "the Ray cluster did not come up in time"
            time.sleep(0.1)
        yield local
    finally:
        ray.shutdown()
        cluster.shutdown()


SCORE_TOL = 1e-6
BOX_TOL_PX = 1e-3  # MTCNN's boxes move by a few float32 steps between 1 and 2 torch threads


def close_to(a: Any, b: Any, where: str = "report") -> None:
    """``a == b`` with probabilities and scores to 1e-6 and face boxes to 1e-3 px. Measured: scores equal
    exactly; MTCNN's boxes differ by up to 3e-5 px (a few float32 steps), as the actor's torch runs on the
    one CPU it reserved and the local backend's on two, which sums in another order."""
    if isinstance(a, float) and isinstance(b, (float, int)):
        tol = BOX_TOL_PX if ".xyxy" in where else SCORE_TOL
        assert math.isclose(a, b, rel_tol=0, abs_tol=tol), f"{where}: {a} != {b}"
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            close_to(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{where}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            close_to(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"
