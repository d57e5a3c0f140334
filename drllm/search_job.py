"""The main job, end to end: connect Ray, load the dataset, search, write shards and summary.json.

``python -m drllm.jobs.search`` (Hydra) only composes the config and calls :func:`run`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping

from drllm.config import SearchJobSettings

logger = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"


def dataset_totals(shards_dir: Path, dataset: str, example_ids: set[str] | None = None) -> dict[str, Any]:
    """Accuracy and savings over every row of ``dataset`` written to ``shards_dir`` so far.

    A resumed run reports the whole dataset, not only the examples searched in this process.
    ``example_ids`` restricts the totals to the configured sample.
    """
    from drllm.shards import read_shards, shard_files

    if not shard_files(shards_dir):
        return {"examples": 0}
    table = read_shards(
        shards_dir,
        columns=["example_id", "dataset", "default_reward", "best_reward", "layers_saved", "improved",
                 "evaluations", "memo_hits"],
    ).to_pandas()
    table = table[table["dataset"].astype(str) == dataset]
    if example_ids is not None:
        table = table[table["example_id"].isin(example_ids)]
    n = int(len(table))
    if n == 0:
        return {"examples": 0}
    return {
        "examples": n,
        "default_accuracy": float((table["default_reward"] >= 1.0).mean()),
        "search_accuracy": float((table["best_reward"] >= 1.0).mean()),
        "improved_fraction": float(table["improved"].mean()),
        "mean_layers_saved": float(table["layers_saved"].mean()),
        "evaluations": int(table["evaluations"].sum()),
        "memo_hits": int(table["memo_hits"].sum()),
    }


def format_totals(totals: Mapping[str, Any], wall_seconds: float) -> str:
    """A human-readable block for the end of the run."""
    if not totals.get("examples"):
        return "no examples searched"
    return "\n".join([
        f"examples            {totals['examples']}",
        f"default accuracy    {totals['default_accuracy']:.1%}",
        f"accuracy after MCTS {totals['search_accuracy']:.1%}",
        f"improved            {totals['improved_fraction']:.1%}",
        f"mean layers saved   {totals['mean_layers_saved']:.2f} blocks / forward pass",
        f"evaluations         {totals['evaluations']}",
        f"memo hits           {totals['memo_hits']}",
        f"wall time           {wall_seconds:.1f} s",
    ])


def run(settings: SearchJobSettings, output_dir: Path, resolved_config: Mapping[str, Any]) -> dict[str, Any]:
    """Run one search job; returns (and writes to ``output_dir/summary.json``) its summary."""
    from drllm.cluster import connect
    from drllm.data import load_examples
    from drllm.data.prompts import render_prompt
    from drllm.distributed.job import run_search_job
    from drllm.models.loading import load_tokenizer
    from drllm.shards import ShardWriter, default_writer_id

    started = time.perf_counter()
    output_dir = output_dir.resolve()
    shards_dir = output_dir / settings.shards_subdir
    report = load_examples(settings.dataset)
    logger.info("dataset %s: %d examples (%d rows read, rejected: %s)", settings.dataset.name,
                len(report.examples), report.rows_read, dict(report.rejected) or "none")
    if not report.examples:
        raise RuntimeError(f"dataset {settings.dataset.name!r} yielded no usable examples; "
                           f"rejected rows by reason: {dict(report.rejected)}")
    tokenizer = load_tokenizer(settings.model)
    style = settings.dataset.prompt_style
    connect(settings.cluster)

    def make_writer(info: Any) -> ShardWriter:
        return ShardWriter(
            shards_dir, writer_id=default_writer_id(), num_layers=info.num_layers,
            model_id=info.model_id, config=resolved_config,
            rows_per_shard=settings.rows_per_shard, flush_seconds=settings.flush_seconds,
        )

    run_summary = run_search_job(
        report.examples,
        writer=make_writer,
        render=lambda ex: render_prompt(ex, tokenizer, style=style),
        model_spec=settings.model,
        mcts_config=settings.mcts,
        generation=settings.generation,
        pool_config=settings.pool,
        driver_config=settings.driver,
        rejected=report.rejected,
        progress=resolved_config.get("progress", True),
    )
    wall = time.perf_counter() - started
    totals = dataset_totals(shards_dir, settings.dataset.name, {ex.id for ex in report.examples})
    summary = {
        **totals,
        "dataset": settings.dataset.name,
        "model": run_summary.model_id or settings.model.name,
        "rows_rejected": dict(report.rejected),
        "this_run": run_summary.to_dict(),
        "wall_seconds": wall,
        "shards_dir": str(shards_dir),
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(format_totals(totals, wall))
    print(f"rows rejected       {sum(report.rejected.values())} {dict(report.rejected) or ''}")
    print(f"summary             {output_dir / SUMMARY_FILE}")
    return summary
