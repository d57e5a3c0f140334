"""Reading complete supervision shards: tables, example ids for resume, file metadata.

Readers only ever look at ``shard-*.parquet`` (see :mod:`drllm.shards.layout`), so a shard that
is still being written, or was left behind by a crash, is never read. :func:`read_shards` sees
every example once: it drops rows whose ``(dataset, example_id)`` an earlier file already holds
(two drivers on one directory, or a merge caught between its rename and its deletes; counted
in :data:`META_DUPLICATES`), and lists again when a file vanishes under it (a merge finished).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from drllm.shards.compact import drop_duplicate_rows
from drllm.shards.layout import QUARANTINE_DIR, inprogress_files, shard_files
from drllm.shards.schema import (
    META_CONFIG,
    META_CONFIG_HASH,
    META_CREATED,
    META_MODEL_ID,
    META_NUM_LAYERS,
    META_SCHEMA_VERSION,
    META_WRITER_ID,
    SUPPORTED_SCHEMA_VERSIONS,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

META_DUPLICATES = b"drllm.duplicates_dropped"
"""Schema metadata of :func:`read_shards`' table: rows dropped as duplicates (decimal text)."""
LIST_RETRIES = 5

_META_KEYS = {
    META_SCHEMA_VERSION: "schema_version",
    META_CONFIG: "config",
    META_CONFIG_HASH: "config_hash",
    META_MODEL_ID: "model_id",
    META_NUM_LAYERS: "num_layers",
    META_CREATED: "created",
    META_WRITER_ID: "writer_id",
}


class UnreadableShardError(ValueError):
    """A ``shard-*.parquet`` file that is not a readable drllm shard (truncated, a foreign
    Parquet file, not Parquet at all). The message names the file and the fix."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(
            f"{path} is not a readable drllm shard ({why}). A search rerun into "
            f"{path.parent} moves such files to {QUARANTINE_DIR}/ and keeps the other shards; "
            "or move it out of the directory yourself"
        )
        self.path = path
        self.why = why


def _read(path: Path, read: Callable[[Path], T]) -> T:
    """``read(path)``, with Arrow's decoder errors turned into :class:`UnreadableShardError`
    (a vanished file still raises ``FileNotFoundError``: a merge replaced it)."""
    try:
        return read(path)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as err:
        raise UnreadableShardError(path, f"{type(err).__name__}: {err}") from err


def _decode_metadata(raw: dict[bytes, bytes] | None, where: Path) -> dict[str, Any]:
    raw = raw or {}
    out: dict[str, Any] = {}
    for key, name in _META_KEYS.items():
        value = raw.get(key.encode())
        if value is None:
            raise UnreadableShardError(where, f"no file metadata {key!r}: not a drllm shard")
        out[name] = value.decode("utf-8")
    if out["schema_version"] not in SUPPORTED_SCHEMA_VERSIONS:
        raise ValueError(
            f"{where} has shard schema version {out['schema_version']!r}; this drllm reads "
            f"{sorted(SUPPORTED_SCHEMA_VERSIONS)}. Shards of older versions hold labels found "
            "under rewards that broken outputs could win (version 2: the last number anywhere) "
            "and no search trace: search the questions again into a new output directory"
        )
    out["num_layers"] = int(out["num_layers"])
    out["config"] = json.loads(out["config"])
    return out


def read_shard_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """File metadata of one shard, decoded.

    Returns a dict with ``schema_version`` (str), ``config`` (the resolved config, parsed),
    ``config_hash``, ``model_id``, ``num_layers`` (int), ``created`` (ISO 8601 UTC),
    ``writer_id`` and ``rows`` (int, from the Parquet footer).
    """
    path = Path(path)
    footer = _read(path, pq.read_metadata)
    out = _decode_metadata(footer.metadata, path)
    out["rows"] = footer.num_rows
    return out


def _check_consistent(metas: list[dict[str, Any]], files: list[Path]) -> None:
    first = metas[0]
    for meta, path in zip(metas[1:], files[1:]):
        for key in ("num_layers", "model_id"):
            if meta[key] != first[key]:
                raise ValueError(
                    f"{path} has {key}={meta[key]!r} but {files[0]} has {first[key]!r}; a shard "
                    "directory holds one model and one L, so split these files into two"
                )


def _common_metadata(tables: list[pa.Table]) -> dict[bytes, bytes]:
    """File metadata entries that every table shares with the same value."""
    common = dict(tables[0].schema.metadata or {})
    for table in tables[1:]:
        meta = table.schema.metadata or {}
        common = {k: v for k, v in common.items() if meta.get(k) == v}
    common.pop(b"ARROW:schema", None)
    return common


def read_shards(
    out_dir: str | os.PathLike, columns: Sequence[str] | None = None
) -> pa.Table:
    """All complete shards of ``out_dir`` concatenated, in file-name order.

    Args:
        out_dir: a shard directory.
        columns: column names to read (all when ``None``).

    Returns:
        One table, one row per ``(dataset, example_id)`` (duplicates dropped, keeping the
        first in file-name order; :func:`duplicates_dropped` tells how many -- only when both
        columns are read); its schema metadata keeps the file metadata every shard agrees on
        (schema version, model id, num_layers, and the config when all runs used the same).

    Raises:
        FileNotFoundError: no complete shard in ``out_dir``.
        UnreadableShardError: a shard file cannot be read (names it and the fix).
        ValueError: shards disagree on model or L, or have an unsupported schema version.
    """
    for attempt in range(LIST_RETRIES):
        files = shard_files(out_dir)
        if not files:
            pending = len(inprogress_files(out_dir))
            raise FileNotFoundError(
                f"no complete shards (shard-*.parquet) in {os.fspath(out_dir)}"
                + (f"; {pending} in-progress file(s) are not readable yet" if pending else "")
            )
        try:
            wanted = list(columns) if columns is not None else None
            tables = [_read(f, lambda p: pq.read_table(p, columns=wanted)) for f in files]
            break
        except FileNotFoundError:  # a merge replaced some files meanwhile: list again
            if attempt == LIST_RETRIES - 1:
                raise
    metas = [_decode_metadata(t.schema.metadata, f) for t, f in zip(tables, files)]
    _check_consistent(metas, files)
    common = _common_metadata(tables)
    tables = [t.replace_schema_metadata(None) for t in tables]
    table, dropped = _drop_duplicates(pa.concat_tables(tables), out_dir)
    common[META_DUPLICATES] = str(dropped).encode()
    return table.replace_schema_metadata(common)


def _drop_duplicates(table: pa.Table, out_dir: str | os.PathLike) -> tuple[pa.Table, int]:
    """Keep the first row of each ``(dataset, example_id)``; needs those two columns."""
    if "dataset" not in table.column_names or "example_id" not in table.column_names:
        return table, 0
    table, dropped = drop_duplicate_rows(table)
    if dropped:
        logger.warning("%s: dropped %d duplicate (dataset, example_id) rows (kept the first)",
                       os.fspath(out_dir), dropped)
    return table, dropped


def duplicates_dropped(table: pa.Table) -> int:
    """Rows :func:`read_shards` dropped as duplicates while reading ``table``."""
    return int((table.schema.metadata or {}).get(META_DUPLICATES, b"0"))


def completed_keys(out_dir: str | os.PathLike) -> set[tuple[str, str]]:
    """``(dataset, example_id)`` of every row in the complete shards of ``out_dir``."""
    keys: set[tuple[str, str]] = set()
    for path in shard_files(out_dir):
        table = _read(path, lambda p: pq.read_table(p, columns=["dataset", "example_id"]))
        datasets = table.column("dataset").cast(pa.string()).to_pylist()
        keys.update(zip(datasets, table.column("example_id").to_pylist()))
    return keys


def completed_example_ids(
    out_dir: str | os.PathLike, dataset: str | None = None
) -> set[str]:
    """Example ids already written to complete shards of ``out_dir`` (for resume).

    Reads only the ``example_id`` column (and ``dataset`` when filtering). Returns an empty set
    when the directory does not exist or holds no shard yet.

    Args:
        out_dir: a shard directory.
        dataset: when given, only ids of rows from this dataset adapter.
    """
    if dataset is not None:
        return {eid for ds, eid in completed_keys(out_dir) if ds == dataset}
    ids: set[str] = set()
    for path in shard_files(out_dir):
        table = _read(path, lambda p: pq.read_table(p, columns=["example_id"]))
        ids.update(table.column(0).to_pylist())
    return ids
