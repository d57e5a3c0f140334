"""Searching examples with evaluator actors: the library calls under the search job.

The search recipe (:mod:`drllm.jobs.search`) starts the pool (:meth:`~drllm.distributed.pool.EvaluationPool.create`), opens the
shard writer once the actors report L and the model id, and searches (:func:`search_examples`).
:func:`run_search_job` is the same in one call, for a sink the caller has opened and closes::

    with ShardWriter(out, writer_id=default_writer_id(), num_layers=L, model_id=mid,
                     config=resolved) as writer:
        summary = run_search_job(
            report.examples, sink=writer, rejected=report.rejected,
            model_spec=ModelSpec(), mcts_config=MCTSConfig(num_simulations=16),
            generation=GenerationConfig(max_new_tokens=16), pool_config=PoolConfig(),
            driver_config=DriverConfig(max_concurrent_trees=32),
            render=lambda ex: render_prompt(ex, tokenizer, style="chat"),
        )
    print(summary.format())
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping, Optional, Sequence

from drllm.distributed.config import DriverConfig, GenerationConfig, PoolConfig
from drllm.distributed.pool import EvaluationPool
from drllm.distributed.driver import PriorFn, RecordSink, SearchDriver
from drllm.distributed.evaluator import EvaluatorInfo, EvaluatorSpec
from drllm.distributed.executor_evaluator import ExecutorEvaluator
from drllm.distributed.metrics import SearchMetrics
from drllm.distributed.summary import RunSummary
from drllm.search import MCTSConfig
from drllm.shards import ShardMismatchError, completed_keys
from drllm.types import Example, RenderFn

logger = logging.getLogger(__name__)


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


def check_sink(sink: RecordSink, info: EvaluatorInfo) -> None:
    """Raise :class:`ShardMismatchError` if ``sink`` expects another model or L than the
    evaluators loaded."""
    num_layers, model_id = sink.num_layers, sink.model_id
    if (num_layers is not None and num_layers != info.num_layers) or (
        model_id is not None and model_id != info.model_id
    ):
        raise ShardMismatchError(
            f"the writer expects model {model_id!r} with L={num_layers}, but the evaluators "
            f"loaded {info.model_id!r} with L={info.num_layers}; use another output directory"
        )


def search_examples(
    pool: EvaluationPool,
    examples: Sequence[Example],
    sink: RecordSink,
    *,
    render: RenderFn,
    mcts_config: MCTSConfig = MCTSConfig(),
    driver_config: DriverConfig = DriverConfig(),
    rejected: Optional[Mapping[str, int]] = None,
    progress: bool = True,
    in_process: bool = False,
    prior: Optional[PriorFn] = None,
) -> RunSummary:
    """Search ``examples`` on a started ``pool``, one ``sink`` row per example.

    Ids already in the sink's directory are skipped (resume). Raises
    :class:`ShardMismatchError` before searching if the sink expects another model or L.
    """
    check_sink(sink, pool.info)
    metrics = pool.metrics or (None if in_process else SearchMetrics(pool.info.model_id))
    driver = SearchDriver(pool, mcts_config, driver_config, sink=sink, render=render,
                          metrics=metrics, progress=progress, prior=prior)
    summary = driver.run(examples, done_keys=_done_keys(sink), rejected=rejected)
    logger.info("search finished:\n%s", summary.format())
    return summary


def run_search_job(
    examples: Iterable[Example],
    *,
    sink: RecordSink,
    render: RenderFn,
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
    """Start a pool, search every example into ``sink``, close the pool.

    Ray must already be connected (:func:`drllm.cluster.connect`) unless ``in_process``.

    Args:
        examples: questions to search; ids already in the sink's directory are skipped
            (resume), duplicates searched once.
        sink: a :class:`RecordSink` (e.g. a :class:`~drllm.shards.ShardWriter`) that the
            caller opened and closes.
        render: example -> prompt text (chat template applied).
        model_spec: ``drllm.models.loading.ModelSpec`` of the frozen model (ignored when
            ``evaluator`` is given).
        mcts_config: search knobs (one tree per example).
        generation: max new tokens and stop strings of each evaluation.
        pool_config: evaluator actors (count, resources, requests held, fault tolerance).
        driver_config: concurrent trees and paths in flight per tree.
        evaluator: evaluator override (e.g. ``EvaluatorSpec(DummyEvaluator, {...})`` for dry runs).
        rejected: rows the dataset adapter rejected, by reason (reported in the summary).
        progress: show a progress bar.
        in_process: run the evaluators in this process without Ray (``pool_config.num_actors``
            workers, run one call at a time).
        prior: example -> its tree's expansion prior (``None``: uniform), e.g. a
            :class:`~drllm.distributed.prior_plan.PriorPlan`.

    Returns:
        The run's :class:`RunSummary`.
    """
    if evaluator is None:
        if model_spec is None:
            raise ValueError("run_search_job needs model_spec (or an evaluator spec)")
        evaluator = executor_spec(model_spec, generation, mcts_config)
    examples = list(examples)
    done = _done_keys(sink)
    if all((ex.dataset, str(ex.id)) in done for ex in examples):
        logger.info("all %d examples are already in %s; nothing to search",
                    len(examples), sink.out_dir or "the sink")
        return RunSummary(model_id=sink.model_id or "", num_layers=sink.num_layers or 0,
                          num_workers=0, examples_given=len(examples),
                          skipped_done=len(examples), rejected=dict(rejected or {}))
    pool = EvaluationPool.create(evaluator, pool_config, in_process=in_process)
    try:
        return search_examples(pool, examples, sink, render=render, mcts_config=mcts_config,
                               driver_config=driver_config, rejected=rejected,
                               progress=progress, in_process=in_process, prior=prior)
    finally:
        pool.close()
