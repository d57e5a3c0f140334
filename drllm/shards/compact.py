"""Merging small shards into one, atomically for readers that drop duplicate rows.

A slow search flushes a partial shard whenever its oldest row has waited ``flush_seconds``, so
that finished searches survive a crash; left alone, that makes hundreds of 1-2 row files.
:func:`merge_shards` rewrites such shards as one: the merged file is written under a temporary
name, fsynced and renamed into place (its footer and manifest entry name the files it
``replaces``), and only then are the sources deleted. Readers never miss a row: between the
rename and the deletes a row is in two files, and :func:`drllm.shards.reader.read_shards` drops
the second copy; a crash in that window is finished by :func:`finish_merges` when a writer next
opens the directory. Imports neither torch nor ray.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from drllm.shards.layout import fsync_dir

logger = logging.getLogger(__name__)

META_REPLACES = "drllm.replaces"
"""File metadata key: JSON list of the shard file names a merged shard replaces."""
COMPRESSION = "zstd"


def drop_duplicate_rows(table: pa.Table) -> tuple[pa.Table, int]:
    """``table`` without rows whose ``(dataset, example_id)`` appeared earlier; rows dropped."""
    if table.num_rows == 0:
        return table, 0
    datasets = table.column("dataset").cast(pa.string()).to_pylist()
    ids = table.column("example_id").to_pylist()
    seen: set[tuple[Any, Any]] = set()
    keep = []
    for key in zip(datasets, ids):
        keep.append(key not in seen)
        seen.add(key)
    dropped = len(keep) - sum(keep)
    return (table.filter(pa.array(keep)) if dropped else table), dropped


def write_atomic(table: pa.Table, tmp: Path, final: Path) -> None:
    """Write ``table`` to ``tmp``, fsync, rename to ``final``, fsync the directory."""
    if final.exists():
        raise FileExistsError(f"{final} already exists; refusing to overwrite a shard")
    try:
        with open(tmp, "wb") as f:
            pq.write_table(table, f, compression=COMPRESSION)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(final.parent)


def merge_shards(
    sources: Sequence[Path], tmp: Path, final: Path, metadata: Mapping[str, str]
) -> int:
    """Write the rows of ``sources`` (in order, duplicates dropped) as one shard ``final``;
    ``metadata`` is its file metadata (``replaces`` is added). Returns the rows written.

    The sources are left in place: the caller appends the manifest entry, then deletes them
    (:func:`delete_replaced`), so that a crash at any point loses no row.
    """
    tables = [pq.read_table(p).replace_schema_metadata(None) for p in sources]
    table, dropped = drop_duplicate_rows(pa.concat_tables(tables))
    if dropped:
        logger.warning("merging %d shards: dropped %d duplicate rows", len(sources), dropped)
    meta = {**metadata, META_REPLACES: json.dumps([p.name for p in sources])}
    write_atomic(table.replace_schema_metadata(meta), tmp, final)
    return table.num_rows


def delete_replaced(out_dir: Path, names: Iterable[str]) -> int:
    """Delete the replaced source shards still present; how many were deleted."""
    deleted = 0
    for name in names:
        path = out_dir / name
        if path.exists():
            path.unlink(missing_ok=True)
            deleted += 1
    if deleted:
        fsync_dir(out_dir)
    return deleted


def replaced_names(entry: Mapping[str, Any]) -> list[str]:
    """The file names a manifest entry (or decoded footer) says it replaces."""
    value = entry.get("replaces") or []
    return [str(v) for v in value]


def footer_replaces(path: Path) -> list[str]:
    """``replaces`` recorded in a shard's footer (empty for an ordinary shard)."""
    raw = (pq.read_metadata(path).metadata or {}).get(META_REPLACES.encode())
    return [str(v) for v in json.loads(raw)] if raw else []


def finish_merges(out_dir: Path, shard_paths: Iterable[Path]) -> int:
    """Finish merges a crash interrupted: delete sources that a present merged shard replaces."""
    present = {p.name for p in shard_paths}
    done = 0
    for path in shard_paths:
        stale = [n for n in footer_replaces(path) if n in present and n != path.name]
        if stale:
            logger.warning("%s: finishing an interrupted merge into %s (deleting %d sources)",
                           out_dir, path.name, len(stale))
            done += delete_replaced(out_dir, stale)
    return done
