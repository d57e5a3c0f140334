"""Moving unreadable shard files aside, so that a rerun keeps the rows of the good shards.

A ``shard-*.parquet`` file that cannot be read as a drllm shard (a copy truncated by a full
disk, a foreign Parquet file, a stray file under a shard's name) would stop every reader. A
search rerun, which holds the directory's :class:`~drllm.shards.lock.OutputLock`, calls
:func:`quarantine_unreadable` first: each such file is named in the log, moved to
``_quarantine/`` and withdrawn from the manifest; its examples are searched again. Read-only
consumers (training, reports) never move files: they raise
:class:`~drllm.shards.reader.UnreadableShardError`, which names the file and this fix.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from drllm.shards.layout import QUARANTINE_DIR, append_manifest, fsync_dir, shard_files
from drllm.shards.reader import UnreadableShardError, read_shard_metadata

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Quarantined:
    """One shard file moved aside.

    Attributes:
        file: its name in the shards directory.
        moved_to: where it is now, relative to the shards directory.
        reason: why it could not be read.
    """

    file: str
    moved_to: str
    reason: str


def _free_name(directory: Path, name: str) -> Path:
    target, n = directory / name, 1
    while target.exists():
        target, n = directory / f"{name}.{n}", n + 1
    return target


def quarantine_unreadable(out_dir: str | os.PathLike) -> list[Quarantined]:
    """Move every unreadable ``shard-*.parquet`` of ``out_dir`` to ``out_dir/_quarantine/``.

    The caller must hold the directory's lock (no writer is live). Each file moved is logged
    (warning, with the reason) and withdrawn from ``_manifest.jsonl``. Returns the files moved,
    ``[]`` when every shard reads.
    """
    root = Path(out_dir)
    moved: list[Quarantined] = []
    for path in shard_files(root):
        try:
            read_shard_metadata(path)
        except UnreadableShardError as err:
            aside = root / QUARANTINE_DIR
            aside.mkdir(exist_ok=True)
            target = _free_name(aside, path.name)
            os.replace(path, target)
            moved.append(Quarantined(path.name, str(target.relative_to(root)), err.why))
            logger.warning("%s: %s cannot be read (%s); moved to %s, its examples will be "
                           "searched again", root, path.name, err.why, target.relative_to(root))
    if moved:
        fsync_dir(root)
        append_manifest(root, [{"file": q.file, "quarantined": q.moved_to, "reason": q.reason}
                               for q in moved])
    return moved
