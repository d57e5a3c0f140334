"""Parquet supervision shards: the contract between the MCTS search and router training.

One row per searched example (schema: :func:`supervision_schema`), one Parquet file per shard,
written atomically by :class:`ShardWriter`; complete shards are ``shard-*.parquet`` in the
output directory, listed in ``_manifest.jsonl``; a shard file that cannot be read is named
(:class:`UnreadableShardError`) and, by a search rerun, moved to ``_quarantine/``
(:func:`quarantine_unreadable`). Any Parquet reader works on the glob
(pyarrow, pandas, DuckDB, HF ``datasets``, Ray Data); :func:`read_shards` and
:func:`completed_example_ids` are the project's own readers (the latter serves resume).

Example::

    with ShardWriter(out, writer_id="w0", num_layers=L, model_id=mid, config=cfg) as w:
        for record in records:
            w.add(record)
    table = read_shards(out)
    best = [decode_path(p) for p in table.column("best_path")]
"""

from drllm.shards.layout import (
    MANIFEST_NAME,
    QUARANTINE_DIR,
    SHARD_GLOB,
    default_writer_id,
    inprogress_files,
    parse_shard_name,
    read_manifest,
    shard_files,
)
from drllm.shards.resume_guard import ResumeConflictError, check_resume, config_differences
from drllm.shards.lock import LockHolder, OutputLock, OutputLockedError, read_holder
from drllm.shards.quarantine import Quarantined, quarantine_unreadable
from drllm.shards.reader import (
    UnreadableShardError,
    completed_example_ids,
    completed_keys,
    duplicates_dropped,
    read_shard_metadata,
    read_shards,
)
from drllm.shards.schema import (
    SCHEMA_VERSION,
    ShardMismatchError,
    SupervisionRecord,
    config_hash,
    config_to_json,
    decode_path,
    record_to_row,
    rows_to_table,
    supervision_schema,
)
from drllm.shards.writer import ShardWriter

__all__ = [
    "ResumeConflictError",
    "check_resume",
    "config_differences",
    "MANIFEST_NAME",
    "QUARANTINE_DIR",
    "Quarantined",
    "UnreadableShardError",
    "quarantine_unreadable",
    "SCHEMA_VERSION",
    "SHARD_GLOB",
    "ShardMismatchError",
    "ShardWriter",
    "SupervisionRecord",
    "completed_example_ids",
    "completed_keys",
    "duplicates_dropped",
    "LockHolder",
    "OutputLock",
    "OutputLockedError",
    "read_holder",
    "config_hash",
    "config_to_json",
    "decode_path",
    "default_writer_id",
    "inprogress_files",
    "parse_shard_name",
    "read_manifest",
    "read_shard_metadata",
    "read_shards",
    "record_to_row",
    "rows_to_table",
    "shard_files",
    "supervision_schema",
]
