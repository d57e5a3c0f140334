"""``local`` adapter: your own questions from jsonl / json / csv / parquet files.

``DatasetConfig.field_map`` says which column holds the question (``"question"``), the gold
answer (``"gold"``) and, optionally, a stable id (``"id"``; default a hash of the question and
gold, :func:`content_id`, so rows of another file never pass for examples already searched);
``DatasetConfig.grader`` is required. Files come from ``data_files`` (globs allowed) or
``path`` (one file, or a directory whose files are assigned to splits by the ``datasets``
naming rules). The user message is ``"Question: <question>"`` plus the grader's standard answer
instruction (:data:`drllm.data.prompts.GRADER_INSTRUCTIONS`; none for other graders).
Numeric golds (``42`` in jsonl) are turned into text.

Rejections: ``missing question``, ``missing gold``, ``missing id``, ``duplicate id``, and
``malformed jsonl line`` (a line that is not a JSON object; ``DatasetConfig.malformed_lines=error``
stops the load naming its file and line instead).
"""

from __future__ import annotations

import logging
import hashlib
import os
from pathlib import Path
from typing import Any, Mapping

from drllm.data.base import DATASETS, DatasetAdapter, DatasetConfig, RowRejected
from drllm.data.prompts import GRADER_INSTRUCTIONS, make_example, with_instruction
from drllm.data.sources import Rows, expand_files, files_in_root, load_files, select_columns
from drllm.types import Example

logger = logging.getLogger(__name__)

REQUIRED_FIELDS = ("question", "gold")
OPTIONAL_FIELDS = ("id",)


def _as_text(value: Any) -> str:
    """A cell as stripped text; numbers (not bools) are formatted, anything else is empty."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return ""


def content_id(question: str, gold: str) -> str:
    """A row id from its content: ``"q-"`` + 16 hex digits of SHA-256 over question and gold.

    Row numbers would make the first rows of two different files look like the same examples
    to a resumed run; a content hash names the same question the same way in any file.
    """
    digest = hashlib.sha256(f"{question}\x1f{gold}".encode("utf-8")).hexdigest()[:16]
    return f"q-{digest}"


class LocalAdapter(DatasetAdapter):
    """Rows of local files mapped through ``field_map``."""

    name = "local"
    default_grader = ""

    def validate(self, config: DatasetConfig) -> None:
        if config.levels is not None:
            raise ValueError("DatasetConfig.levels: the 'local' dataset has no difficulty levels")
        if config.grader is None:
            raise ValueError(
                "DatasetConfig.grader: the 'local' dataset needs a grader name "
                "(e.g. exact, gsm8k_numeric, math_boxed, mc_letter)"
            )
        field_map = config.field_map
        if not field_map:
            raise ValueError(
                "DatasetConfig.field_map: the 'local' dataset needs "
                "{'question': <column>, 'gold': <column>} (and optionally 'id')"
            )
        missing = [k for k in REQUIRED_FIELDS if not field_map.get(k)]
        unknown = sorted(set(field_map) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
        if missing or unknown:
            raise ValueError(
                f"DatasetConfig.field_map: missing keys {missing}, unknown keys {unknown}; "
                f"expected {list(REQUIRED_FIELDS)} plus optional {list(OPTIONAL_FIELDS)}"
            )
        if config.path is None and config.data_files is None:
            raise ValueError(
                "DatasetConfig.data_files: the 'local' dataset needs data_files or path"
            )

    def rows(self, config: DatasetConfig) -> Rows:
        assert config.field_map is not None
        if config.data_files is not None:
            files = expand_files(config.data_files)
        else:
            assert config.path is not None
            root = Path(os.path.expanduser(config.path))
            files = expand_files([str(root)]) if root.is_file() else files_in_root(
                root, (None,), config.split
            )
        loaded = load_files(files, config.split, config.malformed_lines)
        return select_columns(loaded, sorted(set(config.field_map.values())),
                              "DatasetConfig.field_map: columns")

    def parse(self, row: Mapping[str, Any], index: int, config: DatasetConfig) -> Example:
        fields = config.field_map
        assert fields is not None
        question = _as_text(row.get(fields["question"]))
        if not question:
            raise RowRejected("missing question")
        gold = _as_text(row.get(fields["gold"]))
        if not gold:
            raise RowRejected("missing gold")
        if fields.get("id"):
            row_id = _as_text(row.get(fields["id"]))
            if not row_id:
                raise RowRejected("missing id")
        else:
            row_id = content_id(question, gold)
        grader = config.grader_name
        return make_example(
            id=row_id,
            dataset=self.name,
            split=config.split,
            prompt=with_instruction(question, GRADER_INSTRUCTIONS.get(grader)),
            gold=gold,
            grader=grader,
            system_prompt=config.system_prompt,
        )


DATASETS.register("local")(LocalAdapter())
