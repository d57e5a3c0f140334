"""DART-Math pool adapters (``dart-1`` .. ``dart-5``, and ``dart`` with a ``levels`` filter).

Layout (``hkust-nlp/dart-math-pool-math``, as used by the paper): ``query`` (the problem),
``gt_ans`` (the reference answer, LaTeX) and ``query_metadata``, a struct whose ``level``
(1..5, or ``"Level 3"``) is the MATH difficulty. ``dart-k`` keeps the rows of level ``k``.
The pool holds several synthesized responses per query, so the same query appears on many
rows: the id is a hash of the query text, and repeats are skipped as ``duplicate id``.

Rejections: ``empty query``, ``missing gt_ans``, ``unparseable level`` (the level filter is
always on for ``dart-k``), ``duplicate id``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Mapping

from drllm.data.base import DATASETS, DatasetAdapter, DatasetConfig, parse_level, required_text
from drllm.data.prompts import MATH_INSTRUCTION, make_example, with_instruction
from drllm.types import Example

logger = logging.getLogger(__name__)


def query_id(query: str) -> str:
    """Stable id of a DART query: ``q-`` + 16 hex digits of SHA-256 of the stripped text."""
    return "q-" + hashlib.sha256(query.strip().encode("utf-8")).hexdigest()[:16]


def _metadata(row: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = row.get("query_metadata")
    if isinstance(meta, str):  # some exports serialise the struct as JSON
        try:
            meta = json.loads(meta)
        except ValueError:
            return {}
    return meta if isinstance(meta, Mapping) else {}


class DartAdapter(DatasetAdapter):
    """DART-Math pool rows, optionally pinned to one difficulty level."""

    default_grader = "math_boxed"
    hub_repo = "hkust-nlp/dart-math-pool-math"
    has_levels = True
    columns = ("query", "gt_ans", "query_metadata")

    def __init__(self, name: str, level: int | None = None) -> None:
        self.name = name
        self.fixed_level = level

    def validate(self, config: DatasetConfig) -> None:
        super().validate(config)
        if self.fixed_level is not None and config.levels not in (None, (self.fixed_level,)):
            raise ValueError(
                f"DatasetConfig.levels: {self.name!r} is level {self.fixed_level} only, got "
                f"{list(config.levels)}; use name='dart' with levels={list(config.levels)}"
            )

    def effective_levels(self, config: DatasetConfig) -> tuple[int, ...] | None:
        return (self.fixed_level,) if self.fixed_level is not None else config.levels

    def level(self, row: Mapping[str, Any]) -> int | None:
        return parse_level(_metadata(row).get("level"))

    def parse(self, row: Mapping[str, Any], index: int, config: DatasetConfig) -> Example:
        query = required_text(row.get("query"), "empty query")
        gold = required_text(row.get("gt_ans"), "missing gt_ans")
        meta = _metadata(row)
        return make_example(
            id=query_id(query),
            dataset=self.name,
            split=config.split,
            prompt=with_instruction(query, MATH_INSTRUCTION),
            gold=gold.strip(),
            grader=config.grader_name,
            system_prompt=config.system_prompt,
            meta={"level": self.level(row), "type": str(meta.get("type") or "")},
        )


DATASETS.register("dart")(DartAdapter("dart"))
for _level in range(1, 6):
    DATASETS.register(f"dart-{_level}")(DartAdapter(f"dart-{_level}", _level))
