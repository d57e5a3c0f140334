"""AI2 ARC adapters (``arc_easy``, ``arc_challenge``): multiple choice, strict letter grader.

Layout (``allenai/ai2_arc``, configs ``ARC-Easy`` / ``ARC-Challenge``): ``id``, ``question``,
``choices`` (``{"text": [...], "label": [...]}``) and ``answerKey``. Labels are ``A``-``E`` or,
in a few rows, ``1``-``4``/``1``-``5``; both are mapped to letters with
:func:`drllm.rewards.extract.normalize_letter`, so the gold is always a letter and the prompt
always shows lettered choices.

Rejections: ``empty question``, ``empty choices``, ``empty choice text``,
``choice labels and texts differ in length``, ``unmappable choice label``,
``duplicate choice label``, ``missing answerKey``, ``answerKey not among choices``, ``missing id``.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from drllm.data.base import DATASETS, DatasetAdapter, DatasetConfig, RowRejected
from drllm.data.prompts import make_example, mc_prompt
from drllm.rewards.extract import normalize_letter
from drllm.types import Example

logger = logging.getLogger(__name__)


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def parse_choices(choices: Any) -> tuple[list[str], list[str], list[str]]:
    """``(labels, letters, texts)`` of an ARC ``choices`` struct.

    Raises:
        RowRejected: empty, misaligned, blank or unmappable choices.
    """
    if not isinstance(choices, Mapping):
        raise RowRejected("empty choices")
    labels = list(choices.get("label") or [])
    texts = list(choices.get("text") or [])
    if not labels or not texts:
        raise RowRejected("empty choices")
    if len(labels) != len(texts):
        raise RowRejected("choice labels and texts differ in length")
    if any(not _text(t) for t in texts):
        raise RowRejected("empty choice text")
    letters = [normalize_letter(label, num_choices=len(labels)) for label in labels]
    if any(letter is None for letter in letters):
        raise RowRejected("unmappable choice label")
    if len(set(letters)) != len(letters):
        raise RowRejected("duplicate choice label")
    return [_text(label) for label in labels], letters, [_text(t) for t in texts]


class ArcAdapter(DatasetAdapter):
    """One ARC configuration (``ARC-Easy`` or ``ARC-Challenge``)."""

    default_grader = "mc_letter"
    hub_repo = "allenai/ai2_arc"
    columns = ("id", "question", "choices", "answerKey")

    def __init__(self, name: str, hub_config: str) -> None:
        self.name = name
        self.hub_configs = (hub_config,)

    def parse(self, row: Mapping[str, Any], index: int, config: DatasetConfig) -> Example:
        question = _text(row.get("question"))
        if not question:
            raise RowRejected("empty question")
        row_id = _text(row.get("id"))
        if not row_id:
            raise RowRejected("missing id")
        labels, letters, texts = parse_choices(row.get("choices"))
        key = _text(row.get("answerKey"))
        if not key:
            raise RowRejected("missing answerKey")
        if key not in labels:
            raise RowRejected("answerKey not among choices")
        gold = letters[labels.index(key)]
        return make_example(
            id=row_id,
            dataset=self.name,
            split=config.split,
            prompt=mc_prompt(question, letters, texts),
            gold=gold,
            grader=config.grader_name,
            system_prompt=config.system_prompt,
            meta={"answer_label": key, "num_choices": len(letters)},
        )


DATASETS.register("arc_easy")(ArcAdapter("arc_easy", "ARC-Easy"))
DATASETS.register("arc_challenge")(ArcAdapter("arc_challenge", "ARC-Challenge"))
