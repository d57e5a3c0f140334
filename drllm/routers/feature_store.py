"""On-disk router features: one Parquet directory per feature pass, described by ``_features.json``.

A features directory (by default ``<train run>/features``, never inside the shards directory,
whose readers would pick it up) holds

* ``features-{digest}/`` -- Parquet parts (written by the feature actors' Ray Data write, or
  in process), one row per selected example
  (the row filter, :mod:`drllm.routers.rows`: solved rows by default):
  ``example_id`` (string), ``dataset`` (string), ``num_tokens`` (int32, prompt tokens),
  ``labels`` (``fixed_size_list<int8>[L]``, the best-path decisions), ``soft``
  (``fixed_size_list<float32>[L * 3]``, the share of the row's good paths per decision) and
  ``blame`` (``fixed_size_list<float32>[L]``, negatives from the search trace), ``default_correct``
  and ``improved`` (bool; see :mod:`drllm.routers.targets`), ``wmask``
  (``fixed_size_list<int8>[W]``, valid windows) and ``features``
  (``fixed_size_list<float16 | float32>[L * W * d]``, the pooled windows entering each block,
  row-major ``[L, W, d]``);
* ``_features.json`` -- the cache key the file was computed for, its shape and provenance.

The key is the feature-pass identity: model id (and dtype), the shard files (names, sizes,
modification times), the shard manifest's digest, ``W``, the storage dtype and the row filter. A
rerun whose key matches reuses the file; any change (a new shard, another model, another ``W``,
``rows=all``) recomputes it.
The parts are written into a dot-prefixed temporary directory that is renamed, and
``_features.json`` is replaced last, so a crash never leaves half-written features that look
complete.

Any Parquet reader works on the directory (``pq.read_table``, pandas, ``ray.data.read_parquet``);
:func:`load_features` returns the tensors of all rows, :func:`table_data` those of some rows
(a training worker's share).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from drllm.files import atomic_write_text
from drllm.routers.rows import RowSelection, check_row_filter
from drllm.shards.layout import MANIFEST_NAME, shard_files

logger = logging.getLogger(__name__)

FORMAT_VERSION = 4  # 2: row filter; 3: a Parquet directory; 4: soft, blame, pooling
COMPRESSION = "zstd"
INFO_NAME = "_features.json"
FEATURE_DTYPES = {
    "float16": (pa.float16(), torch.float16),
    "float32": (pa.float32(), torch.float32),
}


def feature_schema(num_layers: int, windows: int, hidden_size: int, dtype: str) -> pa.Schema:
    """Arrow schema of a features file for ``L`` blocks, ``W`` windows, width ``d``."""
    if dtype not in FEATURE_DTYPES:
        raise ValueError(f"feature dtype must be one of {sorted(FEATURE_DTYPES)}, got {dtype!r}")
    value_type = FEATURE_DTYPES[dtype][0]
    width = num_layers * windows * hidden_size
    return pa.schema(
        [
            ("example_id", pa.string()),
            ("dataset", pa.string()),
            ("num_tokens", pa.int32()),
            ("labels", pa.list_(pa.field("element", pa.int8()), num_layers)),
            ("soft", pa.list_(pa.field("element", pa.float32()), num_layers * 3)),
            ("blame", pa.list_(pa.field("element", pa.float32()), num_layers)),
            ("default_correct", pa.bool_()),
            ("improved", pa.bool_()),
            ("wmask", pa.list_(pa.field("element", pa.int8()), windows)),
            ("features", pa.list_(pa.field("element", value_type), width)),
        ]
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def shards_fingerprint(shards_dir: str | os.PathLike) -> dict[str, Any]:
    """Identity of a shard directory's contents: ``files`` (name, size, mtime_ns) and manifest.

    Raises:
        FileNotFoundError: the directory holds no complete shard.
    """
    root = Path(shards_dir)
    files = shard_files(root)
    if not files:
        raise FileNotFoundError(f"no complete shards (shard-*.parquet) in {root}")
    listed = []
    for path in files:
        st = path.stat()
        listed.append([path.name, st.st_size, st.st_mtime_ns])
    manifest = root / MANIFEST_NAME
    digest = _sha256(manifest.read_bytes()) if manifest.is_file() else None
    return {"files": listed, "manifest_sha256": digest}


def feature_key(
    *,
    model_id: str,
    model_dtype: str | None,
    shards_dir: str | os.PathLike,
    windows: int,
    dtype: str,
    rows: str = "solved",
    pooling: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The cache key of a feature pass (see the module docstring); ``rows`` is the row filter,
    ``pooling`` the :class:`~drllm.routers.pooling.PoolingSpec` as a dict."""
    return {
        "format_version": FORMAT_VERSION,
        "model_id": model_id,
        "model_dtype": model_dtype,
        "shards_dir": str(Path(shards_dir).resolve()),
        "shards": shards_fingerprint(shards_dir),
        "windows": int(windows),
        "dtype": dtype,
        "rows": check_row_filter(rows),
        "pooling": dict(pooling or {"mode": "prompt", "prefix": [], "suffix": []}),
    }


def key_digest(key: Mapping[str, Any]) -> str:
    """16 hex digits of SHA-256 over the key's canonical JSON."""
    return _sha256(json.dumps(key, sort_keys=True).encode("utf-8"))[:16]


@dataclass(frozen=True)
class FeatureInfo:
    """What ``_features.json`` records about a features file.

    Attributes:
        key: the cache key (see :func:`feature_key`); ``digest`` is its hash.
        file: file name inside the features directory.
        rows: examples (one row each).
        num_layers / windows / hidden_size: ``L``, ``W``, ``d`` of the ``features`` column.
        dtype: storage dtype of the features.
        model_id: the frozen model the features were computed with.
        created: ISO 8601 UTC time of the write.
        seconds: wall time of the feature pass that wrote the file.
        row_filter: the row filter that selected the ``rows`` (``"solved"`` or ``"all"``).
        shard_rows: rows in the shards, selected or not.
        skipped_unsolved: unsolved shard rows the filter left out.
    """

    key: Mapping[str, Any]
    digest: str
    file: str
    rows: int
    num_layers: int
    windows: int
    hidden_size: int
    dtype: str
    model_id: str
    created: str
    seconds: float
    row_filter: str = "all"
    shard_rows: int = 0
    skipped_unsolved: int = 0

    @property
    def pooling(self) -> dict[str, Any]:
        """The pooling spec the features were computed with (``PoolingSpec.from_dict``)."""
        return dict(self.key.get("pooling") or {})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def row_selection(self) -> dict[str, Any]:
        """``{"filter", "used", "skipped_unsolved"}``: the rows these features hold."""
        return RowSelection(self.row_filter, self.shard_rows, self.rows,
                            self.skipped_unsolved).to_dict()


def read_info(features_dir: str | os.PathLike) -> FeatureInfo | None:
    """The directory's :class:`FeatureInfo`, or ``None`` when absent or unreadable."""
    path = Path(features_dir) / INFO_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return FeatureInfo(**data)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as err:
        logger.warning("ignoring unreadable %s (%s); features will be recomputed", path, err)
        return None


def find_reusable(features_dir: str | os.PathLike, key: Mapping[str, Any]) -> FeatureInfo | None:
    """The existing features of ``features_dir`` if they were computed for ``key``."""
    info = read_info(features_dir)
    if info is None:
        return None
    if info.digest != key_digest(key) or dict(info.key) != dict(key):
        logger.info("features in %s are stale (key changed); recomputing", features_dir)
        return None
    if not (Path(features_dir) / info.file).is_dir():
        logger.warning("%s names %s, which is missing; recomputing", INFO_NAME, info.file)
        return None
    return info



class FeatureFileWriter:
    """Collects Parquet parts of a new features directory; :meth:`commit` publishes it.

    Parts land in a dot-prefixed temporary directory (:attr:`parts_dir`), written either here
    (:meth:`write`, the in-process pass) or by Ray Data's ``write_parquet`` in the cluster's
    workers (the rows never pass through the driver). :meth:`commit` checks every part's
    schema, renames the directory to ``features-{digest}`` and writes ``_features.json``.

    Args:
        features_dir: output directory (created if missing).
        key: the cache key the features are computed for.
        num_layers / windows / dtype: ``L``, ``W`` and storage dtype of the rows (the width
            ``d`` is read from the rows).
        model_id: the model the features come from (recorded in ``_features.json``).
        selection: the row selection the rows come from (recorded in ``_features.json``);
            ``None``: every row written, no filter.

    Use as a context manager: leaving the block without :meth:`commit` (an error) deletes the
    temporary directory and leaves the previous features untouched.
    """

    def __init__(
        self,
        features_dir: str | os.PathLike,
        key: Mapping[str, Any],
        *,
        num_layers: int,
        windows: int,
        dtype: str,
        model_id: str,
        selection: RowSelection | None = None,
        hidden_size: int | None = None,
    ) -> None:
        self.dir = Path(features_dir)
        self.selection = selection
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key, self.digest = dict(key), key_digest(key)
        self.num_layers, self.windows, self.hidden_size = num_layers, windows, hidden_size
        self.dtype, self.model_id = dtype, model_id
        self.name = f"features-{self.digest}"
        self.parts_dir = self.dir / f".{self.name}.inprogress-{os.getpid()}"
        shutil.rmtree(self.parts_dir, ignore_errors=True)
        self.parts_dir.mkdir()
        self.rows = 0
        self._parts = 0
        self._start = time.perf_counter()

    def _schema(self, hidden_size: int) -> pa.Schema:
        return feature_schema(self.num_layers, self.windows, hidden_size, self.dtype)

    def _check(self, schema: pa.Schema, where: str) -> None:
        width = schema.field("features").type.list_size if "features" in schema.names else 0
        d = width // (self.num_layers * self.windows)
        self.hidden_size = self.hidden_size or d
        if not schema.equals(self._schema(self.hidden_size)):
            raise ValueError(f"feature rows of {where} do not match the features' schema:\n"
                             f"{schema}\nexpected\n{self._schema(self.hidden_size)}")

    def write(self, table: pa.Table | pa.RecordBatch) -> None:
        """Append rows as one Parquet part (their schema must equal :func:`feature_schema`)."""
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        self._check(table.schema, "a batch")
        pq.write_table(table, self.parts_dir / f"part-{self._parts:06d}.parquet",
                       compression=COMPRESSION)
        self._parts += 1
        self.rows += table.num_rows

    def _part_files(self) -> list[Path]:
        return sorted(p for p in self.parts_dir.rglob("*.parquet") if p.is_file())

    def commit(self) -> FeatureInfo:
        """Check the parts, rename the directory into place, write ``_features.json`` and drop
        stale features."""
        parts = self._part_files()
        rows = 0
        for part in parts:
            meta = pq.read_metadata(part)
            self._check(meta.schema.to_arrow_schema().remove_metadata(), str(part))
            rows += meta.num_rows
        if rows == 0:
            raise ValueError("the feature pass produced no rows; nothing to commit")
        self.rows = rows
        final = self.dir / self.name
        if final.exists():
            shutil.rmtree(final) if final.is_dir() else final.unlink()
        os.replace(self.parts_dir, final)
        sel = self.selection or RowSelection("all", rows, rows, 0)
        info = FeatureInfo(
            key=self.key, digest=self.digest, file=self.name, rows=rows,
            num_layers=self.num_layers, windows=self.windows, hidden_size=int(self.hidden_size),
            dtype=self.dtype, model_id=self.model_id,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            seconds=time.perf_counter() - self._start,
            row_filter=sel.filter, shard_rows=sel.total, skipped_unsolved=sel.skipped_unsolved,
        )
        atomic_write_text(self.dir / INFO_NAME, json.dumps(info.to_dict(), indent=2) + "\n")
        for stale in self.dir.glob("features-*"):
            if stale.name != self.name:
                shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        logger.info("wrote %d feature rows (%d parts) to %s", rows, len(parts), final)
        return info

    def abort(self) -> None:
        """Delete the temporary directory."""
        shutil.rmtree(self.parts_dir, ignore_errors=True)

    def __enter__(self) -> "FeatureFileWriter":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is not None or self.parts_dir.exists():
            self.abort()


def feature_files(features_dir: str | os.PathLike, info: FeatureInfo) -> list[str]:
    """The Parquet parts of the committed features (for ``ray.data.read_parquet``)."""
    root = Path(features_dir) / info.file
    return [str(p) for p in sorted(root.rglob("*.parquet")) if p.is_file()]


@dataclass(frozen=True)
class FeatureData:
    """Router features in memory.

    Attributes:
        features: ``[N, L, W, d]`` pooled windows (storage dtype), or ``None`` when loaded
            without them (``with_features=False``).
        wmask: ``[N, W]`` bool valid windows.
        labels: ``[N, L]`` int64 best-path decisions.
        soft: ``[N, L, 3]`` float32 good-path shares; blame: ``[N, L]`` float32 negatives.
        default_correct / improved: ``[N]`` bool.
        example_ids / datasets: per-row ids and dataset names.
        num_tokens: ``[N]`` int64 prompt lengths (tokens).
        info: the directory's :class:`FeatureInfo`.
    """

    features: torch.Tensor | None
    wmask: torch.Tensor
    labels: torch.Tensor
    example_ids: tuple[str, ...]
    datasets: tuple[str, ...]
    num_tokens: torch.Tensor
    info: FeatureInfo
    soft: torch.Tensor | None = None
    blame: torch.Tensor | None = None
    default_correct: torch.Tensor | None = None
    improved: torch.Tensor | None = None


def _fixed_rows(column: pa.ChunkedArray, width: int, dtype: Any) -> np.ndarray:
    """``[N, width]`` numpy copy (owning its memory) of a fixed-size-list column."""
    parts = [chunk.flatten().to_numpy(zero_copy_only=False) for chunk in column.chunks]
    if len(parts) == 1:
        flat = np.array(parts[0], dtype=dtype, copy=True)
    else:
        flat = np.concatenate(parts).astype(dtype, copy=False)
    return flat.reshape(-1, width)


def load_features(
    features_dir: str | os.PathLike, *, with_features: bool = True
) -> FeatureData:
    """Read the committed features of ``features_dir`` into memory (small runs, tests; the
    training workers read their share through Ray Data instead).

    Args:
        with_features: also load the ``[N, L, W, d]`` features (False: labels, masks and ids
            only, which reads a few bytes per row).

    Raises:
        FileNotFoundError: no committed features in the directory.
    """
    root = Path(features_dir)
    info = read_info(root)
    if info is None or not (root / info.file).is_dir():
        raise FileNotFoundError(
            f"no committed features in {root} (missing {INFO_NAME} or its file); run the "
            "feature pass (drllm.routers.features.run_feature_pass) first"
        )
    columns = ["example_id", "dataset", "num_tokens", "labels", "wmask", "soft", "blame",
               "default_correct", "improved"]
    if with_features:
        columns.append("features")
    table = pq.read_table(feature_files(root, info), columns=columns)
    return table_data(table, info)


def table_data(table: pa.Table, info: FeatureInfo) -> FeatureData:
    """:class:`FeatureData` of feature rows (``features`` column optional)."""
    L, W, d = info.num_layers, info.windows, info.hidden_size
    labels = torch.from_numpy(_fixed_rows(table.column("labels"), L, np.int64))
    wmask = torch.from_numpy(_fixed_rows(table.column("wmask"), W, np.bool_))
    features = None
    if "features" in table.column_names:
        np_dtype = np.float16 if info.dtype == "float16" else np.float32
        flat = _fixed_rows(table.column("features"), L * W * d, np_dtype)
        features = torch.from_numpy(flat).view(-1, L, W, d)
    ids = tuple(table.column("example_id").to_pylist())
    datasets = tuple(table.column("dataset").to_pylist())
    tokens = torch.from_numpy(table.column("num_tokens").to_numpy().astype(np.int64))
    soft = torch.from_numpy(_fixed_rows(table.column("soft"), L * 3, np.float32)).view(-1, L, 3)
    blame = torch.from_numpy(_fixed_rows(table.column("blame"), L, np.float32))

    def flags(name: str) -> torch.Tensor:
        return torch.from_numpy(table.column(name).to_numpy(zero_copy_only=False).astype(bool))

    return FeatureData(features, wmask, labels, ids, datasets, tokens, info, soft, blame,
                       flags("default_correct"), flags("improved"))


def feature_table(
    *,
    example_ids: Sequence[str],
    datasets: Sequence[str],
    num_tokens: Sequence[int],
    labels: np.ndarray,
    wmask: np.ndarray,
    features: np.ndarray,
    dtype: str,
    soft: np.ndarray | None = None,
    blame: np.ndarray | None = None,
    default_correct: Sequence[bool] | None = None,
    improved: Sequence[bool] | None = None,
) -> pa.Table:
    """A features table from numpy arrays (``labels [B, L]``, ``wmask [B, W]``,
    ``features [B, L, W, d]``, ``soft [B, L, 3]``, ``blame [B, L]``), cast to the storage
    ``dtype``. Without ``soft`` the targets are one-hot labels; without ``blame`` zero.

    Raises:
        ValueError: a feature is not finite after the cast (fp16 overflow: use float32).
    """
    batch, num_layers, windows, hidden_size = features.shape
    np_dtype = np.float16 if dtype == "float16" else np.float32
    stored = np.ascontiguousarray(features, dtype=np_dtype)
    if not np.isfinite(stored).all():
        raise ValueError(
            f"pooled features are not finite in {dtype} (hidden states exceed its range); "
            "store them as float32 (features.dtype=float32)"
        )
    schema = feature_schema(num_layers, windows, hidden_size, dtype)
    labels = np.asarray(labels, dtype=np.int8)
    if soft is None:
        soft = np.eye(3, dtype=np.float32)[labels.astype(np.int64)]
    if blame is None:
        blame = np.zeros((batch, num_layers), dtype=np.float32)
    correct = [False] * batch if default_correct is None else [bool(x) for x in default_correct]
    better = [False] * batch if improved is None else [bool(x) for x in improved]

    def fixed(name: str, values: np.ndarray) -> pa.FixedSizeListArray:
        return pa.FixedSizeListArray.from_arrays(
            pa.array(values.reshape(-1)), type=schema.field(name).type
        )

    return pa.Table.from_arrays(
        [
            pa.array(list(example_ids), pa.string()),
            pa.array(list(datasets), pa.string()),
            pa.array(np.asarray(num_tokens, dtype=np.int32)),
            fixed("labels", labels),
            fixed("soft", np.asarray(soft, dtype=np.float32)),
            fixed("blame", np.asarray(blame, dtype=np.float32)),
            pa.array(correct, pa.bool_()),
            pa.array(better, pa.bool_()),
            fixed("wmask", np.asarray(wmask, dtype=np.int8)),
            fixed("features", stored),
        ],
        schema=schema,
    )
