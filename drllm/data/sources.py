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
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import datasets

    from drllm.data.base import DatasetConfig

logger = logging.getLogger(__name__)

BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}


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


def load_files(files: Sequence[str], split: str) -> "datasets.Dataset":
    """Read ``files`` as one split through :func:`datasets.load_dataset`."""
    import datasets

    return datasets.load_dataset(builder_for(files), data_files={split: list(files)}, split=split)


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
) -> tuple["datasets.Dataset", str]:
    """Load the rows ``config`` points at, keeping only ``columns`` (all if empty).

    Returns:
        ``(table, source)``: the :class:`datasets.Dataset` and a description of where it came from.

    Raises:
        ValueError: a required column is missing (the message lists the columns present).
    """
    if config.data_files is not None:
        files = expand_files(config.data_files)
        table, source = load_files(files, config.split), f"files {files}"
    elif config.path is not None:
        files = files_in_root(Path(os.path.expanduser(config.path)), hub_configs, config.split)
        table, source = load_files(files, config.split), f"files {files}"
    elif hub_repo is not None:
        table = load_hub(hub_repo, hub_configs, config.split)
        source = f"hub {hub_repo} {[c for c in hub_configs if c]} split {config.split}"
    else:
        raise ValueError(
            f"dataset {config.name!r} has no hub default; set DatasetConfig.path or data_files"
        )
    if columns:
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise ValueError(
                f"{config.name}: columns {missing} missing from {source}; "
                f"columns present: {table.column_names}"
            )
        table = table.select_columns(list(columns))
    logger.debug("%s: %d rows from %s", config.name, len(table), source)
    return table, source
