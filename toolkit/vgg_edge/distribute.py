"""Where training runs: one device, the local GPUs, or several machines (`train --strategy`).

`one` trains on TensorFlow's default device. `mirrored` is `tf.distribute.MirroredStrategy` over the
local GPUs (or the CPU when there is none). `multi-worker` is `tf.distribute.MultiWorkerMirroredStrategy`
across processes or machines, configured by `TF_CONFIG`, the variable Kubeflow's TFJob, Ray Train's
TensorflowTrainer and the cloud trainers set: every worker runs the same `vgg-edge train` command
with its own `TF_CONFIG`; gradients are summed across all of them after every batch, so every worker
holds the same weights. `auto` picks multi-worker when `TF_CONFIG` names more than one task, mirrored
when there is more than one GPU, else one.

The chief (the `chief` task, or worker 0 when there is none) is the only process that writes the run
directory; the other workers keep their resume state and feature cache in their own folders.

Keras 3's `fit()` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), so training uses
its own loop on tf.distribute's public API (`strategy.run`, `strategy.reduce`; loop.py) under every
strategy; tests/test_distribute.py notes when `fit()` works again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from .errors import VggEdgeError

STRATEGIES = ("auto", "one", "mirrored", "multi-worker")
TASK_TYPES = ("chief", "worker")


@dataclass(frozen=True)
class Cluster:
    """What TF_CONFIG says about this process: its task and how many take part."""

    task_type: str
    index: int
    tasks: int
    has_chief: bool

    @property
    def is_chief(self) -> bool:
        return self.task_type == "chief" or (not self.has_chief and self.task_type == "worker" and self.index == 0)

    @property
    def name(self) -> str:
        return f"{self.task_type} {self.index}"


def cluster_from_env() -> Cluster | None:
    """TF_CONFIG, read and checked; None when it is not set."""
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return None
    fix = 'set it as {"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}'
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        task_type, index = task["type"], int(task["index"])
        unknown = set(cluster) - set(TASK_TYPES)
        if unknown or task_type not in TASK_TYPES or not 0 <= index < len(cluster.get(task_type, [])):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise VggEdgeError(f"TF_CONFIG: not a cluster of chief and worker tasks with this task in it; {fix}") from None
    return Cluster(task_type, index, sum(len(cluster[t]) for t in cluster), "chief" in cluster)


@dataclass
class Placement:
    """The chosen strategy and this process's part in it."""

    strategy: object  # a tf.distribute.Strategy
    name: str  # one of STRATEGIES but auto
    why: str
    cluster: Cluster | None = None

    @property
    def is_chief(self) -> bool:
        return self.cluster is None or self.cluster.is_chief

    @property
    def worker(self) -> str | None:
        """This process's name when it is a worker other than the chief (it writes nothing beside the run); else None."""
        return None if self.is_chief else self.cluster.name

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    def describe(self) -> str:
        where = f", this process is {self.cluster.name} of {self.cluster.tasks}{' (chief)' if self.is_chief else ''}" if self.cluster else ""
        return f"{self.name}, {self.replicas} replica{'s' if self.replicas > 1 else ''} ({self.why}{where})"

    def agree(self, value: int) -> int:
        """The smallest of every worker's `value`: where all of them can go on from after an interruption
        (workers may have saved one epoch apart). Every worker must call it at the same point."""
        if self.cluster is None:
            return value
        import tensorflow as tf

        mine = self.strategy.run(lambda: tf.constant([value], tf.int64))
        return int(tf.reduce_min(self.strategy.gather(mine, axis=0)).numpy())

    def record(self) -> dict:
        return {"strategy": self.name, "replicas": self.replicas, "why": self.why,
                "workers": self.cluster.tasks if self.cluster else 1, "chief": self.is_chief}


def check(requested: str) -> Cluster | None:
    """Refuse a strategy that cannot start, before anything else runs; returns TF_CONFIG's cluster."""
    if requested not in STRATEGIES:
        raise VggEdgeError(f"--strategy {requested}: use one of {', '.join(STRATEGIES)}")
    cluster = cluster_from_env()
    if requested == "multi-worker" and cluster is None:
        raise VggEdgeError("--strategy multi-worker: TF_CONFIG is not set; set it on every worker (README: 'More than one machine')")
    return cluster


def place(requested: str) -> Placement:
    """The strategy `requested` (one of STRATEGIES) resolves to; multi-worker connects to the other workers
    (the call returns once every task in TF_CONFIG has started)."""
    import tensorflow as tf

    cluster = check(requested)
    gpus = tf.config.list_physical_devices("GPU")
    if requested == "auto":
        if cluster and cluster.tasks > 1:
            requested, why = "multi-worker", f"auto: TF_CONFIG names {cluster.tasks} tasks"
        elif len(gpus) > 1:
            requested, why = "mirrored", f"auto: {len(gpus)} GPUs"
        else:
            requested, why = "one", f"auto: {'one GPU' if gpus else 'no GPU'}, no TF_CONFIG cluster"
    else:
        why = "as requested"
    if requested == "multi-worker":
        return Placement(tf.distribute.MultiWorkerMirroredStrategy(), requested, why, cluster)
    if requested == "mirrored":
        return Placement(tf.distribute.MirroredStrategy(), requested, why)
    return Placement(tf.distribute.get_strategy(), "one", why)


def loopback_tf_configs(workers: int) -> list[str]:
    """One TF_CONFIG per worker for a cluster of `workers` processes on 127.0.0.1 (free ports): for trying
    multi-worker training on one machine, as the tests and benchmarks do."""
    import socket

    sockets = [socket.socket() for _ in range(workers)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    hosts = [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    for s in sockets:
        s.close()
    return [json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}}) for i in range(workers)]


def weights_digest(model) -> str:
    """sha256 of a model's weights: the workers of one multi-worker run print the same one."""
    import hashlib

    import numpy as np

    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()
