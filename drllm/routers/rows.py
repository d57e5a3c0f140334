"""Which supervision rows the routers learn from: the shard directory's identity and the row filter.

An example is *solved* when its default path or some searched path reached the success reward;
its label is its best correct path. An *unsolved* example's label is the default path (the
search found nothing better than "execute every block"), so by default the feature pass -- and
therefore training -- reads **solved rows only** (``rows="solved"``); ``rows="all"`` keeps the
unsolved rows as well.

The filter is applied where the shards are read for the feature pass
(:func:`~drllm.routers.features.run_feature_pass`), so unsolved rows are never featurized. It
is part of the features' cache key: changing it recomputes the features. The counts
(:class:`RowSelection`) travel with the features (``_features.json``) into the router
checkpoint's ``config.json`` (``"rows": {"filter", "used", "skipped_unsolved", ...}``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

logger = logging.getLogger(__name__)

ROW_FILTERS = ("solved", "all")
"""``solved``: rows whose search reached the success reward (default); ``all``: every row."""

SHARD_COLUMNS = ("example_id", "dataset", "rendered_prompt", "best_path", "good_paths",
                 "default_reward", "improved")
"""Shard columns the feature pass reads (``solved`` is read for the filter only; ``trace`` too
when the shards have it, see :func:`shard_columns`)."""

OPTIONAL_COLUMNS = ("trace",)


def shard_columns(files: tuple[Path, ...] | list[Path]) -> list[str]:
    """:data:`SHARD_COLUMNS` plus the optional columns (``trace``) every shard file has."""
    import pyarrow.parquet as pq

    names = [set(pq.read_schema(f).names) for f in files]
    extra = [c for c in OPTIONAL_COLUMNS if names and all(c in n for n in names)]
    return [*SHARD_COLUMNS, *extra]


class NoRowsError(ValueError):
    """The row filter leaves no supervision row to featurize or train on."""


def check_row_filter(rows: str) -> str:
    """``rows`` if it names a row filter, else ``ValueError`` listing :data:`ROW_FILTERS`."""
    if rows not in ROW_FILTERS:
        raise ValueError(f"rows must be one of {list(ROW_FILTERS)}, got {rows!r}")
    return rows


@dataclass(frozen=True)
class ShardsIdentity:
    """Model id, ``L`` and row counts of a shard directory.

    Attributes:
        files: the complete shard files, in name order.
        model_id / num_layers: what every shard was searched with.
        rows: rows over all shards; ``solved_rows`` of them are solved.
    """

    files: tuple[Path, ...]
    model_id: str
    num_layers: int
    rows: int
    solved_rows: int


def _solved_count(path: Path) -> int:
    import pyarrow.parquet as pq

    column = pq.read_table(path, columns=["solved"]).column("solved")
    return int(pc.sum(column.cast(pa.int64())).as_py() or 0)


def shards_identity(shards_dir: str | Path) -> ShardsIdentity:
    """Read every shard footer (and ``solved`` column); shards must agree on the model and ``L``."""
    from drllm.shards import read_shard_metadata, shard_files

    files = tuple(shard_files(shards_dir))
    if not files:
        raise FileNotFoundError(f"no complete shards (shard-*.parquet) in {shards_dir}")
    metas = [read_shard_metadata(f) for f in files]
    for meta, path in zip(metas, files):
        if (meta["model_id"], meta["num_layers"]) != (metas[0]["model_id"], metas[0]["num_layers"]):
            raise ValueError(
                f"{path} holds model {meta['model_id']!r} (L={meta['num_layers']}) but "
                f"{files[0]} holds {metas[0]['model_id']!r} (L={metas[0]['num_layers']})"
            )
    return ShardsIdentity(files, metas[0]["model_id"], metas[0]["num_layers"],
                          sum(m["rows"] for m in metas), sum(_solved_count(f) for f in files))


@dataclass(frozen=True)
class RowSelection:
    """The rows a row filter keeps.

    Attributes:
        filter: the row filter (:data:`ROW_FILTERS`).
        total: rows in the shards.
        used: rows kept (featurized, then split into train / validation).
        skipped_unsolved: unsolved rows left out by the filter.
    """

    filter: str
    total: int
    used: int
    skipped_unsolved: int

    def to_dict(self) -> dict[str, Any]:
        """``{"filter", "used", "skipped_unsolved"}`` -- the checkpoint's ``rows`` entry."""
        return {"filter": self.filter, "used": self.used,
                "skipped_unsolved": self.skipped_unsolved}


def select_rows(ident: ShardsIdentity, rows: str, where: str | Path = "") -> RowSelection:
    """Apply the row filter ``rows`` to the counts of ``ident``.

    Raises:
        NoRowsError: the filter keeps no row; the message gives the counts and how to change
            the filter.
    """
    check_row_filter(rows)
    unsolved = ident.rows - ident.solved_rows
    if rows == "solved":
        selection = RowSelection(rows, ident.rows, ident.solved_rows, unsolved)
    else:
        selection = RowSelection(rows, ident.rows, ident.rows, 0)
    if selection.used == 0:
        place = where or (ident.files[0].parent if ident.files else "the shards")
        raise NoRowsError(
            f"row filter rows={rows!r} leaves no rows to train on: {place} holds {ident.rows} "
            f"rows, {ident.solved_rows} solved and {unsolved} unsolved (an unsolved row is "
            "labelled with the default path). Search more examples or with a larger budget, "
            "or train on every row with features.rows=all (FeatureConfig(rows='all'))"
        )
    logger.info("rows (filter %s): using %d of %d shard rows, skipping %d unsolved",
                rows, selection.used, selection.total, selection.skipped_unsolved)
    return selection


def filter_table(table: pa.Table, rows: str) -> pa.Table:
    """The rows of a shard table (with a ``solved`` column) that the filter keeps."""
    if check_row_filter(rows) == "all":
        return table
    return table.filter(table.column("solved"))


def filter_dataset(ds: Any, rows: str) -> Any:
    """A Ray Data dataset of shard rows narrowed by the filter (pushed down into the read)."""
    if check_row_filter(rows) == "all":
        return ds
    from ray.data.expressions import col

    return ds.filter(expr=col("solved") == True)  # noqa: E712 (an expression, not a test)
