"""Evaluator actors on Ray: an elastic pool, calls, actor-death and hang handling.

:class:`RayTransport` is the :class:`~drllm.distributed.transport.Transport` the search job
uses: it requests named async :class:`~drllm.distributed.actor.EvaluatorActor` actors
(``{name_prefix}-{i}`` in the pool's namespace) as :func:`~drllm.distributed.placement.plan_actors`
says, and turns Ray's answers into :class:`~drllm.distributed.transport.Answered` and
:class:`~drllm.distributed.transport.WorkerLost` reports.

* **Elastic**: an actor is usable as soon as it answers its ``info`` probe (placed, model
  loaded); the search starts once ``min_actors`` are. With ``max_actors`` every actor is
  requested up front (pending actors are what makes an autoscaler add nodes); without it the
  pool follows the cluster's resources, adding actors every ``scale_check_s`` as nodes join.
* **GPUs are never swapped for CPUs**: a GPU pool with no actor up after ``gpu_wait_s`` fails
  with an error naming the missing GPUs.
* **Streaming**: :meth:`RayTransport.send` is one ``submit`` call (it returns at once); one
  ``collect`` call stays outstanding per actor holding requests and comes back with every
  request finished meanwhile (:mod:`drllm.distributed.actor`), then is sent again.
* **Faults**: actors restart up to ``max_restarts`` times (a removed node's actors are placed
  elsewhere and probed again); a dying actor's calls fail and it is reported lost (the pool
  requeues what it held); :meth:`RayTransport.kill` kills a hung actor (the pool's
  ``call_timeout_s``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

from drllm.distributed.actor import EvaluatorActor
from drllm.distributed.config import PoolConfig
from drllm.distributed.placement import (
    ActorPlan,
    ActorResources,
    fitting_actors,
    plan_actors,
    resolve_resources,
)
from drllm.distributed.evaluator import EvalError, EvaluatorInfo, EvaluatorSpec
from drllm.distributed.transport import Answered, Report, Sent, Transport, WorkerLost

logger = logging.getLogger(__name__)

NAME_RELEASE_TIMEOUT_S = 15.0
REPROBE_S = 1.0  # wait before asking a restarting actor again
SHUTDOWN_GRACE_S = 5.0


def _actor_state(actor: Any) -> Optional[str]:
    """GCS state of an actor (``ALIVE``, ``RESTARTING``, ``DEAD`` ...), or None if unknown."""
    try:
        from ray._private.state import state as gcs_state

        info = gcs_state.actor_table(actor._actor_id.hex())
        return info.get("State") if info else None
    except Exception:  # noqa: BLE001 - private API; fall back to the exception type
        return None


class RayTransport(Transport):
    """Elastic pool of evaluator actors on the connected Ray cluster (module docstring).

    Args:
        spec: the evaluator every actor builds.
        config: actor bounds, resources, batching, restarts, names, deadlines.
        ready_timeout_s: how long the pool may have no ready actor (model loading, CPU
            actors being placed) before it fails (seconds).
        metrics_model: ``model`` tag of the actors' metrics (None: each evaluator's model id).
        clock: monotonic clock in seconds.
    """

    def __init__(
        self,
        spec: EvaluatorSpec,
        config: PoolConfig,
        *,
        ready_timeout_s: float = 1800.0,
        metrics_model: Optional[str] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self.config = config
        self.ready_timeout_s = float(ready_timeout_s)
        self.metrics_model = metrics_model
        self.plan: Optional[ActorPlan] = None
        self.resources: Optional[ActorResources] = None
        self.actors: list[Any] = []
        self.info: Optional[EvaluatorInfo] = None
        self._clock = clock
        self._submits: dict[Any, tuple[int, tuple[int, ...]]] = {}  # ref -> worker, ids
        self._collects: dict[Any, int] = {}  # the outstanding collect of each worker
        self._held: dict[int, int] = {}  # worker -> requests sent and not answered
        self._probes: dict[Any, int] = {}
        self._reprobe_at: dict[int, float] = {}
        self._ready: set[int] = set()
        self._gone: set[int] = set()
        self._last_scale = 0.0
        self._unready_since: Optional[float] = None

    @property
    def num_workers(self) -> int:
        return len(self.actors)

    def actor_name(self, index: int) -> str:
        return f"{self.config.name_prefix}-{index}"

    def ready_workers(self) -> list[int]:
        return sorted(self._ready)

    @property
    def pending_workers(self) -> int:
        return len(self.actors) - len(self._ready) - len(self._gone - self._ready)

    # ------------------------------------------------------------------ start / grow / stop

    def start(self) -> EvaluatorInfo:
        import ray

        if not ray.is_initialized():
            raise RuntimeError(
                "Ray is not initialized; call drllm.cluster.connect() (or ray.init) first"
            )
        self.plan = plan = plan_actors(self.config, ray.cluster_resources())
        self.resources = dataclasses.replace(plan.resources, num_actors=plan.initial)
        res = plan.resources
        logger.info("requesting %d evaluator actors (%g CPU, %g GPU, %d threads each; at "
                    "most %s, %d to start) in namespace %r", plan.initial, res.num_cpus,
                    res.num_gpus, res.num_threads, plan.max_actors or "as the cluster grows",
                    plan.min_actors, self.config.namespace)
        try:
            for _ in range(plan.initial):
                self._add_actor()
            self._last_scale = self._clock()
            self._wait_started()
        except BaseException:
            self.shutdown()
            raise
        assert self.info is not None
        return self.info

    def _add_actor(self) -> None:
        import ray

        index = len(self.actors)
        res = self.plan.resources
        self._wait_name_free(self.actor_name(index))
        actor = ray.remote(EvaluatorActor).options(
            name=self.actor_name(index),
            namespace=self.config.namespace,
            num_cpus=res.num_cpus,
            num_gpus=res.num_gpus,
            max_restarts=self.config.max_restarts,
            max_task_retries=0,
        ).remote(
            index, self.spec, num_threads=res.num_threads, device=res.device,
            metrics_model=self.metrics_model,
        )
        self.actors.append(actor)
        self._probe(index)

    def _probe(self, worker: int) -> None:
        """Ask ``worker`` for its info; it is ready when that answers (placed, model loaded)."""
        self._ready.discard(worker)
        self._probes[self.actors[worker].info.remote()] = worker

    def _deadline(self) -> float:
        return self.config.gpu_wait_s if self.plan.use_gpu else self.ready_timeout_s

    def _wait_started(self) -> None:
        start = self._clock()
        last_note = start
        while len(self._ready) < self.plan.min_actors:
            self._check_deadline(start)
            self._poll_probes(timeout_s=min(5.0, self.config.scale_check_s))
            self.maintain_probes()
            if self._clock() - last_note >= 30.0:
                last_note = self._clock()
                logger.info("waiting for evaluator actors: %d ready of %d needed, %d pending "
                            "(%.0f s)", len(self._ready), self.plan.min_actors,
                            self.pending_workers, last_note - start)
            if not self._probes and not self._reprobe_at and len(self._ready) < self.plan.min_actors:
                raise RuntimeError(
                    f"evaluator actors failed to start: {len(self._gone)} of "
                    f"{len(self.actors)} died (see the actor logs above); "
                    f"{len(self._ready)} ready, {self.plan.min_actors} needed"
                )

    def _check_deadline(self, since: float) -> None:
        import ray

        waited = self._clock() - since
        if waited <= self._deadline():
            return
        if self.plan.use_gpu:
            raise TimeoutError(
                f"no GPU evaluator actor ({self.plan.resources.num_gpus:g} GPU each) was placed "
                f"and loaded within {self._deadline():.0f} s (pool.gpu_wait_s): the cluster "
                f"has {ray.cluster_resources().get('GPU', 0):g} GPUs, "
                f"{ray.available_resources().get('GPU', 0):g} free. The autoscaler did not "
                "add GPU nodes (check `ray status`, the GPU node type's max_workers / KubeRay "
                "maxReplicas) or the model does not load; GPUs are never replaced by CPUs: "
                "set pool.use_gpu=false to evaluate on CPU"
            )
        raise TimeoutError(
            f"{self.pending_workers} of {len(self.actors)} evaluator actors not ready after "
            f"{waited:.0f} s and none is (cluster free resources: {ray.available_resources()}); "
            "are the requested CPUs/GPUs available, and does the model load?"
        )

    def _poll_probes(self, timeout_s: float) -> None:
        import ray

        if not self._probes:
            return
        done, _ = ray.wait(list(self._probes), num_returns=len(self._probes), timeout=timeout_s)
        for ref in done:
            self._settle_probe(ref, self._probes.pop(ref))

    def _settle_probe(self, ref: Any, worker: int) -> None:
        import ray

        try:
            info = ray.get(ref)
        except ray.exceptions.RayError as err:
            if _actor_state(self.actors[worker]) == "DEAD":
                logger.error("evaluator actor %s failed to start: %s", self.actor_name(worker),
                             err)
                self._gone.add(worker)
            else:  # restarting (its node went away, or killed): ask again in a moment
                self._reprobe_at[worker] = self._clock() + REPROBE_S
            return
        if self.info is None:
            self.info = info
        elif info != self.info:
            logger.error("evaluator actor %s loaded %s, but the pool evaluates %s; dropping it",
                         self.actor_name(worker), info, self.info)
            self._gone.add(worker)
            ray.kill(self.actors[worker], no_restart=True)
            return
        if worker not in self._ready:
            self._ready.add(worker)
            logger.info("evaluator actor %s is up (%d ready, %d pending)",
                        self.actor_name(worker), len(self._ready), self.pending_workers)

    def maintain_probes(self) -> None:
        """Settle answered probes; probe again the actors whose restart was awaited."""
        self._poll_probes(timeout_s=0)
        now = self._clock()
        for worker in [w for w, at in self._reprobe_at.items() if at <= now]:
            del self._reprobe_at[worker]
            self._probe(worker)

    def maintain(self) -> None:
        """Notice placed actors, add actors for joined nodes, fail on a missed deadline."""
        import ray

        self.maintain_probes()
        if self._ready:
            self._unready_since = None
        elif self._unready_since is None:
            self._unready_since = self._clock()
        else:
            self._check_deadline(self._unready_since)
        if self._clock() - self._last_scale < self.config.scale_check_s:
            return
        self._last_scale = self._clock()
        target = self.plan.max_actors
        if target is None:
            target = fitting_actors(self.plan.resources, ray.cluster_resources())
        if target > len(self.actors):
            logger.info("the cluster grew: adding %d evaluator actors (%d -> %d)",
                        target - len(self.actors), len(self.actors), target)
            while len(self.actors) < target:
                self._add_actor()

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

    def kill(self, worker: int) -> None:
        """Kill a hung actor; Ray restarts it (within ``max_restarts``), then it is probed."""
        import ray

        ray.kill(self.actors[worker], no_restart=False)
        self._probe(worker)

    def shutdown(self) -> None:
        import ray

        live = [a for i, a in enumerate(self.actors) if i not in self._gone]
        if live:  # let each actor stop serving cleanly, then kill it
            try:
                ray.wait([a.close.remote() for a in live], num_returns=len(live),
                         timeout=SHUTDOWN_GRACE_S)
            except Exception:  # noqa: BLE001 - dead actors cannot close; kill them anyway
                logger.debug("closing evaluator actors failed", exc_info=True)
        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already dead
                pass
        self._submits.clear()
        self._collects.clear()
        self._probes.clear()
        self._reprobe_at.clear()
        self._ready.clear()

    # ------------------------------------------------------------------ streaming

    def send(self, worker: int, requests: Sequence[Sent]) -> None:
        actor = self.actors[worker]
        self._submits[actor.submit.remote(list(requests))] = (
            worker, tuple(rid for rid, _ in requests))
        self._held[worker] = self._held.get(worker, 0) + len(requests)
        if worker not in self._collects.values():
            self._collects[actor.collect.remote()] = worker

    def wait(self, timeout_s: float) -> list[Report]:
        import ray

        calls = list(self._collects) + list(self._submits)
        refs = calls + list(self._probes)
        if self._reprobe_at:  # wake up for the next probe of a restarting actor
            timeout_s = min(timeout_s, max(0.0, min(self._reprobe_at.values()) - self._clock()))
        if not refs:
            time.sleep(min(timeout_s, 0.05))
            return []
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout_s)
        if not ready or not calls:
            return []
        ready, _ = ray.wait(calls, num_returns=len(calls), timeout=0)
        out: list[Report] = []
        for ref in ready:
            out.extend(self._settle(ref))
        return out

    def _settle(self, ref: Any) -> list[Report]:
        """One answered call: a collect's outcomes (then the next collect), a submit's error."""
        import ray
        from ray.exceptions import RayActorError, RayError

        if ref in self._collects:
            worker, ids = self._collects.pop(ref), ()
        elif ref in self._submits:
            worker, ids = self._submits.pop(ref)
        else:  # dropped: its worker was reported lost already
            return []
        try:
            answers = ray.get(ref)
        except RayActorError as err:
            return [self._lost(worker, err)]
        except RayError as err:  # a failed call, the actor alive: its requests get an error
            if not ids:
                return [self._lost(worker, err)]
            message = f"{type(err).__name__}: {err}"
            self._held[worker] -= len(ids)
            return [Answered(worker, rid, EvalError(message)) for rid in ids]
        if not ids:  # a collect: its answers, and the next collect while requests remain
            answers = list(answers)
            self._held[worker] -= len(answers)
            if self._held[worker] > 0:
                self._collects[self.actors[worker].collect.remote()] = worker
            return [Answered(worker, rid, outcome) for rid, outcome in answers]
        return []

    def _lost(self, worker: int, err: Exception) -> WorkerLost:
        """The actor died: drop its calls, probe it again (or give it up)."""
        state = _actor_state(self.actors[worker])
        gone = state == "DEAD"
        logger.warning("evaluator actor %s was lost (%s; state %s)",
                       self.actor_name(worker), type(err).__name__, state)
        self._submits = {r: v for r, v in self._submits.items() if v[0] != worker}
        self._collects = {r: w for r, w in self._collects.items() if w != worker}
        self._held[worker] = 0
        if gone:
            self._gone.add(worker)
            self._ready.discard(worker)
        elif worker in self._ready:
            self._probe(worker)  # usable again once restarted and placed
        return WorkerLost(worker, gone)
