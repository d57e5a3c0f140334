"""Where the driver hands finished searches: the :class:`RecordSink` protocol, and
:class:`ListSink` (records kept in memory, for tests and benchmarks). The shard writer
(:class:`~drllm.shards.ShardWriter`) is the production sink.

Imports neither torch nor ray.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Protocol

from drllm.shards import SupervisionRecord


class RecordSink(Protocol):
    """Where finished searches go: a :class:`~drllm.shards.ShardWriter` or a :class:`ListSink`.

    Attributes:
        out_dir: directory whose completed example ids a run skips (resume); ``None``: none.
        num_layers: L the rows are written for, checked against the evaluators (``None``: any).
        model_id: model the rows are written for, checked likewise (``None``: any).
    """

    out_dir: Optional[Path]
    num_layers: Optional[int]
    model_id: Optional[str]

    def add(self, record: SupervisionRecord) -> None:
        """Take one finished search."""

    def flush_if_due(self) -> Optional[Path]:
        """Write what is buffered if it has waited long enough (the driver calls this while it
        waits for results); returns the file written, if any."""

    def close(self) -> None:
        """Flush and release; called by whoever made the sink."""


class ListSink:
    """A :class:`RecordSink` that keeps the records in memory (tests, benchmarks)."""

    out_dir: Optional[Path] = None
    num_layers: Optional[int] = None
    model_id: Optional[str] = None

    def __init__(self) -> None:
        self.records: list[SupervisionRecord] = []

    def add(self, record: SupervisionRecord) -> None:
        self.records.append(record)

    def flush_if_due(self) -> Optional[Path]:
        """Nothing is buffered."""
        return None

    def close(self) -> None:
        """Nothing to flush."""
