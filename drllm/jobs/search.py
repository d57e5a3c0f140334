"""``python -m drllm.jobs.search``: distributed length-aware MCTS writing supervision shards.

The search job's recipe, top to bottom as the data flows: its settings (:class:`SearchJobSettings`,
the schema of ``conf/config.yaml``: groups model/, dataset/, search/, pool/, ray/; keys driver,
prior, output), then :func:`run`: settings → data → pool → driver → shards → report, then
:func:`main`, the Hydra entry point. Examples::

    python -m drllm.jobs.search                                   # laptop default
    python -m drllm.jobs.search dataset=arc_easy search=paper ray=auto pool=auto
    python -m drllm.jobs.search -m dataset=arc_easy,gsm8k         # multirun
    python -m drllm.jobs.search dataset.shard=0/4                 # shard 0 of 4 (4 drivers)
    python -m drllm.jobs.search ray.mode=in_process               # no Ray: debugging
    python -m drllm.jobs.search --cfg job                         # every settable field

``main`` returns the run's ``search_accuracy`` (share of examples whose best path reaches the
success reward), the objective a Hydra sweeper (Optuna, Ax) maximizes.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from drllm.checks import check_bool, check_choice, check_int, check_real
from drllm.cluster import ClusterSettings, connect
from drllm.data import DatasetConfig, LoadReport, load_examples
from drllm.data.prompts import render_prompt
from drllm.data.sharding import parse_shard, register_resolver
from drllm.distributed import EvaluationPool, executor_spec, search_examples
from drllm.distributed.config import DriverConfig, GenerationConfig, PoolConfig, WorkAvoidance
from drllm.distributed.prior_plan import PriorSource, build_prior_plan
from drllm.distributed.summary import RunSummary
from drllm.files import SUMMARY_FILE, atomic_write_json
from drllm.hydra_schema import job_settings, register, schema_of
from drllm.interrupt import sigterm_raises
from drllm.models.loading import ModelSpec, load_tokenizer
from drllm.report import format_report, load_report_table, science_report
from drllm.search import MCTSConfig
from drllm.shards import (OutputLock, OutputLockedError, ResumeConflictError, ShardWriter,
                          check_resume, default_writer_id, quarantine_unreadable)
from drllm.shards.card import write_dataset_card
from drllm.shards.schema import supervision_schema
from drllm.types import Example

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------- settings

RESUME_MODES = ("auto", "force")
HEADLINE = "search_accuracy"
"""The summary figure :func:`main` returns (a Hydra sweeper's objective)."""


@dataclass(frozen=True)
class OutputConfig:
    """Where shards go and how they are cut.

    Attributes:
        dir: shards directory, relative to the run's output directory.
        rows_per_shard: rows per Parquet shard at most.
        flush_seconds: a partial shard is written once its oldest row is this old (seconds).
        trace_text: keep the response text of every evaluated path in the ``trace`` column
            (false: the trace keeps every path's figures -- reward, reason, extracted answer,
            plausibility, length -- without its text; labels keep their responses either way).
    """

    dir: str = "shards"
    rows_per_shard: int = 64
    flush_seconds: float = 60.0
    trace_text: bool = True

    def __post_init__(self) -> None:
        check_int("OutputConfig", "rows_per_shard", self.rows_per_shard, 1)
        check_real("OutputConfig", "flush_seconds", self.flush_seconds, 0.0)
        check_bool("OutputConfig", "trace_text", self.trace_text)


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
        ray: how to reach Ray (``ray/``; ``mode: in_process`` runs without Ray).
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


AFFECTING_KEY = "search_affecting"
# Groups of the resolved config that can change what a search writes for an example, each with
# its keys that cannot: a rerun that differs only in these (or in pool / ray / output) resumes.
NOT_AFFECTING = {
    "model": ("cache_dir",),
    "dataset": ("num_examples", "skip", "shard", "malformed_lines"),
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


def default_affecting() -> dict[str, Any]:
    """:func:`search_affecting` of the default settings: the value a field added since a shard
    was written had, in effect, for the code that wrote it."""
    return search_affecting(OmegaConf.to_container(
        OmegaConf.structured(schema_of(SearchJobSettings)), resolve=True))


def shard_pool(pool: PoolConfig, shard: str | None) -> PoolConfig:
    """The pool of one dataset shard's driver: its actors are named after the shard
    (``{name_prefix}-shard-k-of-N-{i}``), so that N drivers can share one Ray cluster."""
    spec = parse_shard(shard)
    if spec is None:
        return pool
    return dataclasses.replace(pool, name_prefix=f"{pool.name_prefix}-{spec.name}")


# ---------------------------------------------------------------------------------- the run


def run(settings: SearchJobSettings, output_dir: Path,
        resolved_config: Mapping[str, Any]) -> dict[str, Any]:
    """Run one search job; returns (and writes to ``output_dir/summary.json``) its summary.

    Shard files that cannot be read are moved to ``shards/_quarantine/`` first (named in the
    log and the summary; their examples are searched again). SIGTERM (``ray job stop``) while
    searching writes the finished rows, then exits (:mod:`drllm.interrupt`); a rerun resumes.

    Raises:
        OutputLockedError: another live driver searches into the same shards directory (the
            message names its host and pid; a dead one's lock is taken over).
        ResumeConflictError: ``output_dir`` holds shards of another search-affecting config
            (before anything starts), unless ``settings.resume == "force"``.
    """
    started = time.perf_counter()
    output_dir = output_dir.resolve()
    shards_dir = output_dir / settings.output.dir
    with OutputLock(shards_dir):
        quarantined = quarantine_unreadable(shards_dir)
        affecting = search_affecting(resolved_config)
        check_resume(shards_dir, affecting, key=AFFECTING_KEY, force=settings.resume == "force",
                     defaults=default_affecting())
        data, render = _load_data(settings)
        if data.examples:
            totals, prior_info = _search(settings, data, render, shards_dir,
                                         {**resolved_config, AFFECTING_KEY: affecting})
        else:
            totals, prior_info = _empty_shard(settings), None
        summary = _report(settings, data, totals, prior_info, shards_dir,
                          time.perf_counter() - started)
        _write_card(output_dir, shards_dir, summary, affecting)
    summary["shards_quarantined"] = [dataclasses.asdict(q) for q in quarantined]
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(output_dir / SUMMARY_FILE, summary)
    print(f"summary             {output_dir / SUMMARY_FILE}")
    return summary


def _load_data(settings: SearchJobSettings) -> tuple[LoadReport, Callable[[Example], str]]:
    """The examples and how to render them (chat template of the model's tokenizer)."""
    report = load_examples(settings.dataset)
    if not report.examples and settings.dataset.shard is None:
        raise RuntimeError(f"dataset {settings.dataset.name!r} yielded no usable examples; "
                           f"rejected rows by reason: {dict(report.rejected)}")
    tokenizer = load_tokenizer(settings.model)
    style = settings.dataset.prompt_style

    def render(ex: Example) -> str:
        return render_prompt(ex, tokenizer, style=style)

    return report, render


def _search(settings: SearchJobSettings, data: LoadReport, render: Callable[[Example], str],
            shards_dir: Path, stored_config: Mapping[str, Any]) -> tuple[RunSummary, Any]:
    """Pool → driver → shards: the run's totals and the prior's description."""
    in_process = settings.ray.mode == "in_process"
    connect(settings.ray)  # before the handler: ray.init installs its own SIGTERM handler
    with sigterm_raises():
        prior = build_prior_plan(
            settings.search, data.examples, render, model_spec=settings.model,
            routers_dir=settings.prior.checkpoint, in_process=in_process,
            calibration_examples=settings.prior.calibration_examples,
        )
        pool = EvaluationPool.create(executor_spec(settings.model, settings.generation, settings.search),
                          shard_pool(settings.pool, settings.dataset.shard), in_process=in_process)
        try:
            # The writer closes first: on SIGTERM the finished rows must reach disk before the
            # scheduler's grace period ends; stopping the actors can wait.
            with ShardWriter(shards_dir, writer_id=default_writer_id(),
                             num_layers=pool.info.num_layers, model_id=pool.info.model_id,
                             config=stored_config, rows_per_shard=settings.output.rows_per_shard,
                             flush_seconds=settings.output.flush_seconds,
                             trace_text=settings.output.trace_text,
                             merge_on_open=True) as writer:  # safe: this run holds the lock
                totals = search_examples(
                    pool, data.examples, writer, render=render, mcts_config=settings.search,
                    driver_config=settings.driver, rejected=data.rejected,
                    progress=settings.progress, in_process=in_process, prior=prior)
        finally:
            pool.close()
    return totals, prior.describe()


def _empty_shard(settings: SearchJobSettings) -> RunSummary:
    """A dataset shard that holds none of the selected examples: nothing to search."""
    logger.warning("dataset shard %s holds none of the selected examples; nothing to search",
                   settings.dataset.shard)
    return RunSummary(model_id=settings.model.name, num_layers=0, num_workers=0,
                      examples_given=0)


def _report(settings: SearchJobSettings, data: LoadReport, totals: RunSummary, prior_info: Any,
            shards_dir: Path, wall: float) -> dict[str, Any]:
    """The summary of every row of this run's examples in the shards, printed."""
    table = load_report_table(shards_dir, settings.dataset.name, {ex.id for ex in data.examples})
    science = science_report(table, settings.search.success_reward)
    if settings.dataset.placebo:
        print("PLACEBO golds (dataset.placebo=true): every gold is wrong, so 'solved' and "
              "'improved' count answers won by luck or a gamed reward")
    print(format_report(science))
    failed, rejected = totals.default_failed, data.rejected
    print(f"default path failed {len(failed)} (not written; searched again on resume)"
          + "".join(f"\n  {k}: {v}" for k, v in list(failed.items())[:10]))
    print(f"rows rejected       {sum(rejected.values())} {dict(rejected) or ''}")
    print(f"wall time           {wall:.1f} s")
    return {
        **science,
        "dataset": settings.dataset.name,
        "model": totals.model_id or settings.model.name,
        "chance_shuffles": settings.dataset.chance_shuffles,
        "placebo": settings.dataset.placebo,
        "max_new_tokens": settings.generation.max_new_tokens,
        "rows_rejected": dict(rejected),
        "default_failed": dict(totals.default_failed),
        "prior": prior_info,
        "shard": settings.dataset.shard,
        "this_run": totals.to_dict(),
        "wall_seconds": wall,
        "shards_dir": str(shards_dir),
    }


def _write_card(output_dir: Path, shards_dir: Path, summary: Mapping[str, Any],
                affecting: Mapping[str, Any]) -> None:
    """The directory's dataset card (``README.md``), once it holds a shard."""
    if not summary.get("examples"):
        return
    write_dataset_card(
        output_dir, shards_dir, schema=supervision_schema(int(summary["num_layers"])),
        model_id=str(summary["model"]), dataset=str(summary["dataset"]),
        search_config=affecting, report=summary)


# ---------------------------------------------------------------------------------- main

SCHEMA = "search_job_schema"
register(SCHEMA, SearchJobSettings)
register_resolver()  # ${drllm_shard:...} in hydra.run.dir


@hydra.main(config_path="../_conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Compose, validate, run; returns the headline figure (a sweeper's objective, maximize)."""
    settings = job_settings(cfg, SearchJobSettings)
    try:
        summary = run(settings, Path(HydraConfig.get().runtime.output_dir),
                      OmegaConf.to_container(cfg, resolve=True))
    except ResumeConflictError as err:
        sys.exit(f"resume error: {err}")
    except OutputLockedError as err:
        sys.exit(f"output directory in use: {err}")
    return float(summary[HEADLINE])


if __name__ == "__main__":
    main()
