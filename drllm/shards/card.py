"""The dataset card of a search's output directory: ``README.md`` with a Hugging Face header.

A search writes ``<output dir>/README.md`` beside its shards directory, so that

    datasets.load_dataset("<output dir>")

finds the shards and describes itself: the header's ``configs`` entry lists the complete shard
files by name (never ``.inprogress`` files or the manifest), the features (from the shards'
Arrow schema) and tags; the body holds the model, the search-affecting config, the run's
science figures and what a row means.

The card is rewritten at the end of every run over the directory, so a resumed run's card
lists every shard there. Files are listed by name rather than by a glob because ``datasets``
keys its cache on the card's patterns, not on the files they match: with a glob, a directory
that gained shards on resume loads the old rows from the cache.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import pyarrow as pa
import yaml

from drllm.files import atomic_write_text
from drllm.shards.layout import SHARD_GLOB, shard_files

CARD_NAME = "README.md"

COLUMNS: dict[str, str] = {
    "example_id": "the question's id in its dataset",
    "prompt": "the question as the dataset states it",
    "rendered_prompt": "the exact text the model saw (chat template applied)",
    "gold": "the gold answer the grader compares with",
    "default_path / best_path": "fixed_size_list<int8>[L]: per block 0 skip, 1 execute, 2 repeat",
    "default_response / best_response": "the greedy generation along that path",
    "solved": "the default path or some evaluated path reached the success reward",
    "best_path (label)": "solved: the best correct path (reward, then cost); unsolved: the "
                         "default path",
    "good_paths": "correct paths at least as good as the default, best first",
    "trace": "every evaluated path: simulation, reward, cost, edits, grader reason, the answer "
             "read and where, plausibility under the default path, rejected as implausible, "
             "log-likelihood margin, response length, finish reason, response text "
             "(null when searched with output.trace_text=false)",
}


def _features_yaml(schema: pa.Schema) -> list[dict[str, Any]]:
    """The schema as the Hub's ``dataset_info.features`` list."""
    import datasets

    return datasets.Features.from_arrow_schema(schema)._to_yaml_list()


def _figures(report: Mapping[str, Any]) -> list[str]:
    """Markdown lines of the run's headline figures (``report``: the search summary)."""
    if not report.get("examples"):
        return ["No example has been searched yet."]
    lines = ["- **placebo golds** (a control run): every gold is a wrong answer, so what the "
             "search solved or improved was won by luck or a gamed reward"
             ] if report.get("placebo") else []
    lines += [
        f"- examples: {report['examples']} ({report.get('over', '')})",
        f"- solved: {report['solved']} ({report['solved_fraction']:.1%}); improved: "
        f"{report['improved']} ({report['improved_fraction']:.1%})",
        f"- default accuracy {report['default_accuracy']:.1%} -> after search "
        f"{report['search_accuracy']:.1%} (search reward)",
    ]
    for name, acc in (report.get("accuracy_by_grader") or {}).items():
        lines.append(f"  - under `{name}`: default {acc['default_accuracy']:.1%}, best "
                     f"{acc['best_accuracy']:.1%}")
    shares = report.get("label_shares") or {}
    if shares:
        lines.append("- label shares (solved rows, all blocks): "
                     + ", ".join(f"{k} {v:.1%}" for k, v in shares.items()))
    lines.append(f"- blocks saved per forward pass (solved rows): "
                 f"{report['layers_saved_solved_mean']:.2f}")
    ev = report.get("evaluations_per_example") or {}
    if ev:
        lines.append(f"- evaluations per example: mean {ev['mean']:.1f} (total {ev['total']})")
    trace = report.get("trace") or {}
    if trace:
        lines.append(f"- accepted edited responses rejected as implausible: "
                     f"{trace['implausible_rejections']}")
    return lines


def dataset_card(*, shards_subdir: str, schema: pa.Schema, model_id: str, dataset: str,
                 search_config: Mapping[str, Any], report: Mapping[str, Any],
                 files: Sequence[str] = ()) -> str:
    """The card's text (see the module docstring).

    Args:
        shards_subdir: the shards directory relative to the card's directory (``shards``).
        schema: the shards' Arrow schema (:func:`~drllm.shards.schema.supervision_schema`).
        model_id: the searched model.
        dataset: the searched dataset's name.
        search_config: the search-affecting config (model, dataset, search, driver, prior).
        report: the run's summary (:func:`drllm.report.science_report` and more).
        files: the shard file names to list (default: the ``shard-*.parquet`` glob).
    """
    header = {
        "pretty_name": f"drllm layer-path supervision: {model_id} on {dataset}",
        "tags": ["drllm", "layer-routing", "mcts", "supervision"],
        "configs": [{"config_name": "default", "data_files": [
            {"split": "train", "path": [f"{shards_subdir}/{name}" for name in files]
             if files else f"{shards_subdir}/{SHARD_GLOB}"}]}],
        "dataset_info": {"features": _features_yaml(schema)},
    }
    rows = "\n".join(f"| `{name}` | {text} |" for name, text in COLUMNS.items())
    config = json.dumps(dict(search_config), indent=2, sort_keys=True, default=str)
    return "\n".join([
        "---", yaml.safe_dump(header, sort_keys=False).rstrip(), "---", "",
        f"# Layer-path supervision: {model_id} on {dataset}", "",
        "Written by `python -m drllm.jobs.search` (drllm): for each question, a length-aware "
        "Monte Carlo tree search edited the model's layer path (skip or repeat blocks), "
        "generated and graded an answer along each edited path, and kept the cheapest path "
        "that preserves or improves the answer. One row per question.", "",
        "```python",
        "import datasets; datasets.load_dataset(\"<this directory>\")",
        f"import pandas as pd; pd.read_parquet(\"<this directory>/{shards_subdir}\")",
        "```", "",
        "## Figures of this directory", "", *_figures(report), "",
        "## Columns", "", "| column | meaning |", "|---|---|", rows, "",
        "## Search config (the part that decides what a search finds)", "",
        "```json", config, "```", "",
    ])


def write_dataset_card(output_dir: str | os.PathLike, shards_dir: str | os.PathLike, *,
                       schema: pa.Schema, model_id: str, dataset: str,
                       search_config: Mapping[str, Any], report: Mapping[str, Any]) -> Path:
    """Write (atomically) ``<output_dir>/README.md`` for the shards in ``shards_dir``.

    Raises:
        ValueError: ``shards_dir`` is not inside ``output_dir`` (the card could not point at it).
    """
    out, shards = Path(output_dir).resolve(), Path(shards_dir).resolve()
    try:
        sub = shards.relative_to(out).as_posix()
    except ValueError as err:
        raise ValueError(f"shards directory {shards} is not inside {out}: a dataset card there "
                         "could not point at it") from err
    text = dataset_card(shards_subdir=sub, schema=schema, model_id=model_id, dataset=dataset,
                        search_config=search_config, report=report,
                        files=[p.name for p in shard_files(shards)])
    path = out / CARD_NAME
    atomic_write_text(path, text)
    return path
