"""The evaluation job end to end: load the samples, connect Ray, evaluate, write summary.json.

``python -m drllm.jobs.evaluate`` (Hydra) composes an :class:`EvaluateJobSettings` and calls
:func:`run`. Outputs under the run directory: ``results/part-*.parquet`` (one row per
policy and example), ``summary.json`` (written atomically) and the printed table. With
``evaluation.calibrate=true`` the run is a calibration: the chosen gate and its evidence go into
the router checkpoint and the summary (``calibration``; :mod:`drllm.evaluation.calibration`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from drllm.checks import check_bool
from drllm.cluster import ClusterSettings, cluster_gpus, connect
from drllm.data import DatasetConfig, load_examples
from drllm.data.prompts import render_prompt
from drllm.distributed.config import PoolConfig
from drllm.evaluation.calibration import calibrate, format_calibration
from drllm.evaluation.config import EvaluationConfig
from drllm.evaluation.preflight import preflight
from drllm.evaluation.runner import HEADLINE, EvalSet, run_evaluation
from drllm.evaluation.summary import format_table
from drllm.files import SUMMARY_FILE, atomic_write_json
from drllm.models.loading import ModelSpec, load_tokenizer

logger = logging.getLogger(__name__)

RESULTS_DIR = "results"


def _as_dataset(value: Any, index: int) -> DatasetConfig:
    if isinstance(value, DatasetConfig):
        return value
    if isinstance(value, Mapping):
        try:
            return DatasetConfig(**{k: v for k, v in value.items()})
        except (TypeError, ValueError) as err:
            raise ValueError(f"more_datasets[{index}]: {err}") from err
    raise ValueError(f"more_datasets[{index}] must be a dataset config mapping, got {value!r}")


@dataclass(frozen=True)
class EvaluateJobSettings:
    """Everything ``python -m drllm.jobs.evaluate`` takes (``conf/evaluate.yaml``).

    Attributes:
        model: the frozen LLM (``model/``).
        dataset: the evaluated sample (``dataset/``); use ``dataset.skip`` for a slice
            disjoint from the search's (search ``num_examples=n``, evaluate ``skip=n``).
        more_datasets: further samples evaluated in the same run (mappings of
            :class:`~drllm.data.DatasetConfig` fields; names must differ).
        evaluation: the policies and their settings (``evaluation/``).
        pool: the evaluator actors (``pool/``).
        ray: how to reach Ray (``ray/``).
        progress: show progress bars.
        log_level: level of the ``drllm`` loggers.
    """

    model: ModelSpec = field(default_factory=ModelSpec)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    more_datasets: tuple[DatasetConfig, ...] = ()
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    ray: ClusterSettings = field(default_factory=ClusterSettings)
    progress: bool = True
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        more = tuple(_as_dataset(v, i) for i, v in enumerate(self.more_datasets))
        object.__setattr__(self, "more_datasets", more)
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"EvaluateJobSettings: dataset names must differ, got {names}")
        check_bool("EvaluateJobSettings", "progress", self.progress)

    @property
    def datasets(self) -> tuple[DatasetConfig, ...]:
        return (self.dataset, *self.more_datasets)


def _eval_set(cfg: DatasetConfig, evaluation: EvaluationConfig, render: Any) -> EvalSet:
    report = load_examples(cfg)
    if not report.examples:
        raise RuntimeError(f"dataset {cfg.name!r} yielded no examples (skip={cfg.skip}); "
                           f"rejected rows by reason: {dict(report.rejected)}")
    calibration: tuple[str, ...] = ()
    overlap = 0
    if "static" in evaluation.policies and "importance" in evaluation.static:
        calib = load_examples(dataclasses.replace(
            cfg, skip=0, num_examples=evaluation.calibration_examples)).examples
        ids = {str(e.id) for e in report.examples}
        overlap = sum(str(e.id) in ids for e in calib)
        if overlap:
            logger.warning("%s: %d calibration examples are also evaluated (use dataset.skip)",
                           cfg.name, overlap)
        calibration = tuple(render(e) for e in calib)
    ids = [str(e.id) for e in report.examples]
    logger.info("%s: evaluating %d examples (skip=%d): %s ... %s", cfg.name, len(ids),
                cfg.skip, ", ".join(ids[:3]), ", ".join(ids[-3:]))
    return EvalSet(cfg, report.examples, calibration, overlap)


def run(settings: EvaluateJobSettings, output_dir: Path) -> dict[str, Any]:
    """Run the evaluation; returns (and writes to ``output_dir/summary.json``) its summary."""
    output_dir = output_dir.resolve()
    tokenizer = load_tokenizer(settings.model)
    styles = {d.name: d.prompt_style for d in settings.datasets}

    def render(ex: Any) -> str:
        return render_prompt(ex, tokenizer, style=styles[ex.dataset])

    sets = [_eval_set(cfg, settings.evaluation, render) for cfg in settings.datasets]
    in_process = settings.ray.mode == "in_process"
    connect(settings.ray)
    use_gpu = not in_process and settings.pool.use_gpu is not False and cluster_gpus() > 0
    evaluation = settings.evaluation
    importances = preflight(
        settings.model, routers_dir=evaluation.routers if "routed" in evaluation.policies else None,
        check_model_id=evaluation.check_model_id, calibration=[es.calibration for es in sets],
        in_process=in_process, use_gpu=use_gpu)
    sets = [dataclasses.replace(es, importance=tuple(imp)) for es, imp in zip(sets, importances)]
    summary = run_evaluation(sets, settings.evaluation, render=render, model=settings.model,
                             out_dir=output_dir / RESULTS_DIR, pool_config=settings.pool,
                             in_process=in_process, progress=settings.progress)
    if evaluation.calibrate:
        calibration = calibrate(summary, str(evaluation.routers), evaluation.epsilon)
        chosen = calibration["chosen"]
        summary["calibration"] = calibration
        summary["headline"] = {"dataset": calibration["dataset"], "policy": chosen["policy"],
                               HEADLINE: chosen["accuracy"]}
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(output_dir / SUMMARY_FILE, summary)
    print(format_table(summary))
    if evaluation.calibrate:
        print(format_calibration(summary["calibration"]))
    print(f"headline: {summary['headline']}")
    print(f"summary:  {output_dir / SUMMARY_FILE}")
    return summary


__all__ = ["EvaluateJobSettings", "HEADLINE", "SUMMARY_FILE", "run"]
