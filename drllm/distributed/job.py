"""The main job as one library call: evaluator actors + the MCTS driver + the shard writer.

``drllm.jobs.search`` (Hydra) only wires its config into :func:`run_search_job`::

    summary = run_search_job(
        report.examples, rejected=report.rejected,
        model_spec=ModelSpec(), mcts_config=MCTSConfig(num_simulations=16),
        generation=GenerationConfig(max_new_tokens=16), pool_config=PoolConfig(),
        driver_config=DriverConfig(max_concurrent_trees=32),
        make_sink=lambda info: ShardWriter(out, writer_id=default_writer_id(),
                                           num_layers=info.num_layers, model_id=info.model_id,
                                           config=resolved),
        render=lambda ex: render_prompt(ex, tokenizer, style="chat"),
    )
    print(summary.format())
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Mapping, Optional

from drllm.distributed.config import DriverConfig, GenerationConfig, PoolConfig
from drllm.distributed.pool import EvaluationPool
from drllm.distributed.driver import PriorFn, RecordSink, RenderFn, SearchDriver
from drllm.distributed.evaluator import EvaluatorInfo, EvaluatorSpec
from drllm.distributed.evaluator import ExecutorEvaluator
from drllm.distributed.local_transport import LocalTransport
from drllm.distributed.metrics import SearchMetrics
from drllm.distributed.ray_transport import create_pool
from drllm.distributed.summary import RunSummary
from drllm.search import MCTSConfig
from drllm.shards import ShardMismatchError, completed_keys
from drllm.types import Example

logger = logging.getLogger(__name__)

SinkFactory = Callable[[EvaluatorInfo], RecordSink]
"""Builds the sink once the actors have loaded the model (L and model id known)."""


def executor_spec(
    model_spec: Any, generation: GenerationConfig, mcts_config: MCTSConfig
) -> EvaluatorSpec:
    """The real evaluator: load ``model_spec``, generate with ``generation``, the search's rules."""
    return EvaluatorSpec(ExecutorEvaluator, {
        "model": model_spec,
        "generation": generation,
        "constraints": mcts_config.constraints,
    })


def _done_keys(sink: RecordSink) -> set[tuple[str, str]]:
    return completed_keys(sink.out_dir) if sink.out_dir is not None else set()


def _check_sink(sink: RecordSink, info: EvaluatorInfo) -> None:
    num_layers, model_id = sink.num_layers, sink.model_id
    if (num_layers is not None and num_layers != info.num_layers) or (
        model_id is not None and model_id != info.model_id
    ):
        raise ShardMismatchError(
            f"the writer expects model {model_id!r} with L={num_layers}, but the evaluators "
            f"loaded {info.model_id!r} with L={info.num_layers}; use another output directory"
        )


def _start_pool(
    spec: EvaluatorSpec, pool_config: PoolConfig, in_process: bool
) -> EvaluationPool:
    if not in_process:
        return create_pool(spec, pool_config)
    transport = LocalTransport(spec, pool_config.num_actors or 1, pool_config.max_restarts)
    pool = EvaluationPool(
        transport,
        max_batch_size=pool_config.max_batch_size,
        max_in_flight_per_worker=pool_config.max_in_flight_per_actor,
        max_request_retries=pool_config.max_request_retries,
    )
    pool.start()
    return pool


def run_search_job(
    examples: Iterable[Example],
    *,
    render: RenderFn,
    sink: Optional[RecordSink] = None,
    make_sink: Optional[SinkFactory] = None,
    model_spec: Any = None,
    mcts_config: MCTSConfig = MCTSConfig(),
    generation: GenerationConfig = GenerationConfig(),
    pool_config: PoolConfig = PoolConfig(),
    driver_config: DriverConfig = DriverConfig(),
    evaluator: Optional[EvaluatorSpec] = None,
    rejected: Optional[Mapping[str, int]] = None,
    progress: bool = True,
    in_process: bool = False,
    prior: Optional[PriorFn] = None,
) -> RunSummary:
    """Search every example with evaluator actors and write one shard row per example.

    Ray must already be connected (:func:`drllm.cluster.connect`) unless ``in_process``.

    Args:
        examples: questions to search; ids already in the writer's directory are skipped
            (resume), duplicates searched once.
        render: example -> prompt text (chat template applied).
        sink: a :class:`RecordSink` (e.g. a :class:`~drllm.shards.ShardWriter`) that the caller
            closes; or instead
        make_sink: a factory ``EvaluatorInfo -> sink`` called once the actors report L and the
            model id; the sink it makes is closed here. Exactly one of the two.
        model_spec: ``drllm.models.loading.ModelSpec`` of the frozen model (ignored when
            ``evaluator`` is given).
        mcts_config: search knobs (one tree per example).
        generation: max new tokens and stop strings of each evaluation.
        pool_config: evaluator actors (count, resources, batching, fault tolerance).
        driver_config: concurrent trees and paths in flight per tree.
        evaluator: evaluator override (e.g. ``EvaluatorSpec(DummyEvaluator, {...})`` for dry runs).
        rejected: rows the dataset adapter rejected, by reason (reported in the summary).
        progress: show a progress bar.
        in_process: run the evaluators in this process without Ray (``pool_config.num_actors``
            workers, run one call at a time).
        prior: example -> its tree's expansion prior (``None``: uniform), e.g. a
            :class:`~drllm.distributed.priors.PriorPlan`.

    Returns:
        The run's :class:`RunSummary`.
    """
    if evaluator is None:
        if model_spec is None:
            raise ValueError("run_search_job needs model_spec (or an evaluator spec)")
        evaluator = executor_spec(model_spec, generation, mcts_config)
    examples = list(examples)
    if (sink is None) == (make_sink is None):
        raise TypeError("run_search_job needs exactly one of sink= and make_sink=")
    if sink is not None:
        done = _done_keys(sink)
        if all((ex.dataset, str(ex.id)) in done for ex in examples):
            logger.info("all %d examples are already in %s; nothing to search",
                        len(examples), sink.out_dir or "the sink")
            return RunSummary(model_id=sink.model_id or "",
                              num_layers=sink.num_layers or 0, num_workers=0,
                              examples_given=len(examples), skipped_done=len(examples),
                              rejected=dict(rejected or {}))
    pool = _start_pool(evaluator, pool_config, in_process)
    try:
        if make_sink is not None:
            sink = make_sink(pool.info)
        _check_sink(sink, pool.info)
        metrics = pool.metrics or (None if in_process else SearchMetrics(pool.info.model_id))
        driver = SearchDriver(pool, mcts_config, driver_config, sink=sink, render=render,
                              metrics=metrics, progress=progress, prior=prior)
        summary = driver.run(examples, done_keys=_done_keys(sink), rejected=rejected)
    finally:
        # The sink first: on SIGTERM (drllm.interrupt) the finished rows must reach disk
        # before the scheduler's grace period ends; stopping the actors can wait.
        try:
            if make_sink is not None and sink is not None:
                sink.close()
        finally:
            pool.close()
    logger.info("search finished:\n%s", summary.format())
    return summary
