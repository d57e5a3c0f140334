"""The supervision-shard row: Arrow schema, record type, row conversion and path decoding.

One row per searched example (DESIGN.md "Supervision shard contract"). Paths are stored as
``fixed_size_list<int8>[L]`` (one decision per block: 0 skip, 1 execute, 2 repeat), so a shard
directory has exactly one ``L``: :func:`supervision_schema` builds the schema from it.

Nested list children are named ``element`` (the Parquet convention) so that the in-memory schema
equals the schema read back from disk.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from enum import Enum
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from drllm.paths import LayerPath
from drllm.paths import edit_count
from drllm.types import Example, SearchResult

# Version 2 added ``solved``, ``failed_evaluations``, ``label_edits``, ``evaluated_depths``,
# ``transposition_hits`` and ``prior_hits``, and changed what an unsolved row's label means (the
# default path; version 1 wrote the cheapest wrong path). Version 1 shards are not read: their
# labels are wrong by the current contract, so a directory holding them must be searched again.
# Version 3 added ``trace`` (every evaluated path of the example, the negatives included) and
# changed the numeric reward to read a stated answer (``gsm8k_numeric``) under a plausibility
# guard: version 2 labels were found under a reward that broken outputs could win, so version 2
# directories are refused too and must be searched again.
SCHEMA_VERSION = "3"
SUPPORTED_SCHEMA_VERSIONS = frozenset({SCHEMA_VERSION})
MAX_NUM_LAYERS = 16383  # best_cost <= 2L must fit int16

# File-level (Parquet key/value) metadata keys.
META_SCHEMA_VERSION = "drllm.schema_version"
META_CONFIG = "drllm.config"
META_CONFIG_HASH = "drllm.config_hash"
META_MODEL_ID = "drllm.model_id"
META_NUM_LAYERS = "drllm.num_layers"
META_CREATED = "drllm.created"
META_WRITER_ID = "drllm.writer_id"

_DICT_STRING = pa.dictionary(pa.int32(), pa.string())


class ShardMismatchError(ValueError):
    """A row or a directory disagrees with the writer on ``num_layers`` or the model id."""


@dataclass(frozen=True)
class SupervisionRecord:
    """Everything one shard row is made of.

    Attributes:
        example: the searched question.
        result: what the length-aware MCTS found for it.
        model_id: the frozen model searched (HF id, local dir or GGUF file name).
        rendered_prompt: the exact prompt text the model saw (chat template applied).
        search_seconds: wall-clock seconds the search of this example took.
    """

    example: Example
    result: SearchResult
    model_id: str
    rendered_prompt: str
    search_seconds: float


def _path_type(num_layers: int) -> pa.DataType:
    return pa.list_(pa.field("element", pa.int8()), num_layers)


def check_num_layers(num_layers: int) -> int:
    """Return ``num_layers`` or raise ``ValueError`` if it cannot be stored in a shard."""
    if isinstance(num_layers, bool) or not isinstance(num_layers, (int, np.integer)):
        raise ValueError(f"num_layers must be an int, got {num_layers!r}")
    if not 1 <= int(num_layers) <= MAX_NUM_LAYERS:
        raise ValueError(f"num_layers must be in [1, {MAX_NUM_LAYERS}], got {num_layers}")
    return int(num_layers)


def trace_type(num_layers: int) -> pa.DataType:
    """One evaluated path of a search: the element type of the ``trace`` column."""
    return pa.struct([
        ("path", _path_type(num_layers)),
        ("simulation", pa.int32()),
        ("reward", pa.float32()),
        ("cost", pa.int16()),
        ("edits", pa.int16()),
        ("failed", pa.bool_()),
        ("reason", pa.string()),
        ("extracted", pa.string()),
        ("where", pa.string()),
        ("plausibility", pa.float32()),
        ("implausible", pa.bool_()),
        ("margin", pa.float32()),
        ("response_tokens", pa.int32()),
        ("finish_reason", pa.string()),
        ("response", pa.string()),
    ])


def trace_rows(result: SearchResult, text: bool = True) -> list[dict[str, Any]]:
    """The ``trace`` cell of a result: one dict per evaluated path, in arrival order.

    ``text`` False leaves each path's ``response`` null (``output.trace_text=false``: the
    figures of every path without its text, for large searches).
    """
    out = []
    for entry in result.trace:
        ev = entry.evaluation
        out.append({
            "path": [int(d) for d in entry.path], "simulation": int(entry.simulation),
            "reward": float(ev.reward), "cost": int(sum(int(d) for d in entry.path)),
            "edits": edit_count(entry.path), "failed": bool(ev.failed), "reason": ev.reason,
            "extracted": ev.extracted, "where": ev.where, "plausibility": ev.plausibility,
            "implausible": bool(ev.implausible), "margin": ev.margin,
            "response_tokens": int(ev.response_tokens), "finish_reason": ev.finish_reason,
            "response": ev.response if text else None,
        })
    return out


def supervision_schema(num_layers: int) -> pa.Schema:
    """The Arrow schema of a shard for a model with ``num_layers`` (L) decoder blocks."""
    path_type = _path_type(check_num_layers(num_layers))
    return pa.schema(
        [
            ("example_id", pa.string()),
            ("dataset", _DICT_STRING),
            ("split", pa.string()),
            ("prompt", pa.string()),
            ("messages", pa.string()),
            ("rendered_prompt", pa.string()),
            ("gold", pa.string()),
            ("grader", pa.string()),
            ("model_id", _DICT_STRING),
            ("num_layers", pa.int16()),
            ("default_path", path_type),
            ("default_reward", pa.float32()),
            ("default_response", pa.string()),
            ("best_path", path_type),
            ("best_reward", pa.float32()),
            ("best_response", pa.string()),
            ("best_cost", pa.int16()),
            ("layers_saved", pa.int16()),
            ("improved", pa.bool_()),
            ("solved", pa.bool_()),
            ("label_edits", pa.int16()),
            ("good_paths", pa.list_(pa.field("element", path_type))),
            ("good_rewards", pa.list_(pa.field("element", pa.float32()))),
            ("simulations", pa.int32()),
            ("evaluations", pa.int32()),
            ("failed_evaluations", pa.int32()),
            ("memo_hits", pa.int32()),
            ("transposition_hits", pa.int32()),
            ("prior_hits", pa.int32()),
            ("evaluated_depths", pa.list_(pa.field("element", pa.int16()))),
            ("stopped_early", pa.bool_()),
            ("search_seconds", pa.float32()),
            ("meta", pa.string()),
            ("trace", pa.list_(pa.field("element", trace_type(num_layers)))),
        ]
    )


def _plain(value: Any, where: str) -> Any:
    """Recursively convert a config value to JSON-native types (Mappings, sequences, scalars)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)) or (
        isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray))
    ):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Enum):
        return _plain(value.value, where)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(
        f"config value at {where} has type {type(value).__name__}, which cannot be stored as "
        "JSON; resolve the config to plain containers (OmegaConf.to_container(cfg, resolve=True))"
    )


def config_to_json(config: Mapping[str, Any]) -> str:
    """Canonical JSON of a resolved config (sorted keys), as stored in shard metadata."""
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping, got {type(config).__name__}")
    return json.dumps(_plain(config, "config"), sort_keys=True, ensure_ascii=False)


def config_hash(config_json: str) -> str:
    """Short stable hash (16 hex digits of SHA-256) of a canonical config JSON string."""
    return hashlib.sha256(config_json.encode("utf-8")).hexdigest()[:16]


def _check_record(record: SupervisionRecord) -> None:
    """Raise ``ValueError`` if the record breaks the SearchResult invariants."""
    res, ex = record.result, record.example
    num_layers = check_num_layers(res.num_layers)
    where = f"example {ex.dataset}/{ex.id}"
    named = [("default_path", res.default_path), ("best_path", res.best_path)]
    named += [(f"good_paths[{i}]", p) for i, p in enumerate(res.good_paths)]
    for name, path in named:
        if len(path) != num_layers:
            raise ShardMismatchError(
                f"{where}: {name} has {len(path)} decisions but num_layers is {num_layers}"
            )
    if len(res.good_paths) != len(res.good_rewards):
        raise ValueError(
            f"{where}: {len(res.good_paths)} good_paths but {len(res.good_rewards)} good_rewards"
        )
    cost = sum(int(d) for d in res.best_path)
    if res.best_cost != cost or res.layers_saved != num_layers - cost:
        raise ValueError(
            f"{where}: best_cost={res.best_cost}, layers_saved={res.layers_saved} disagree with "
            f"best_path (cost {cost}, L - cost = {num_layers - cost})"
        )
    if not res.solved and (res.best_path != res.default_path or res.good_paths):
        raise ValueError(
            f"{where}: an unsolved search must be labelled with the default path and no good "
            f"paths (got best_path {res.best_path.to_str()}, {len(res.good_paths)} good paths)"
        )
    if not record.model_id:
        raise ValueError(f"{where}: model_id is empty")
    if not (math.isfinite(record.search_seconds) and record.search_seconds >= 0):
        raise ValueError(f"{where}: search_seconds must be finite and >= 0, got "
                         f"{record.search_seconds!r}")


def _json(value: Any, what: str, where: str) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {what} is not JSON-serializable: {err}") from err


def record_to_row(record: SupervisionRecord, trace_text: bool = True) -> dict[str, Any]:
    """One shard row (plain Python values keyed by column name) for ``record``.

    Paths become lists of ints of length L; ``messages`` and ``meta`` become JSON strings.
    Raises ``ValueError`` if the record's paths, costs or rewards are inconsistent.
    """
    _check_record(record)
    ex, res = record.example, record.result
    where = f"example {ex.dataset}/{ex.id}"
    return {
        "example_id": str(ex.id),
        "dataset": ex.dataset,
        "split": ex.split,
        "prompt": ex.prompt,
        "messages": _json([dict(m) for m in ex.messages], "messages", where),
        "rendered_prompt": record.rendered_prompt,
        "gold": ex.gold,
        "grader": ex.grader,
        "model_id": record.model_id,
        "num_layers": int(res.num_layers),
        "default_path": [int(d) for d in res.default_path],
        "default_reward": float(res.default_reward),
        "default_response": res.default_response,
        "best_path": [int(d) for d in res.best_path],
        "best_reward": float(res.best_reward),
        "best_response": res.best_response,
        "best_cost": int(res.best_cost),
        "layers_saved": int(res.layers_saved),
        "improved": bool(res.improved),
        "solved": bool(res.solved),
        "label_edits": edit_count(res.best_path),
        "good_paths": [[int(d) for d in p] for p in res.good_paths],
        "good_rewards": [float(r) for r in res.good_rewards],
        "simulations": int(res.simulations),
        "evaluations": int(res.evaluations),
        "failed_evaluations": int(res.failed_evaluations),
        "memo_hits": int(res.memo_hits),
        "transposition_hits": int(res.transposition_hits),
        "prior_hits": int(res.prior_hits),
        "evaluated_depths": [int(d) for d in res.evaluated_depths],
        "stopped_early": bool(res.stopped_early),
        "search_seconds": float(record.search_seconds),
        "meta": _json(dict(ex.meta), "meta", where),
        "trace": trace_rows(res, text=trace_text),
    }


def table_from_rows(rows: Sequence[Mapping[str, Any]], num_layers: int) -> pa.Table:
    """Arrow table of already-converted rows (see :func:`record_to_row`), schema from L."""
    return pa.Table.from_pylist(list(rows), schema=supervision_schema(num_layers))


def rows_to_table(
    records: Sequence[SupervisionRecord], num_layers: int, model_id: str
) -> pa.Table:
    """Arrow table with one row per record; every record must match ``num_layers`` and model.

    Raises :class:`ShardMismatchError` if a record has another L or model id.
    """
    num_layers = check_num_layers(num_layers)
    for record in records:
        if record.result.num_layers != num_layers:
            raise ShardMismatchError(
                f"example {record.example.dataset}/{record.example.id} was searched with "
                f"num_layers={record.result.num_layers}, but this table holds L={num_layers}"
            )
        if record.model_id != model_id:
            raise ShardMismatchError(
                f"example {record.example.dataset}/{record.example.id} was searched on model "
                f"{record.model_id!r}, but this table holds model {model_id!r}"
            )
    return table_from_rows([record_to_row(r) for r in records], num_layers)


def decode_path(value: Any, num_layers: int | None = None) -> LayerPath:
    """A stored path (Arrow scalar, numpy array, list or tuple of ints) as a :class:`Path`.

    Raises ``ValueError`` on nulls, non-integer entries, or a length other than ``num_layers``.
    """
    if isinstance(value, pa.Scalar):
        value = value.as_py()
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise ValueError(f"a path must be 1-D, got an array of shape {value.shape}")
        value = value.tolist()
    if value is None:
        raise ValueError("cannot decode a null path")
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"a path must be a sequence of ints, got {type(value).__name__}")
    decisions = []
    for i, d in enumerate(value):
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
            raise ValueError(f"path entry {i} is {d!r}, not an int decision")
        decisions.append(int(d))
    if num_layers is not None and len(decisions) != num_layers:
        raise ValueError(f"path has {len(decisions)} decisions, expected {num_layers}")
    return LayerPath(decisions)
