"""Per-example results of an evaluation: Parquet parts written atomically, read back for resume.

One row per (policy, example): the answer, its grades under the configured grader and its
strict / lenient counterparts, the path, its cost and timing (:data:`RESULT_SCHEMA`). Rows are
buffered and written as ``results/part-<writer>-<seq>.parquet`` (a dot-prefixed temporary name,
then renamed), so a part is visible only once complete; an interrupted run loses at most the
rows of its buffer. Reading returns every part; a (policy key, dataset, example) written twice
(a failed row retried on resume) keeps its latest row.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any, Mapping, Optional

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

PART_GLOB = "part-*.parquet"
KEY_COLUMNS = ["policy_key", "dataset", "example_id"]

RESULT_SCHEMA = pa.schema([
    ("policy_key", pa.string()), ("policy", pa.string()), ("kind", pa.string()),
    ("alpha", pa.float64()), ("gate", pa.float64()), ("k", pa.int64()), ("dataset", pa.string()),
    ("example_id", pa.string()), ("gold", pa.string()), ("grader", pa.string()),
    ("failed", pa.bool_()), ("reason", pa.string()), ("reward", pa.float64()),
    ("correct", pa.bool_()), ("grades", pa.string()), ("response", pa.string()),
    ("path", pa.list_(pa.int8())), ("cost", pa.int64()), ("layers_executed", pa.int64()),
    ("tokens", pa.int64()), ("prompt_tokens", pa.int64()), ("finish_reason", pa.string()),
    ("seconds", pa.float64()), ("router_seconds", pa.float64()), ("written_at", pa.float64()),
])
"""Columns of a results part. ``grades`` is JSON ``{grader: correct}``; ``cost`` is blocks per
forward pass of ``path``; ``layers_executed`` block applications over the whole answer (prefill
plus decode, the paper's "number of layers"); ``seconds`` this row's share of its executor
call; ``router_seconds`` its share of the time in the routers."""


def grades_of(row: Mapping[str, Any]) -> dict[str, bool]:
    return {str(k): bool(v) for k, v in json.loads(row["grades"] or "{}").items()}


class ResultStore:
    """The results directory of one evaluation run (see the module docstring).

    Args:
        directory: where parts go (created on the first write).
        flush_rows: rows buffered before a part is written.
    """

    def __init__(self, directory: str | os.PathLike, flush_rows: int = 64) -> None:
        self.directory = Path(directory)
        self.flush_rows = int(flush_rows)
        self.writer_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._buffer: list[dict[str, Any]] = []
        self._seq = 0

    def add(self, row: Mapping[str, Any]) -> None:
        self._buffer.append({**row, "written_at": time.time()})
        if len(self._buffer) >= self.flush_rows:
            self.flush()

    def flush(self) -> Optional[Path]:
        """Write the buffered rows as one part; its path (``None`` if nothing was buffered)."""
        if not self._buffer:
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(self._buffer, schema=RESULT_SCHEMA)
        final = self.directory / f"part-{self.writer_id}-{self._seq:05d}.parquet"
        tmp = self.directory / f".{final.name}.inprogress"
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, final)
        self._seq += 1
        self._buffer.clear()
        logger.debug("wrote %s (%d rows)", final.name, table.num_rows)
        return final

    def load(self) -> pd.DataFrame:
        """Every complete part, the latest row per (policy key, dataset, example)."""
        return load_results(self.directory)


def load_results(directory: str | os.PathLike) -> pd.DataFrame:
    """The per-example results under ``directory`` (empty frame with the columns if none)."""
    files = sorted(Path(directory).glob(PART_GLOB)) if Path(directory).is_dir() else []
    if not files:
        return RESULT_SCHEMA.empty_table().to_pandas()
    table = pa.concat_tables([pq.read_table(f, schema=RESULT_SCHEMA) for f in files])
    frame = table.to_pandas().sort_values("written_at", kind="stable")
    frame = frame.drop_duplicates(KEY_COLUMNS, keep="last")
    return frame.reset_index(drop=True)
