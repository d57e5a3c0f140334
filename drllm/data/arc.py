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

import dataclasses
import hashlib
import logging
import random
from typing import Any, Mapping

from drllm.data.base import DATASETS, DatasetAdapter, DatasetConfig, RowRejected
from drllm.data.prompts import make_example, mc_prompt, question_block
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
    multiple_choice = True
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
        gold_index = labels.index(key)
        if config.reward != "generate":
            return self._loglik_example(row_id, question, letters, texts, gold_index, config)
        orders = choice_orders(row_id, len(texts), gold_index, config.chance_shuffles)
        variants = tuple(
            make_example(
                id=row_id, dataset=self.name, split=config.split,
                prompt=mc_prompt(question, letters, [texts[j] for j in order]),
                gold=letters[order.index(gold_index)], grader=config.grader_name,
                system_prompt=config.system_prompt,
                meta={"choice_order": list(order)},
            )
            for order in orders[1:]
        )
        meta = {"answer_label": key, "num_choices": len(letters)}
        if variants:
            meta["variant_golds"] = [v.gold for v in variants]
        example = make_example(
            id=row_id,
            dataset=self.name,
            split=config.split,
            prompt=mc_prompt(question, letters, texts),
            gold=letters[gold_index],
            grader=config.grader_name,
            system_prompt=config.system_prompt,
            meta=meta,
        )
        return dataclasses.replace(example, variants=variants) if variants else example


    def _loglik_example(self, row_id: str, question: str, letters: list[str],
                        texts: list[str], gold_index: int, config: DatasetConfig) -> Example:
        """An example scored by choice log-likelihood, in lm-eval's ARC format: the context
        ``Question: <q>\nAnswer:`` (base style; chat style: ``Question: <q>`` as the user
        turn) and each choice's own text as the continuation (after a space in base style)."""
        example = make_example(
            id=row_id, dataset=self.name, split=config.split, prompt=question_block(question),
            gold=letters[gold_index], grader=config.grader_name,
            system_prompt=config.system_prompt,
            meta={"num_choices": len(letters), "choice_texts": list(texts)},
        )
        base = config.prompt_style == "base"
        return dataclasses.replace(
            example, choices=tuple((" " + t) if base else t for t in texts),
        )


def choice_orders(row_id: str, num_choices: int, gold_index: int, m: int) -> list[list[int]]:
    """``m`` orders of the choices: the original first, then ``m - 1`` seeded shuffles.

    Deterministic per example (seeded by ``row_id``). Each shuffle puts the gold answer at a
    position no earlier order used while one is left, so an answer that names the same letter
    whatever the choices (SmolLM2 always says ``A``) is wrong under at least one order.
    """
    rng = random.Random(hashlib.sha256(f"choices|{row_id}".encode()).digest())
    orders = [list(range(num_choices))]
    used = {gold_index}
    for _ in range(m - 1):
        free = [p for p in range(num_choices) if p not in used] or list(range(num_choices))
        target = rng.choice(free)
        others = [j for j in range(num_choices) if j != gold_index]
        rng.shuffle(others)
        order = others[:target] + [gold_index] + others[target:]
        used.add(target)
        orders.append(order)
    return orders


DATASETS.register("arc_easy")(ArcAdapter("arc_easy", "ARC-Easy"))
DATASETS.register("arc_challenge")(ArcAdapter("arc_challenge", "ARC-Challenge"))
