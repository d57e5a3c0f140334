"""Shard directory layout: file names, listing, the ``_manifest.jsonl`` sidecar, durable I/O.

A shard directory holds

* ``shard-{writer}-{seq:06d}.parquet``: complete shards (the only files readers look at);
* ``.shard-{writer}-{seq:06d}.parquet.inprogress``: a shard being written (dot-prefixed, so
  pyarrow datasets, pandas and ``shard-*.parquet`` globs never see it);
* ``_manifest.jsonl``: one JSON line per completed shard, appended after the rename; a line
  ``{"file": name, "quarantined": "_quarantine/name", "reason": ...}`` withdraws a shard that
  turned out unreadable (:mod:`drllm.shards.quarantine`), so the manifest lists exactly the
  complete shards;
* ``_quarantine/``: shard files moved aside because they cannot be read.

Manifest lines are appended with a single ``write`` on an ``O_APPEND`` descriptor and fsynced.
A crash can still leave a torn last line: readers drop it, writers truncate it on open.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
from pathlib import Path
from typing import Any, Iterable, Mapping

logger = logging.getLogger(__name__)

SHARD_GLOB = "shard-*.parquet"
MANIFEST_NAME = "_manifest.jsonl"
INPROGRESS_GLOB = ".shard-*.parquet.inprogress"
QUARANTINE_DIR = "_quarantine"
"""Sub-directory of a shards directory where unreadable shard files are moved aside."""
_WRITER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_SHARD_RE = re.compile(r"^shard-(?P<writer>.+)-(?P<seq>\d{6,})\.parquet$")


def check_writer_id(writer_id: str) -> str:
    """Return ``writer_id`` or raise ``ValueError`` if it cannot be part of a file name."""
    if not isinstance(writer_id, str) or not _WRITER_ID_RE.match(writer_id):
        raise ValueError(
            f"writer_id {writer_id!r} must be 1-128 characters from [A-Za-z0-9_.-], starting "
            "with a letter or digit (e.g. 'w0' or 'host-1234')"
        )
    return writer_id


def default_writer_id() -> str:
    """A writer id unique per process on a cluster: ``{hostname}-{pid}`` (sanitized)."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname().split(".")[0]) or "host"
    return check_writer_id(f"{host.lstrip('_.-') or 'host'}-{os.getpid()}")


def shard_name(writer_id: str, seq: int) -> str:
    """File name of a complete shard."""
    if seq < 0:
        raise ValueError(f"seq must be >= 0, got {seq}")
    return f"shard-{writer_id}-{seq:06d}.parquet"


def inprogress_name(writer_id: str, seq: int) -> str:
    """Temporary file name of a shard being written."""
    return f".{shard_name(writer_id, seq)}.inprogress"


def parse_shard_name(name: str) -> tuple[str, int] | None:
    """``(writer_id, seq)`` of a complete shard's file name, or ``None`` if it is not one."""
    m = _SHARD_RE.match(name)
    return (m.group("writer"), int(m.group("seq"))) if m else None


def shard_files(out_dir: str | os.PathLike) -> list[Path]:
    """Complete shards in ``out_dir``, sorted by file name (empty if the directory is absent)."""
    root = Path(out_dir)
    if not root.is_dir():
        return []
    return sorted(
        (p for p in root.glob(SHARD_GLOB) if p.is_file() and parse_shard_name(p.name)),
        key=lambda p: p.name,
    )


def inprogress_files(out_dir: str | os.PathLike) -> list[Path]:
    """Temporary (incomplete) shard files in ``out_dir``, sorted by name."""
    root = Path(out_dir)
    return sorted(root.glob(INPROGRESS_GLOB), key=lambda p: p.name) if root.is_dir() else []


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (no-op where directories cannot fsync)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _parse_manifest_lines(lines: list[bytes], where: Path) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        last = i == len(lines) - 1
        try:
            entry = json.loads(raw)
            if not isinstance(entry, dict) or "file" not in entry:
                raise ValueError("not a manifest entry")
        except ValueError as err:
            if last:
                logger.warning("%s: dropping torn last line (%d bytes)", where, len(raw))
                continue
            raise ValueError(f"{where}: line {i + 1} is corrupt ({err}); fix or remove it") from err
        entries.append(entry)
    return entries


def read_manifest(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Entries of ``out_dir/_manifest.jsonl`` in append order, one per completed shard.

    A torn (unparsable) last line is dropped with a warning; a duplicate entry for the same file
    keeps the first; entries of shards that a merged shard ``replaces`` are dropped, and so are
    those of shards a later ``quarantined`` line withdrew. Returns ``[]`` if there is no
    manifest.
    """
    path = Path(out_dir) / MANIFEST_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    entries: dict[str, dict[str, Any]] = {}
    parsed = _parse_manifest_lines(data.split(b"\n"), path)
    replaced = {str(name) for e in parsed for name in (e.get("replaces") or ())}
    for entry in parsed:
        if entry.get("quarantined"):
            entries.pop(entry["file"], None)
        elif entry["file"] not in entries and entry["file"] not in replaced:
            entries[entry["file"]] = entry
    return list(entries.values())


def repair_manifest_tail(out_dir: Path) -> None:
    """Truncate a torn last manifest line so the next append starts on a fresh line."""
    path = out_dir / MANIFEST_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    if not data or data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    logger.warning("%s: truncating a torn last line (%d bytes)", path, len(data) - keep)
    with open(path, "r+b") as f:
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())


def append_manifest(out_dir: Path, entries: Iterable[Mapping[str, Any]]) -> None:
    """Append one JSON line per entry to the manifest: one ``write``, flush and fsync."""
    payload = b"".join(
        json.dumps(dict(e), sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n"
        for e in entries
    )
    if not payload:
        return
    path = out_dir / MANIFEST_NAME
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_dir(out_dir)
