"""Evaluator actors on Ray: resources, creation, calls, and actor-death detection.

:class:`RayTransport` is the :class:`~drllm.distributed.pool.Transport` the search job uses:
it starts named async :class:`~drllm.distributed.actor.EvaluatorActor` actors
(``{name_prefix}-{i}`` in the pool's namespace) and turns Ray's answers into
:class:`~drllm.distributed.pool.CallDone` reports. Placement follows the cluster:

* GPUs in the cluster (or ``use_gpu=True``): one actor per GPU (``num_gpus_per_actor``), the
  model on ``cuda``. ``use_gpu=True`` on a CPU-only cluster fails at once (an actor asking for
  a GPU there would pend forever).
* CPU only: ``num_actors`` actors (default: as many as the CPUs allow), each reserving
  ``num_cpus_per_actor`` CPUs and running that many torch threads.

Actors restart up to ``max_restarts`` times; calls in flight on a dying actor fail and the
:class:`~drllm.distributed.pool.EvaluationPool` requeues their requests.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from drllm.distributed.actor import EvaluatorActor
from drllm.distributed.config import PoolConfig
from drllm.distributed.pool import CallDone, EvaluationPool, Transport
from drllm.distributed.evaluator import EvaluatorInfo, EvaluatorSpec
from drllm.distributed.metrics import SearchMetrics
from drllm.types import EvalRequest

logger = logging.getLogger(__name__)

NAME_RELEASE_TIMEOUT_S = 15.0
SHUTDOWN_GRACE_S = 5.0


@dataclass(frozen=True)
class ActorResources:
    """Resolved placement of the evaluator actors.

    Attributes:
        num_actors: actors to start.
        num_cpus: CPUs reserved per actor.
        num_gpus: GPUs reserved per actor (0 on CPU).
        num_threads: torch threads per actor.
        device: device handed to the backend (``"cuda"`` with GPUs, else ``None``: keep the
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


def _actor_state(actor: Any) -> Optional[str]:
    """GCS state of an actor (``ALIVE``, ``RESTARTING``, ``DEAD`` ...), or None if unknown."""
    try:
        from ray._private.state import state as gcs_state

        info = gcs_state.actor_table(actor._actor_id.hex())
        return info.get("State") if info else None
    except Exception:  # noqa: BLE001 - private API; fall back to the exception type
        return None


class RayTransport(Transport):
    """Evaluator actors on the connected Ray cluster.

    Args:
        spec: the backend every actor builds.
        config: actor count, resources, batching, restarts, names.
        ready_timeout_s: how long to wait for all actors to load their model (seconds).
        metrics_model: ``model`` tag of the actors' metrics (None: each backend's model id).
    """

    def __init__(
        self,
        spec: EvaluatorSpec,
        config: PoolConfig,
        *,
        ready_timeout_s: float = 1800.0,
        metrics_model: Optional[str] = None,
    ) -> None:
        self.spec = spec
        self.config = config
        self.ready_timeout_s = float(ready_timeout_s)
        self.metrics_model = metrics_model
        self.resources: Optional[ActorResources] = None
        self.actors: list[Any] = []
        self._refs: dict[Any, tuple[int, int, float]] = {}

    @property
    def num_workers(self) -> int:
        return len(self.actors)

    def actor_name(self, index: int) -> str:
        return f"{self.config.name_prefix}-{index}"

    # ------------------------------------------------------------------ start / stop

    def start(self) -> EvaluatorInfo:
        import ray

        if not ray.is_initialized():
            raise RuntimeError(
                "Ray is not initialized; call drllm.cluster.connect() (or ray.init) first"
            )
        self.resources = res = resolve_resources(self.config, ray.cluster_resources())
        logger.info("starting %d evaluator actors (%g CPU, %g GPU, %d threads each) in "
                    "namespace %r", res.num_actors, res.num_cpus, res.num_gpus, res.num_threads,
                    self.config.namespace)
        remote_cls = ray.remote(EvaluatorActor)
        for i in range(res.num_actors):
            self._wait_name_free(self.actor_name(i))
            self.actors.append(remote_cls.options(
                name=self.actor_name(i),
                namespace=self.config.namespace,
                num_cpus=res.num_cpus,
                num_gpus=res.num_gpus,
                max_restarts=self.config.max_restarts,
                max_task_retries=0,
            ).remote(
                i, self.spec, num_threads=res.num_threads, device=res.device,
                max_batch_size=self.config.max_batch_size,
                batch_wait_ms=self.config.batch_wait_ms,
                metrics_model=self.metrics_model,
            ))
        try:
            infos = self._wait_ready()
        except BaseException:
            self.shutdown()
            raise
        if len(set(infos)) != 1:
            self.shutdown()
            raise RuntimeError(
                f"evaluator actors disagree on the model: {sorted(set(map(str, infos)))}"
            )
        return infos[0]

    def _wait_name_free(self, name: str) -> None:
        """A previous driver's actor of that name may still be shutting down; wait a little."""
        import ray

        deadline = time.monotonic() + NAME_RELEASE_TIMEOUT_S
        while True:
            try:
                ray.get_actor(name, namespace=self.config.namespace)
            except ValueError:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"an actor named {name!r} already exists in Ray namespace "
                    f"{self.config.namespace!r}: another search job is running on this cluster; "
                    "give this one another ray.namespace (or pool.name_prefix)"
                )
            time.sleep(0.5)

    def _wait_ready(self) -> list[EvaluatorInfo]:
        import ray

        refs = [a.info.remote() for a in self.actors]
        start = time.monotonic()
        pending = list(refs)
        while pending:
            waited = time.monotonic() - start
            if waited > self.ready_timeout_s:
                raise TimeoutError(
                    f"{len(pending)} of {len(refs)} evaluator actors not ready after "
                    f"{waited:.0f} s (cluster free resources: {ray.available_resources()}); "
                    "are the requested CPUs/GPUs available, and does the model load?"
                )
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=30.0)
            if pending:
                logger.info("waiting for %d evaluator actors to load the model (%.0f s)",
                            len(pending), time.monotonic() - start)
        try:
            return list(ray.get(refs))
        except ray.exceptions.RayActorError as err:
            raise RuntimeError(f"an evaluator actor failed to start: {err}") from err

    def shutdown(self) -> None:
        import ray

        if self.actors:  # let each actor stop its batcher cleanly, then kill it
            try:
                ray.wait([a.close.remote() for a in self.actors], num_returns=len(self.actors),
                         timeout=SHUTDOWN_GRACE_S)
            except Exception:  # noqa: BLE001 - dead actors cannot close; kill them anyway
                logger.debug("closing evaluator actors failed", exc_info=True)
        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already dead
                pass
        self._refs.clear()

    # ------------------------------------------------------------------ calls

    def call(self, worker: int, call_id: int, requests: tuple[EvalRequest, ...]) -> None:
        ref = self.actors[worker].evaluate.remote(list(requests))
        self._refs[ref] = (call_id, worker, time.perf_counter())

    def wait(self, timeout_s: float) -> list[CallDone]:
        import ray

        if not self._refs:
            return []
        refs = list(self._refs)
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout_s)
        if not ready:
            return []
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        return [self._collect(ref) for ref in ready]

    def _collect(self, ref: Any) -> CallDone:
        import ray
        from ray.exceptions import RayActorError, RayError, RayTaskError

        call_id, worker, sent = self._refs.pop(ref)
        try:
            outcomes = ray.get(ref)
        except RayActorError as err:
            state = _actor_state(self.actors[worker])
            gone = state == "DEAD"
            logger.warning("evaluator actor %s lost a call (%s; state %s)",
                           self.actor_name(worker), type(err).__name__, state)
            return CallDone(call_id, worker, worker_lost=True, worker_gone=gone)
        except RayTaskError as err:
            cause = err.cause if getattr(err, "cause", None) is not None else err
            return CallDone(call_id, worker, error=f"{type(cause).__name__}: {cause}",
                            seconds=time.perf_counter() - sent)
        except RayError as err:  # e.g. the result object was lost: retry its requests
            return CallDone(call_id, worker, error=f"{type(err).__name__}: {err}",
                            seconds=time.perf_counter() - sent)
        return CallDone(call_id, worker, tuple(outcomes), seconds=time.perf_counter() - sent)


def create_pool(
    spec: EvaluatorSpec,
    config: PoolConfig,
    *,
    enable_metrics: bool = True,
    ready_timeout_s: float = 1800.0,
) -> EvaluationPool:
    """Start evaluator actors on the connected Ray cluster and wrap them in a pool.

    Args:
        spec: the backend every actor builds.
        config: actors, resources, batching, fault tolerance.
        enable_metrics: record the pool's metrics (tagged with the model id the actors
            report); the actors record theirs in any case.
        ready_timeout_s: how long to wait for the actors to load the model (seconds).

    Returns:
        A started :class:`EvaluationPool`; close it (or use ``with``) to stop the actors.
    """
    transport = RayTransport(spec, config, ready_timeout_s=ready_timeout_s)
    pool = EvaluationPool(
        transport,
        max_batch_size=config.max_batch_size,
        max_in_flight_per_worker=config.max_in_flight_per_actor,
        max_request_retries=config.max_request_retries,
    )
    info = pool.start()
    if enable_metrics:
        pool.metrics = SearchMetrics(info.model_id)
    return pool
