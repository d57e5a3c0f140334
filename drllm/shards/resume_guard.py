"""Resume safety: an output directory belongs to one search-affecting config.

A rerun of the same config resumes (example ids already written are skipped). A rerun with a
config whose search-affecting part differs (another simulation budget, grader, model, data
file ...) would silently skip every example already written and mix two searches in one
dataset, so it is refused before any actor starts, naming the keys that differ, unless the
caller forces it.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

from drllm.shards.layout import shard_files
from drllm.shards.reader import read_shard_metadata

logger = logging.getLogger(__name__)


class ResumeConflictError(ValueError):
    """The output directory holds rows written with another search-affecting config."""


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a.b.c": value}`` of a nested mapping (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def config_differences(stored: Mapping[str, Any], current: Mapping[str, Any],
                       defaults: Mapping[str, Any] | None = None) -> list[str]:
    """``"key: stored -> current"`` for every flattened key whose value differs.

    A key absent from ``stored`` whose current value is its value in ``defaults`` is no
    difference: a field added since the shard was written, at the default that reproduces
    what the older code did.
    """
    a, b = flatten(stored), flatten(current)
    d = flatten(defaults or {})
    return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
            for k in sorted(a.keys() | b.keys())
            if a.get(k, "<absent>") != b.get(k, "<absent>")
            and not (k not in a and k in b and k in d and b[k] == d[k])]


def check_resume(
    shards_dir: str | os.PathLike,
    affecting: Mapping[str, Any],
    *,
    key: str = "search_affecting",
    force: bool = False,
    defaults: Mapping[str, Any] | None = None,
) -> int:
    """Refuse to resume ``shards_dir`` with another search-affecting config.

    Each shard's metadata holds the resolved config it was written with; its ``key`` entry is
    compared with ``affecting``; a key the shard does not record is no conflict while its
    current value is its value in ``defaults`` (a field added since, at its default). Returns
    the number of shards checked (0: a fresh directory).

    Raises:
        ResumeConflictError: a shard was written with a different ``affecting`` part, and
            ``force`` is false. The message names the differing keys and the ways out.
    """
    files = shard_files(shards_dir)
    for path in files:
        stored = read_shard_metadata(path)["config"].get(key)
        if stored is None:
            diffs = [f"{key}: <not recorded> (written by an older drllm)"]
        else:
            diffs = config_differences(stored, affecting, defaults)
        if not diffs:
            continue
        message = (
            f"{os.fspath(shards_dir)} holds {path.name}, written with another search config:\n  "
            + "\n  ".join(diffs[:20])
            + "\nRerunning would skip its examples as done. Pick another output directory "
            "(hydra.run.dir=...), or pass resume=force to add to it anyway."
        )
        if not force:
            raise ResumeConflictError(message)
        logger.warning("resume=force: %s", message)
        return len(files)
    return len(files)
