"""The main job, end to end: connect Ray, load the dataset, search, write shards and summary.json.

``python -m drllm.jobs.search`` (Hydra) only composes the config and calls :func:`run`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from drllm.checks import check_choice, check_int, check_real
from drllm.cluster import ClusterSettings, connect
from drllm.data import DatasetConfig, LoadReport, load_examples
from drllm.data.prompts import render_prompt
from drllm.data.sharding import parse_shard
from drllm.distributed.config import DriverConfig, GenerationConfig, PoolConfig, WorkAvoidance
from drllm.distributed.evaluator import EvaluatorInfo
from drllm.distributed.job import run_search_job
from drllm.distributed.priors import PriorSource, build_prior_plan
from drllm.distributed.summary import RunSummary
from drllm.files import atomic_write_json
from drllm.interrupt import sigterm_raises
from drllm.models.loading import ModelSpec, load_tokenizer
from drllm.report import format_report, load_report_table, science_report
from drllm.search import MCTSConfig
from drllm.shards import (OutputLock, ShardWriter, check_resume, default_writer_id,
                          quarantine_unreadable)
from drllm.types import Example

logger = logging.getLogger(__name__)

RESUME_MODES = ("auto", "force")

HEADLINE = "search_accuracy"
"""The summary figure ``python -m drllm.jobs.search`` returns (a Hydra sweeper's objective)."""


@dataclass(frozen=True)
class OutputConfig:
    """Where shards go and how they are cut.

    Attributes:
        dir: shards directory, relative to the run's output directory.
        rows_per_shard: rows per Parquet shard at most.
        flush_seconds: a partial shard is written once its oldest row is this old (seconds).
    """

    dir: str = "shards"
    rows_per_shard: int = 64
    flush_seconds: float = 60.0

    def __post_init__(self) -> None:
        check_int("OutputConfig", "rows_per_shard", self.rows_per_shard, 1)
        check_real("OutputConfig", "flush_seconds", self.flush_seconds, 0.0)


@dataclass(frozen=True)
class SearchJobSettings:
    """Everything ``python -m drllm.jobs.search`` takes; each field is one group of ``conf/``.

    Attributes:
        model: the frozen LLM (``model/``).
        dataset: the questions, and their generation budget (``dataset/``; see
            :attr:`generation`).
        search: the MCTS knobs (``search/``).
        driver: the driver over many trees (``driver:`` in ``conf/config.yaml``).
        prior: what the expansion prior is built from (``prior:``).
        pool: the evaluator actors (``pool/``).
        ray: how to reach Ray (``ray/``).
        output: shards directory and cuts (``output:``).
        work_avoidance: the evaluators' exact work-avoidance levers (``work_avoidance:``; not
            search-affecting: they never change a token).
        progress: show progress bars.
        log_level: level of the ``drllm`` loggers.
        resume: ``auto``: resume an output directory written with the same search-affecting
            config, refuse one written with another; ``force``: resume it anyway (rows of both
            configs then mix).
    """

    model: ModelSpec = field(default_factory=ModelSpec)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    search: MCTSConfig = field(default_factory=MCTSConfig)
    driver: DriverConfig = field(default_factory=DriverConfig)
    prior: PriorSource = field(default_factory=PriorSource)
    pool: PoolConfig = field(default_factory=PoolConfig)
    ray: ClusterSettings = field(default_factory=ClusterSettings)
    output: OutputConfig = field(default_factory=OutputConfig)
    work_avoidance: WorkAvoidance = field(default_factory=WorkAvoidance)
    progress: bool = True
    log_level: str = "INFO"
    resume: str = "auto"

    def __post_init__(self) -> None:
        check_choice("SearchJobSettings", "resume", self.resume, RESUME_MODES)
        self.generation  # noqa: B018 -- validate the budget before anything starts

    @property
    def generation(self) -> GenerationConfig:
        """Greedy generation of each evaluation: the dataset's budget (``dataset.max_new_tokens``,
        ``dataset.stop_strings``; ``None`` there falls back to the adapter's / grader's), its
        reward settings (plausibility guard, ``loglik_norm``) and the ``work_avoidance``
        levers."""
        max_new_tokens, stop_strings = self.dataset.generation_budget
        return GenerationConfig(max_new_tokens=max_new_tokens, stop_strings=stop_strings,
                                min_plausibility=self.dataset.min_plausibility,
                                loglik_norm=self.dataset.reward == "loglik_norm",
                                **self.work_avoidance.levers)

SUMMARY_FILE = "summary.json"
AFFECTING_KEY = "search_affecting"

# Groups of the resolved config that can change what a search writes for an example, each with
# its keys that cannot: a rerun that differs only in these (or in pool / ray / output) resumes.
NOT_AFFECTING = {
    "model": ("cache_dir",),
    "dataset": ("num_examples", "skip", "shard"),
    "search": (),
    "driver": ("max_concurrent_trees", "poll_interval_s"),
    "prior": (),
}


def search_affecting(resolved: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a resolved job config that decides what a search finds for an example."""
    out: dict[str, Any] = {}
    for group, ignored in NOT_AFFECTING.items():
        values = dict(resolved.get(group) or {})
        out[group] = {k: v for k, v in sorted(values.items()) if k not in ignored}
    return out


def _summary(report: Mapping[str, Any], run_summary: RunSummary, settings: SearchJobSettings,
             rejected: Mapping[str, int], prior_info: Any, wall: float, shards_dir: Path) -> dict:
    return {
        **report,
        "dataset": settings.dataset.name,
        "model": run_summary.model_id or settings.model.name,
        "chance_shuffles": settings.dataset.chance_shuffles,
        "max_new_tokens": settings.generation.max_new_tokens,
        "rows_rejected": dict(rejected),
        "default_failed": dict(run_summary.default_failed),
        "prior": prior_info,
        "shard": settings.dataset.shard,
        "this_run": run_summary.to_dict(),
        "wall_seconds": wall,
        "shards_dir": str(shards_dir),
    }


def _load(settings: SearchJobSettings) -> tuple[LoadReport, Callable[[Example], str]]:
    """The examples and how to render them (chat template of the model's tokenizer)."""
    report = load_examples(settings.dataset)
    logger.info("dataset %s: %d examples (%d rows read, rejected: %s)", settings.dataset.name,
                len(report.examples), report.rows_read, dict(report.rejected) or "none")
    if not report.examples and settings.dataset.shard is None:
        raise RuntimeError(f"dataset {settings.dataset.name!r} yielded no usable examples; "
                           f"rejected rows by reason: {dict(report.rejected)}")
    tokenizer = load_tokenizer(settings.model)
    style = settings.dataset.prompt_style

    def render(ex: Example) -> str:
        return render_prompt(ex, tokenizer, style=style)

    return report, render


def _print_report(science: Mapping[str, Any], run_totals: RunSummary, rejected: Mapping[str, int],
                  wall: float, summary_file: Path) -> None:
    print(format_report(science))
    failed = run_totals.default_failed
    print(f"default path failed {len(failed)} (not written; searched again on resume)"
          + "".join(f"\n  {k}: {v}" for k, v in list(failed.items())[:10]))
    print(f"rows rejected       {sum(rejected.values())} {dict(rejected) or ''}")
    print(f"wall time           {wall:.1f} s")
    print(f"summary             {summary_file}")


def run(settings: SearchJobSettings, output_dir: Path, resolved_config: Mapping[str, Any]) -> dict[str, Any]:
    """Run one search job; returns (and writes to ``output_dir/summary.json``) its summary.

    SIGTERM (``ray job stop``) while searching writes the finished rows, then exits
    (:mod:`drllm.interrupt`); a rerun resumes from them.

    Raises:
        OutputLockedError: another live driver searches into the same shards directory (the
            message names its host and pid; a dead one's lock is taken over).
        ResumeConflictError: ``output_dir`` holds shards of another search-affecting config
            (before anything starts), unless ``settings.resume == "force"``.
    """
    output_dir = output_dir.resolve()
    shards_dir = output_dir / settings.output.dir
    with OutputLock(shards_dir):
        return _run_locked(settings, output_dir, shards_dir, resolved_config)


def shard_pool(pool: PoolConfig, shard: str | None) -> PoolConfig:
    """The pool of one dataset shard's driver: its actors are named after the shard
    (``{name_prefix}-shard-k-of-N-{i}``), so that N drivers can share one Ray cluster."""
    spec = parse_shard(shard)
    if spec is None:
        return pool
    return dataclasses.replace(pool, name_prefix=f"{pool.name_prefix}-{spec.name}")


def _empty_shard(settings: SearchJobSettings) -> RunSummary:
    """A dataset shard that holds none of the selected examples: nothing to search."""
    logger.warning("dataset shard %s holds none of the selected examples; nothing to search",
                   settings.dataset.shard)
    return RunSummary(model_id=settings.model.name, num_layers=0, num_workers=0,
                      examples_given=0)


def _search(settings: SearchJobSettings, report: LoadReport, render: Callable[[Example], str],
            make_writer: Callable[[EvaluatorInfo], ShardWriter]) -> tuple[RunSummary, Any]:
    """Connect Ray, build the prior, search; the run's totals and the prior's description."""
    connect(settings.ray)  # before the handler: ray.init installs its own SIGTERM handler
    with sigterm_raises():
        prior = build_prior_plan(
            settings.search, report.examples, render, model_spec=settings.model,
            routers_dir=settings.prior.checkpoint,
            calibration_examples=settings.prior.calibration_examples,
        )
        run_totals = run_search_job(
            report.examples, make_sink=make_writer, render=render, model_spec=settings.model,
            mcts_config=settings.search, generation=settings.generation,
            pool_config=shard_pool(settings.pool, settings.dataset.shard),
            driver_config=settings.driver, rejected=report.rejected,
            progress=settings.progress, prior=prior,
        )
    return run_totals, prior.describe()


def _run_locked(settings: SearchJobSettings, output_dir: Path, shards_dir: Path,
                resolved_config: Mapping[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    quarantined = quarantine_unreadable(shards_dir)  # named in the log; searched again
    affecting = search_affecting(resolved_config)
    check_resume(shards_dir, affecting, key=AFFECTING_KEY, force=settings.resume == "force")
    stored_config = {**resolved_config, AFFECTING_KEY: affecting}
    report, render = _load(settings)

    def make_writer(info: EvaluatorInfo) -> ShardWriter:
        return ShardWriter(
            shards_dir, writer_id=default_writer_id(), num_layers=info.num_layers,
            model_id=info.model_id, config=stored_config,
            rows_per_shard=settings.output.rows_per_shard, flush_seconds=settings.output.flush_seconds,
            merge_on_open=True,  # safe: this run holds the directory's lock
        )

    if report.examples:
        run_totals, prior_info = _search(settings, report, render, make_writer)
    else:
        run_totals, prior_info = _empty_shard(settings), None
    wall = time.perf_counter() - started
    table = load_report_table(shards_dir, settings.dataset.name, {ex.id for ex in report.examples})
    science = science_report(table, settings.search.success_reward)
    summary = _summary(science, run_totals, settings, report.rejected, prior_info, wall,
                       shards_dir)
    summary["shards_quarantined"] = [dataclasses.asdict(q) for q in quarantined]
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(output_dir / SUMMARY_FILE, summary)
    _print_report(science, run_totals, report.rejected, wall, output_dir / SUMMARY_FILE)
    return summary
