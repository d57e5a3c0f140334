"""Distributed search: evaluator actors on Ray, the central MCTS driver, metrics, summary.

* :meth:`EvaluationPool.create`, :func:`search_examples` — what the search recipe (:mod:`drllm.jobs.search`)
  calls; :func:`run_search_job` — both in one call, for a sink the caller has opened.
* :class:`SearchDriver` — many concurrent MCTS trees over an :class:`EvaluationPool`.
* :class:`EvaluationPool` — streams requests to workers (a bounded number held by each),
  requeue and retries over a transport: :class:`RayTransport` (named async Ray actors) or
  :class:`LocalTransport`.
* :class:`EvaluatorActor` — one frozen model; requests join its running engine as they
  arrive and each outcome comes back as soon as it is done.
* Evaluators: :class:`ExecutorEvaluator` (model + executor + graders), chosen with a picklable
  :class:`EvaluatorSpec` (``drllm.testing.DummyEvaluator`` for tests).

Words, one per concept: an **evaluator** (:class:`Evaluator`) turns (example, path) requests
into graded evaluations; an **actor** is the Ray process that holds one evaluator (in-process
runs have a *worker* per evaluator instead: the transports' common word for "actor or
in-process stand-in", as in ``PoolStats.workers_gone``); the **pool** streams requests to the
workers of one **transport**; the **driver** runs the trees and feeds the **sink** (the shard
writer).

Importing this package imports neither torch nor ray; they load when a pool starts.
"""

from drllm.distributed.config import DriverConfig, GenerationConfig, PoolConfig
from drllm.distributed.pool import EvaluationPool, PoolExhaustedError, PoolStats
from drllm.distributed.transport import Answered, Transport, WorkerLost
from drllm.distributed.driver import SearchDriver, tree_config, tree_seed
from drllm.distributed.sinks import ListSink, RecordSink
from drllm.distributed.evaluator import (
    EvalError,
    Evaluator,
    EvaluatorContext,
    EvaluatorInfo,
    EvaluatorSpec,
    WorkerLostError,
)
from drllm.distributed.executor_evaluator import ExecutorEvaluator
from drllm.distributed.job import executor_spec, run_search_job, search_examples
from drllm.distributed.local_transport import LocalTransport
from drllm.distributed.metrics import SearchMetrics
from drllm.distributed.ray_transport import ActorResources, RayTransport, resolve_resources
from drllm.distributed.summary import RunSummary

__all__ = [
    "ActorResources",
    "Answered",
    "DriverConfig",
    "EvalError",
    "EvaluationPool",
    "Evaluator",
    "EvaluatorContext",
    "EvaluatorInfo",
    "EvaluatorSpec",
    "ExecutorEvaluator",
    "GenerationConfig",
    "ListSink",
    "LocalTransport",
    "PoolConfig",
    "PoolExhaustedError",
    "PoolStats",
    "RayTransport",
    "RecordSink",
    "RunSummary",
    "SearchDriver",
    "SearchMetrics",
    "Transport",
    "WorkerLost",
    "WorkerLostError",
    "executor_spec",
    "resolve_resources",
    "run_search_job",
    "search_examples",
    "tree_config",
    "tree_seed",
]
