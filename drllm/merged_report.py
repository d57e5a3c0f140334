"""One science report over several search outputs: the shards of a sharded search, read as one.

A sharded search (``dataset.shard=k/N``) leaves N run directories (``<run>/shard-k-of-N``),
each with its own ``shards/`` and ``summary.json``. :func:`merged_report` finds their shard
directories (globs allowed), reads every row once (a ``(dataset, example_id)`` in two
directories counts once, the first in argument order), checks they hold one model and one L,
and computes :func:`drllm.report.science_report` over the union, per dataset, with each
run's ``summary.json`` adding what rows cannot tell (examples whose default path failed,
rejected rows, wall time). The figures are those of an unsharded run over the same examples.

Imports neither torch nor ray.
"""

from __future__ import annotations

import glob
import json
import logging
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from drllm.files import SUMMARY_FILE
from drllm.report import REPORT_COLUMNS, label_changes, science_report
from drllm.shards import read_shard_metadata, read_shards, shard_files

logger = logging.getLogger(__name__)



def _expand(patterns: Sequence[str]) -> list[Path]:
    paths: list[Path] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            found = sorted(glob.glob(pattern))
            if not found:
                raise FileNotFoundError(f"{pattern!r} matches nothing")
            paths += [Path(p) for p in found]
        else:
            paths.append(Path(pattern))
    return paths


def _shards_dirs_of(path: Path) -> list[Path]:
    """A shards directory, a run directory (``shards/``), or a run holding ``shard-*-of-*``."""
    if shard_files(path):
        return [path]
    if shard_files(path / "shards"):
        return [path / "shards"]
    parts = sorted(p / "shards" for p in path.glob("shard-*-of-*") if shard_files(p / "shards"))
    if parts:
        return parts
    raise FileNotFoundError(
        f"{path} holds no shards: pass a run directory (with shards/shard-*.parquet), a shards "
        "directory, or a run directory whose shard-k-of-N/ parts hold shards"
    )


def shards_dirs(patterns: Sequence[str]) -> list[Path]:
    """The shard directories named by ``patterns`` (paths or globs), each once, in order.

    Raises:
        FileNotFoundError: a pattern matches nothing, or a path holds no shards.
    """
    out: list[Path] = []
    for path in _expand(patterns):
        for d in _shards_dirs_of(path):
            if d.resolve() not in {o.resolve() for o in out}:
                out.append(d)
    return out


def _check_one_model(dirs: Sequence[Path]) -> dict[str, Any]:
    """The first shard's metadata; every directory must hold its model and L."""
    metas = [(d, read_shard_metadata(shard_files(d)[0])) for d in dirs]
    first_dir, first = metas[0]
    for d, meta in metas[1:]:
        for key in ("model_id", "num_layers"):
            if meta[key] != first[key]:
                raise ValueError(f"{d} has {key}={meta[key]!r} but {first_dir} has "
                                 f"{first[key]!r}; a merged report covers one model")
    return first


def _success_reward(config: dict[str, Any]) -> float:
    return float((config.get("search") or {}).get("success_reward", 1.0))


def _rows(dirs: Sequence[Path]) -> tuple[pd.DataFrame, list[dict[str, Any]], int]:
    """Every row once (first directory wins), the rows per directory, duplicates dropped."""
    tables, parts = [], []
    for d in dirs:
        table = read_shards(d, columns=REPORT_COLUMNS).to_pandas()
        parts.append({"shards_dir": str(d), "rows": int(len(table))})
        tables.append(table)
    rows = pd.concat(tables, ignore_index=True)
    keys = rows["dataset"].astype(str) + "\x00" + rows["example_id"].astype(str)
    duplicated = keys.duplicated(keep="first")
    if duplicated.any():
        logger.warning("%d rows appear in more than one directory; each counts once",
                       int(duplicated.sum()))
    return rows[~duplicated].reset_index(drop=True), parts, int(duplicated.sum())


def _summaries(dirs: Iterable[Path]) -> list[dict[str, Any]]:
    out = []
    for d in dirs:
        path = d.parent / SUMMARY_FILE
        if path.is_file():
            out.append(json.loads(path.read_text(encoding="utf-8")))
    return out


def merged_report(patterns: Sequence[str], dataset: str | None = None,
                  against: Sequence[str] = ()) -> dict[str, Any]:
    """The science report of every row under ``patterns`` (see the module docstring).

    Args:
        patterns: run directories, shards directories or globs of them
            (``outputs/search/m/ds-paper/shard-*-of-4``).
        dataset: report only this dataset (default: each dataset found).
        against: runs of the same questions to compare labels with (e.g. searched under
            another reward): each dataset's report gains ``label_changes``
            (:func:`~drllm.report.label_changes`).

    Returns:
        ``datasets`` (name -> :func:`~drllm.report.science_report`), ``model``,
        ``num_layers``, ``parts`` (each shards directory and its rows, with its run's shard
        and examples searched when its ``summary.json`` is there), ``duplicates_dropped``,
        ``default_failed`` (examples no part could write, ``{id: error}``),
        ``rows_rejected`` (summed), ``wall_seconds_max`` / ``wall_seconds_sum``.
    """
    dirs = shards_dirs(patterns)
    meta = _check_one_model(dirs)
    rows, parts, duplicates = _rows(dirs)
    if dataset is not None:
        rows = rows[rows["dataset"].astype(str) == dataset]
    success = _success_reward(meta["config"])
    datasets = {str(name): science_report(group.reset_index(drop=True), success)
                for name, group in rows.groupby(rows["dataset"].astype(str), sort=True)}
    if against:
        old, _, _ = _rows(shards_dirs(against))
        for name, science in datasets.items():
            science["label_changes"] = label_changes(
                rows[rows["dataset"].astype(str) == name], old, success)
    summaries = _summaries(dirs)
    for part, d in zip(parts, dirs):
        summary = next((s for s in summaries if s.get("shards_dir") == str(d.resolve())), None)
        if summary is not None:
            part.update(shard=summary.get("shard"), examples=summary.get("examples"))
    written = set(rows["example_id"].astype(str))
    failed = {k: v for s in summaries for k, v in (s.get("default_failed") or {}).items()
              if k not in written}
    rejected: dict[str, int] = {}
    for s in summaries:
        for reason, n in (s.get("rows_rejected") or {}).items():
            rejected[reason] = rejected.get(reason, 0) + int(n)
    walls = [float(s.get("wall_seconds", 0.0)) for s in summaries]
    return {"datasets": datasets, "model": meta["model_id"], "num_layers": meta["num_layers"],
            "examples": int(len(rows)), "parts": parts, "duplicates_dropped": duplicates,
            "default_failed": failed, "rows_rejected": rejected,
            "wall_seconds_max": max(walls, default=0.0), "wall_seconds_sum": sum(walls)}
