"""Atomic, resumable writer of supervision shards.

Each flush writes one Parquet file (zstd) to ``.shard-{writer}-{seq:06d}.parquet.inprogress``,
fsyncs it, ``os.replace``-s it to ``shard-{writer}-{seq:06d}.parquet``, fsyncs the directory and
only then appends the shard's line to ``_manifest.jsonl``. A crash therefore never exposes a
partial shard; a crash after the rename but before the manifest append is repaired by the next
writer that opens the directory (it adds the missing line from the shard's footer).

Opening a directory also: truncates a torn manifest tail; deletes stale ``.inprogress`` files
(this writer id's always, other writers' once older than ``stale_inprogress_seconds`` so that a
live writer sharing the directory is not disturbed); refuses a directory whose shards hold
another model or L (:class:`ShardMismatchError`); continues ``seq`` after this writer id's
existing shards; and loads the ``(dataset, example_id)`` keys already written.

Shard size is governed by rows: a shard is written once ``rows_per_shard`` rows are buffered.
A time-based flush (``flush_seconds``) writes a *partial* shard so that finished searches
survive a crash; this writer's partial shards are merged (:mod:`drllm.shards.compact`) as soon
as they add up to a full shard, and on :meth:`ShardWriter.close`. A writer opened with
``merge_on_open=True`` (the caller holds the directory's :class:`~drllm.shards.lock.OutputLock`,
so no other writer is live) also merges the partial shards an earlier, killed run left.

Duplicates: a record whose ``(dataset, example_id)`` is already in a complete shard of the
directory or was already added to this writer is **ignored** with a warning and counted in
``duplicates_skipped``; an example is never written twice.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Mapping

from drllm.shards.compact import (
    delete_replaced,
    finish_merges,
    footer_replaces,
    merge_shards,
    write_atomic,
)
from drllm.shards.layout import (
    append_manifest,
    check_writer_id,
    inprogress_files,
    inprogress_name,
    parse_shard_name,
    read_manifest,
    repair_manifest_tail,
    shard_files,
    shard_name,
)
from drllm.shards.reader import completed_keys, read_shard_metadata
from drllm.shards.schema import (
    META_CONFIG,
    META_CONFIG_HASH,
    META_CREATED,
    META_MODEL_ID,
    META_NUM_LAYERS,
    META_SCHEMA_VERSION,
    META_WRITER_ID,
    SCHEMA_VERSION,
    ShardMismatchError,
    SupervisionRecord,
    check_num_layers,
    config_hash,
    config_to_json,
    record_to_row,
    table_from_rows,
)

logger = logging.getLogger(__name__)



def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ShardWriter:
    """Buffers :class:`SupervisionRecord` rows and writes them as atomic Parquet shards.

    Args:
        out_dir: shard directory (created if missing). One model and one L per directory.
        writer_id: short id in the file names (``"w0"``, ``"host-1234"``); unique among the
            processes writing this directory at the same time.
        num_layers: L, the model's decoder blocks; every row's paths have L decisions.
        model_id: the frozen model searched; every row must carry it.
        config: the resolved run config (plain mappings/lists/scalars), stored in each file.
        rows_per_shard: flush once this many rows are buffered.
        flush_seconds: flush on :meth:`add` / :meth:`flush_if_due` once the oldest buffered
            row has waited this long (seconds).
        stale_inprogress_seconds: other writers' ``.inprogress`` files older than this
            (seconds since last modification) are deleted on open.
        clock: monotonic clock in seconds (injectable for tests).
        merge_on_open: merge the directory's partial shards (fewer than ``rows_per_shard``
            rows, this config) left by earlier writers; only while holding the directory lock.
        trace_text: keep each evaluated path's response text in the ``trace`` column
            (``False``: null, the other trace figures kept).

    There is no timer thread: ``flush_seconds`` is checked on :meth:`add`, so a caller that may
    sit idle with rows buffered calls :meth:`flush_if_due` from its wait loop. Not thread-safe:
    one writer per thread (with distinct writer ids), or serialize calls.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        *,
        writer_id: str,
        num_layers: int,
        model_id: str,
        config: Mapping[str, Any],
        rows_per_shard: int = 64,
        flush_seconds: float = 60.0,
        stale_inprogress_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        merge_on_open: bool = False,
        trace_text: bool = True,
    ) -> None:
        self.writer_id = check_writer_id(writer_id)
        self.num_layers = check_num_layers(num_layers)
        if not isinstance(model_id, str) or not model_id:
            raise ValueError(f"model_id must be a non-empty string, got {model_id!r}")
        if rows_per_shard < 1:
            raise ValueError(f"rows_per_shard must be >= 1, got {rows_per_shard}")
        if not flush_seconds >= 0:
            raise ValueError(f"flush_seconds must be >= 0, got {flush_seconds}")
        self.model_id = model_id
        self.config_json = config_to_json(config)
        self.config_hash = config_hash(self.config_json)
        self.rows_per_shard = int(rows_per_shard)
        self.trace_text = bool(trace_text)
        self.flush_seconds = float(flush_seconds)
        self.out_dir = Path(out_dir)
        self._clock = clock
        self.rows_written = 0
        self.shards_written = 0
        self.duplicates_skipped = 0
        self.shards_merged = 0
        self._partials: list[tuple[Path, int]] = []  # this writer's time-flushed shards
        self._rows: list[dict[str, Any]] = []
        self._rows_before_flush = 0
        self._first_buffered_at: float | None = None
        self._closed = False
        self.out_dir.mkdir(parents=True, exist_ok=True)
        repair_manifest_tail(self.out_dir)
        self._clean_inprogress(stale_inprogress_seconds)
        self._next_seq = self._check_directory()
        finish_merges(self.out_dir, shard_files(self.out_dir))
        if merge_on_open:
            self._merge_leftovers()
        self._seen = completed_keys(self.out_dir)
        logger.info(
            "shard writer %s on %s: L=%d, model %s, %d examples already written, next seq %d",
            self.writer_id, self.out_dir, self.num_layers, self.model_id, len(self._seen),
            self._next_seq,
        )

    # ------------------------------------------------------------------ opening the directory

    def _clean_inprogress(self, stale_seconds: float) -> None:
        now = time.time()
        for path in inprogress_files(self.out_dir):
            parsed = parse_shard_name(path.name[1 : -len(".inprogress")])
            ours = parsed is not None and parsed[0] == self.writer_id
            try:
                age = now - path.stat().st_mtime
            except FileNotFoundError:
                continue
            if ours or age >= stale_seconds:
                logger.warning("deleting stale in-progress shard %s (%.0f s old)", path, age)
                path.unlink(missing_ok=True)

    def _check_entry(self, entry: Mapping[str, Any], where: str) -> None:
        if int(entry["num_layers"]) != self.num_layers or entry["model_id"] != self.model_id:
            raise ShardMismatchError(
                f"{where} holds model {entry['model_id']!r} with L={entry['num_layers']}, but "
                f"this writer has model {self.model_id!r} with L={self.num_layers}; use another "
                "output directory for another model"
            )

    def _check_directory(self) -> int:
        """Validate existing shards against this writer, repair the manifest; next seq."""
        entries = {e["file"]: e for e in read_manifest(self.out_dir)}
        for name, entry in entries.items():
            self._check_entry(entry, f"{self.out_dir} (manifest entry {name})")
            if entry.get("config_hash") != self.config_hash:
                logger.warning(
                    "%s: %s was written with another config (hash %s, now %s)",
                    self.out_dir, name, entry.get("config_hash"), self.config_hash,
                )
        files = shard_files(self.out_dir)
        missing = []
        for path in files:
            if path.name not in entries:
                meta = read_shard_metadata(path)
                self._check_entry(meta, str(path))
                logger.warning("%s: adding %s, missing from the manifest", self.out_dir, path.name)
                missing.append(self._manifest_entry(path.name, meta["rows"], meta["rows"],
                                                    meta["config_hash"], meta["created"],
                                                    meta["writer_id"], footer_replaces(path)))
        append_manifest(self.out_dir, missing)
        present = {p.name for p in files}
        for name in entries.keys() - present:
            logger.warning("%s: manifest lists %s, which is missing", self.out_dir, name)
        seqs = [parse_shard_name(n) for n in present | entries.keys()]
        own = [s[1] for s in seqs if s is not None and s[0] == self.writer_id]
        return max(own) + 1 if own else 0

    def _manifest_entry(
        self, file: str, rows: int, ids: int, chash: str, created: str, writer_id: str,
        replaces: list[str] | None = None,
    ) -> dict[str, Any]:
        extra = {"replaces": replaces} if replaces else {}
        return {**extra,
            "file": file,
            "rows": int(rows),
            "example_ids": int(ids),
            "schema_version": SCHEMA_VERSION,
            "model_id": self.model_id,
            "num_layers": self.num_layers,
            "config_hash": chash,
            "created": created,
            "writer_id": writer_id,
        }

    # ------------------------------------------------------------------ writing

    @property
    def buffered(self) -> int:
        """Rows added but not yet written."""
        return len(self._rows)

    def add(self, record: SupervisionRecord) -> None:
        """Buffer one record; writes a shard when ``rows_per_shard`` or ``flush_seconds`` is hit.

        Raises:
            ShardMismatchError: the record's model id or L differs from the writer's.
            ValueError: the record is internally inconsistent (see ``record_to_row``).
            RuntimeError: the writer is closed.
        """
        if self._closed:
            raise RuntimeError(f"shard writer {self.writer_id} on {self.out_dir} is closed")
        ex = record.example
        if record.model_id != self.model_id or record.result.num_layers != self.num_layers:
            raise ShardMismatchError(
                f"example {ex.dataset}/{ex.id}: model {record.model_id!r} with "
                f"L={record.result.num_layers}, but {self.out_dir} holds model "
                f"{self.model_id!r} with L={self.num_layers}"
            )
        key = (ex.dataset, str(ex.id))
        if key in self._seen:
            self.duplicates_skipped += 1
            logger.warning("shard writer %s: ignoring duplicate example %s/%s",
                           self.writer_id, *key)
            return
        row = record_to_row(record, trace_text=self.trace_text)
        self._seen.add(key)
        if not self._rows:
            self._first_buffered_at = self._clock()
        self._rows.append(row)
        if len(self._rows) >= self.rows_per_shard:
            self.flush()
        else:
            self.flush_if_due()

    def flush_if_due(self) -> Path | None:
        """Write the buffer if its oldest row has waited ``flush_seconds``; the shard or None.

        The shard is partial: once this writer's partial shards add up to ``rows_per_shard``
        rows they are merged into one (the returned file may then be gone already).
        """
        if self._rows and self._clock() - self._first_buffered_at >= self.flush_seconds:
            path = self.flush()
            if path is not None:
                self._partials.append((path, self.rows_written - self._rows_before_flush))
                if sum(n for _, n in self._partials) >= self.rows_per_shard:
                    self._merge_partials()
            return path
        return None

    def _metadata(self, created: str) -> dict[str, str]:
        return {
            META_SCHEMA_VERSION: SCHEMA_VERSION,
            META_CONFIG: self.config_json,
            META_CONFIG_HASH: self.config_hash,
            META_MODEL_ID: self.model_id,
            META_NUM_LAYERS: str(self.num_layers),
            META_CREATED: created,
            META_WRITER_ID: self.writer_id,
        }

    def flush(self) -> Path | None:
        """Write all buffered rows as one shard now; its path, or ``None`` if nothing buffered.

        On an error the rows stay buffered (a later flush retries) and the temporary file is
        removed; an existing shard is never overwritten.
        """
        if not self._rows:
            return None
        seq = self._next_seq
        final = self.out_dir / shard_name(self.writer_id, seq)
        tmp = self.out_dir / inprogress_name(self.writer_id, seq)
        if final.exists():
            raise FileExistsError(
                f"{final} already exists; another process is writing with writer_id "
                f"{self.writer_id!r} (writer ids must be unique per concurrent writer)"
            )
        created = _utc_now()
        table = table_from_rows(self._rows, self.num_layers)
        table = table.replace_schema_metadata(self._metadata(created))
        write_atomic(table, tmp, final)
        self._next_seq = seq + 1
        rows = len(self._rows)
        self._rows_before_flush = self.rows_written
        self._rows, self._first_buffered_at = [], None
        self.rows_written += rows
        self.shards_written += 1
        append_manifest(self.out_dir, [self._manifest_entry(
            final.name, rows, rows, self.config_hash, created, self.writer_id)])
        logger.info("wrote %s (%d rows; %d rows in %d shards by this writer)",
                    final, rows, self.rows_written, self.shards_written)
        return final

    # ------------------------------------------------------------------ merging

    def merge(self, sources: list[Path]) -> Path | None:
        """Merge ``sources`` (complete shards of this directory and this config) into one new
        shard of this writer; the sources are deleted once it is in place. Returns it."""
        if len(sources) < 2:
            return None
        seq = self._next_seq
        final = self.out_dir / shard_name(self.writer_id, seq)
        tmp = self.out_dir / inprogress_name(self.writer_id, seq)
        created = _utc_now()
        rows = merge_shards(sources, tmp, final, self._metadata(created))
        self._next_seq = seq + 1
        names = [p.name for p in sources]
        append_manifest(self.out_dir, [self._manifest_entry(
            final.name, rows, rows, self.config_hash, created, self.writer_id, names)])
        delete_replaced(self.out_dir, names)
        self.shards_merged += len(sources)
        logger.info("merged %d partial shards (%d rows) into %s", len(sources), rows, final.name)
        return final

    def _merge_partials(self) -> None:
        paths = [p for p, _ in self._partials if p.exists()]
        self._partials = []
        self.merge(paths)

    def _merge_leftovers(self) -> None:
        """Merge the directory's partial shards of this config, a full shard at a time."""
        small = [e for e in read_manifest(self.out_dir)
                 if int(e["rows"]) < self.rows_per_shard and e.get("config_hash") == self.config_hash
                 and (self.out_dir / e["file"]).is_file()]
        group: list[Path] = []
        rows = 0
        for entry in small:
            group.append(self.out_dir / entry["file"])
            rows += int(entry["rows"])
            if rows >= self.rows_per_shard:
                self.merge(group)
                group, rows = [], 0
        self.merge(group)

    def close(self) -> None:
        """Flush the buffer, merge this writer's partial shards, refuse further rows
        (idempotent)."""
        if self._closed:
            return
        last = self.flush()
        if self._partials:
            if last is not None:
                self._partials.append((last, self.rows_written - self._rows_before_flush))
            self._merge_partials()
        self._closed = True

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # keep finished searches even when the caller failed; never mask its error
            self.close()
        except Exception:
            logger.exception("shard writer %s: flushing on error failed", self.writer_id)

    def __repr__(self) -> str:
        return (f"ShardWriter({os.fspath(self.out_dir)!r}, writer_id={self.writer_id!r}, "
                f"L={self.num_layers}, rows_written={self.rows_written}, "
                f"buffered={self.buffered})")
