"""Where an adapter's rows come from: the hub, a local root mirroring the hub layout, or files.

Every route ends in :func:`datasets.load_dataset`, so local files go through the same Arrow
conversion and type casting as hub downloads:

* ``data_files``: ``load_dataset(<builder>, data_files={split: files}, split=split)`` with the
  builder chosen by extension (``parquet``, ``json`` for ``.jsonl``/``.json``, ``csv``);
* ``path``: a directory laid out like the hub repo. For each hub config name (``ARC-Easy``,
  ``main``) an existing sub-directory of that name is used, else the root itself; files are
  assigned to splits by the ``datasets`` library's own naming rules
  (:func:`datasets.data_files.get_data_patterns`: ``train.parquet``, ``data/test-0000-of-0001``,
  ... and a directory of files named after no split is the ``train`` split);
* neither: ``load_dataset(hub_repo, config, split=split)`` for each hub config, concatenated.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

if TYPE_CHECKING:
    import datasets

    from drllm.data.base import DatasetConfig

logger = logging.getLogger(__name__)

BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}
#: What a malformed line of a ``.jsonl`` data file does (``DatasetConfig.malformed_lines``):
#: ``reject`` counts it under :data:`REJECT_MALFORMED_LINE` and logs its file and line;
#: ``error`` stops the load with a ``ValueError`` naming them.
MALFORMED_LINE_MODES = ("reject", "error")
REJECT_MALFORMED_LINE = "malformed jsonl line"


@dataclass(frozen=True)
class Rows:
    """The rows an adapter reads, before parsing.

    Attributes:
        rows: the rows (a ``datasets.Dataset`` or a list of mappings).
        count: rows read from the source, malformed lines included.
        source: where they came from (hub repo / config, or the files read).
        rejected: reason -> lines rejected before parsing (malformed ``.jsonl`` lines).
    """

    rows: Iterable[Mapping[str, Any]]
    count: int
    source: str
    rejected: Mapping[str, int] = field(default_factory=dict)


def builder_for(files: Sequence[str]) -> str:
    """The ``datasets`` packaged builder that reads ``files`` (all must share one format)."""
    kinds = {BUILDERS.get(Path(f).suffix.lower()) for f in files}
    if None in kinds:
        bad = [f for f in files if Path(f).suffix.lower() not in BUILDERS]
        raise ValueError(
            f"unsupported data file type: {bad[:3]}; expected one of {sorted(BUILDERS)}"
        )
    if len(kinds) != 1:
        raise ValueError(f"data files mix formats {sorted(kinds)}; use one format per dataset")
    return kinds.pop()


def expand_files(patterns: Sequence[str]) -> list[str]:
    """Expand globs and check existence; order is the given order, globs sorted."""
    files: list[str] = []
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        if glob.has_magic(pattern):
            matched = sorted(glob.glob(pattern, recursive=True))
            if not matched:
                raise FileNotFoundError(f"data_files pattern {pattern!r} matches no file")
            files.extend(matched)
        elif Path(pattern).is_file():
            files.append(pattern)
        else:
            raise FileNotFoundError(f"data file {pattern!r} does not exist")
    return [str(Path(f).resolve()) for f in files]


def _malformed_lines(path: str) -> list[tuple[int, str]]:
    """``(line number, why)`` of each line of a ``.jsonl`` file that is not one JSON object."""
    bad: list[tuple[int, str]] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as err:
                bad.append((number, f"not JSON ({err})"))
                continue
            if not isinstance(value, dict):
                bad.append((number, f"a JSON {type(value).__name__}, not an object"))
    return bad


def _drop_malformed(files: Sequence[str], on_malformed: str, workdir: str) -> tuple[list[str], int]:
    """``files`` with the malformed lines of each ``.jsonl`` dropped (clean copies under
    ``workdir``); the number of lines dropped.

    Raises:
        ValueError: ``on_malformed == "error"`` and a line is malformed (names file and line).
    """
    if on_malformed not in MALFORMED_LINE_MODES:
        raise ValueError(f"malformed-line mode must be one of {MALFORMED_LINE_MODES}, "
                         f"got {on_malformed!r}")
    out, dropped = [], 0
    for index, path in enumerate(files):
        bad = _malformed_lines(path) if Path(path).suffix.lower() == ".jsonl" else []
        if not bad:
            out.append(path)
            continue
        number, why = bad[0]
        if on_malformed == "error":
            raise ValueError(f"{path}:{number}: {why}; {len(bad)} malformed line(s) in this "
                             "file. Fix them, or set dataset.malformed_lines=reject to skip and "
                             "count them")
        for number, why in bad:
            logger.warning("%s:%d: skipped (%s)", path, number, why)
        skip = {number for number, _ in bad}
        clean = Path(workdir) / f"{index}-{Path(path).name}"
        with open(path, encoding="utf-8", errors="replace") as src, open(clean, "w") as dst:
            dst.writelines(line for n, line in enumerate(src, start=1) if n not in skip)
        out.append(str(clean))
        dropped += len(bad)
    return out, dropped


def load_files(files: Sequence[str], split: str, on_malformed: str = "reject") -> Rows:
    """Read ``files`` as one split through :func:`datasets.load_dataset`.

    A ``.jsonl`` line that is not a JSON object is a counted rejection (``on_malformed=
    "reject"``, logged with its file and line) or a ``ValueError`` naming them (``"error"``);
    a file ``datasets`` cannot read at all raises ``ValueError`` naming the files.
    """
    import datasets

    builder = builder_for(files)
    with tempfile.TemporaryDirectory(prefix="drllm-jsonl-") as workdir:
        readable, dropped = _drop_malformed(files, on_malformed, workdir)
        try:
            table = datasets.load_dataset(builder, data_files={split: readable}, split=split,
                                          keep_in_memory=readable != list(files))
        except Exception as err:  # the decoder's own error names neither file nor row
            raise ValueError(f"could not read data files {list(files)} as {builder}: "
                             f"{type(err).__name__}: {err}") from err
    rejected = {REJECT_MALFORMED_LINE: dropped} if dropped else {}
    return Rows(table, len(table) + dropped, f"files {list(files)}", rejected)


def files_in_root(root: Path, hub_configs: Sequence[str | None], split: str) -> list[str]:
    """Data files of ``split`` under a local root mirroring the hub layout."""
    from datasets.data_files import DataFilesDict, EmptyDatasetError, get_data_patterns

    if not root.is_dir():
        raise FileNotFoundError(f"DatasetConfig.path: {str(root)!r} is not a directory")
    dirs = [root / c for c in hub_configs if c is not None and (root / c).is_dir()] or [root]
    files: list[str] = []
    for directory in dirs:
        try:
            patterns = get_data_patterns(str(directory))
        except EmptyDatasetError:
            raise FileNotFoundError(f"no data files under {str(directory)!r}") from None
        by_split = DataFilesDict.from_patterns(patterns, base_path=str(directory))
        if split not in by_split:
            raise ValueError(
                f"DatasetConfig.split: no {split!r} files under {str(directory)!r}; splits "
                f"found there: {sorted(str(s) for s in by_split)}"
            )
        found = [str(f) for f in by_split[split] if Path(str(f)).suffix.lower() in BUILDERS]
        if not found:
            raise FileNotFoundError(
                f"no parquet/jsonl/json/csv files for split {split!r} under {str(directory)!r}"
            )
        files.extend(found)
    return files


def load_hub(repo: str, hub_configs: Sequence[str | None], split: str) -> "datasets.Dataset":
    """``load_dataset(repo, config, split=split)`` for each config, concatenated."""
    import datasets

    parts = []
    for config_name in hub_configs:
        try:
            parts.append(datasets.load_dataset(repo, config_name, split=split))
        except Exception as err:  # network, auth, missing split: re-raise with the fix
            raise RuntimeError(
                f"could not load {repo!r} (config {config_name!r}, split {split!r}) from the "
                f"Hugging Face hub: {err}. Offline, set DatasetConfig.path to a local copy of "
                f"the repo or DatasetConfig.data_files to its files."
            ) from err
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def load_rows(
    config: "DatasetConfig",
    hub_repo: str | None,
    hub_configs: Sequence[str | None],
    columns: Sequence[str],
) -> Rows:
    """Load the rows ``config`` points at, keeping only ``columns`` (all if empty).

    Raises:
        ValueError: a required column is missing (the message lists the columns present), or
            a data file is malformed (see :func:`load_files`).
    """
    if config.data_files is not None:
        loaded = load_files(expand_files(config.data_files), config.split,
                            config.malformed_lines)
    elif config.path is not None:
        files = files_in_root(Path(os.path.expanduser(config.path)), hub_configs, config.split)
        loaded = load_files(files, config.split, config.malformed_lines)
    elif hub_repo is not None:
        table = load_hub(hub_repo, hub_configs, config.split)
        loaded = Rows(table, len(table),
                      f"hub {hub_repo} {[c for c in hub_configs if c]} split {config.split}")
    else:
        raise ValueError(
            f"dataset {config.name!r} has no hub default; set DatasetConfig.path or data_files"
        )
    return select_columns(loaded, columns, f"{config.name}: columns")


def select_columns(loaded: Rows, columns: Sequence[str], what: str) -> Rows:
    """``loaded`` keeping only ``columns`` (all if empty).

    Raises:
        ValueError: a column is missing; ``what`` starts the message, which lists the columns
            present.
    """
    table = loaded.rows
    if not columns:
        return loaded
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError(f"{what} {missing} missing from {loaded.source}; "
                         f"columns present: {table.column_names}")
    return Rows(table.select_columns(list(columns)), loaded.count, loaded.source,
                loaded.rejected)
