"""Where evaluator actors go: per-actor resources and how many to request.

:func:`resolve_resources` is the static answer (what fits the cluster as it is now, an error
when more is asked); :func:`plan_actors` is the elastic pool's request, which may exceed what
the cluster holds now (an autoscaler adds nodes for pending actors). Imports neither torch nor ray.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Optional

from drllm.distributed.config import PoolConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActorResources:
    """Resolved placement of the evaluator actors.

    Attributes:
        num_actors: actors to start.
        num_cpus: CPUs reserved per actor.
        num_gpus: GPUs reserved per actor (0 on CPU).
        num_threads: torch threads per actor.
        device: device handed to the evaluator (``"cuda"`` with GPUs, else ``None``: keep the
            model spec's).
    """

    num_actors: int
    num_cpus: float
    num_gpus: float
    num_threads: int
    device: Optional[str]


def resolve_resources(config: PoolConfig, cluster: Mapping[str, float]) -> ActorResources:
    """Decide actor count and resources from the config and ``ray.cluster_resources()``.

    Raises:
        ValueError: GPUs requested on a cluster without any, or more resources asked than the
            cluster has (the actors would pend forever).
    """
    gpus = float(cluster.get("GPU", 0.0))
    cpus = float(cluster.get("CPU", 0.0))
    if config.use_gpu is True and gpus <= 0:
        raise ValueError(
            "use_gpu=true but the Ray cluster has no GPU (ray.cluster_resources() lists none); "
            "set pool.use_gpu=null to use GPUs only when present, or start Ray on a GPU node"
        )
    use_gpu = gpus > 0 if config.use_gpu is None else config.use_gpu
    if use_gpu:
        per = config.num_gpus_per_actor
        count = config.num_actors or max(1, int(gpus // per))
        if count * per > gpus + 1e-9:
            raise ValueError(
                f"{count} evaluator actors x {per:g} GPU need {count * per:g} GPUs but the "
                f"cluster has {gpus:g}; lower pool.num_actors"
            )
        return ActorResources(count, float(config.num_cpus_per_actor), per,
                              config.threads_per_actor, "cuda")
    per_cpu = float(config.num_cpus_per_actor)
    if config.num_actors is not None:
        count = config.num_actors
    else:
        count = max(1, int(cpus // per_cpu)) if per_cpu > 0 else 1
    if count * per_cpu > cpus + 1e-9:
        raise ValueError(
            f"{count} evaluator actors x {per_cpu:g} CPUs need {count * per_cpu:g} CPUs but the "
            f"cluster has {cpus:g}; lower pool.num_actors or pool.num_cpus_per_actor"
        )
    return ActorResources(count, per_cpu, 0.0, config.threads_per_actor, None)


@dataclass(frozen=True)
class ActorPlan:
    """What the elastic pool asks Ray for.

    Attributes:
        resources: per-actor resources (count ignored: the initial request).
        use_gpu: whether the actors hold GPUs.
        initial: actors requested at start.
        max_actors: actors at most (``None``: follow the cluster's resources as nodes join).
        min_actors: actors that must be ready before the search starts.
    """

    resources: ActorResources
    use_gpu: bool
    initial: int
    max_actors: Optional[int]
    min_actors: int


def plan_actors(config: PoolConfig, cluster: Mapping[str, float]) -> ActorPlan:
    """The elastic pool's request: never more than asked, never fewer than it needs to start,
    and -- unlike :func:`resolve_resources` -- no error when the cluster does not hold it *yet*
    (an autoscaler adds nodes for pending actors)."""
    gpus = float(cluster.get("GPU", 0.0))
    use_gpu = gpus > 0 if config.use_gpu is None else bool(config.use_gpu)
    low, high = config.actor_bounds
    if use_gpu:
        res = ActorResources(0, float(config.num_cpus_per_actor), config.num_gpus_per_actor,
                             config.threads_per_actor, "cuda")
    else:
        res = ActorResources(0, float(config.num_cpus_per_actor), 0.0,
                             config.threads_per_actor, None)
        if config.use_gpu is None:
            # A laptop run on CPU is the normal case (info, not a warning); on a cluster,
            # the message says how to wait for GPU nodes instead.
            logger.info(
                "the Ray cluster has no GPU now: evaluators run on CPU. On an autoscaling "
                "cluster whose GPU nodes have not joined yet, set pool.use_gpu=true: the pool "
                "then waits for GPU nodes (pool.gpu_wait_s) instead of running on CPU")
    # With a bound, request it all now: pending actors are the demand that makes an
    # autoscaler add nodes. Without one, start with what the cluster holds and follow it.
    initial = high if high is not None else max(low, fitting_actors(res, cluster))
    return ActorPlan(res, use_gpu, initial, high, low)


def fitting_actors(res: ActorResources, cluster: Mapping[str, float]) -> int:
    """Actors of ``res`` that the cluster's total resources hold (at least 1)."""
    if res.num_gpus > 0:
        return max(1, int(float(cluster.get("GPU", 0.0)) // res.num_gpus + 1e-9))
    if res.num_cpus <= 0:
        return 1
    return max(1, int(float(cluster.get("CPU", 0.0)) // res.num_cpus + 1e-9))


