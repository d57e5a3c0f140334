"""Competition MATH adapter (``math``): LaTeX answers in ``\\boxed{}``, ``math_boxed`` grader.

Layout (Hendrycks MATH): ``problem``, ``level`` (``"Level 1"`` .. ``"Level 5"``), ``type``
(subject) and ``solution``, whose LAST ``\\boxed{...}`` holds the answer; that content
(:func:`drllm.rewards.extract.last_boxed`) is the gold. The hub default is
``EleutherAI/hendrycks_math`` (one config per subject, concatenated); a local root may hold
the same per-subject directories or, like ``../shared/data/competition_math``, a single file
(``pool.parquet``, read as the ``train`` split by the ``datasets`` naming rules). Rows have no
id column; the id is ``<split>-<row index>``. ``levels`` filters on ``level``.

Rejections: ``empty problem``, ``missing solution``, ``no \\boxed in solution``,
``empty \\boxed answer``, plus ``unparseable level`` when a level filter is set.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from drllm.data.base import (
    DATASETS,
    DatasetAdapter,
    DatasetConfig,
    RowRejected,
    parse_level,
    required_text,
)
from drllm.data.prompts import MATH_INSTRUCTION, make_example, with_instruction
from drllm.rewards.extract import last_boxed
from drllm.rewards.math_extract import boxed_answers
from drllm.types import Example

logger = logging.getLogger(__name__)

MATH_SUBJECTS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)


def boxed_gold(solution: Any) -> str:
    """The gold answer of a worked solution: its last ``\\boxed{}`` content, or, when the
    solution ends with a group of boxes joined only by connectors ("the solutions are
    ``\\boxed{-2}`` and ``\\boxed{1}``"), all of them as one list ``"-2, 1"`` -- the same reading
    the ``math_boxed`` grader gives a response (:func:`drllm.rewards.math_extract.boxed_answers`).

    Raises:
        RowRejected: no solution, no box, or an empty box.
    """
    solution = required_text(solution, "missing solution")
    gold = last_boxed(solution)
    if gold is None:
        raise RowRejected("no \\boxed in solution")
    if not gold:
        raise RowRejected("empty \\boxed answer")
    group = boxed_answers(solution) or [gold]
    return ", ".join(group)


class CompetitionMathAdapter(DatasetAdapter):
    """Hendrycks MATH (problem / level / type / solution)."""

    name = "math"
    default_grader = "math_boxed"
    hub_repo = "EleutherAI/hendrycks_math"
    hub_configs = MATH_SUBJECTS
    has_levels = True
    columns = ("problem", "level", "type", "solution")

    def level(self, row: Mapping[str, Any]) -> int | None:
        return parse_level(row.get("level"))

    def parse(self, row: Mapping[str, Any], index: int, config: DatasetConfig) -> Example:
        problem = required_text(row.get("problem"), "empty problem")
        gold = boxed_gold(row.get("solution"))
        return make_example(
            id=f"{config.split}-{index}",
            dataset=self.name,
            split=config.split,
            prompt=with_instruction(problem, MATH_INSTRUCTION),
            gold=gold,
            grader=config.grader_name,
            system_prompt=config.system_prompt,
            meta={"level": self.level(row), "type": row.get("type") or ""},
        )


DATASETS.register("math")(CompetitionMathAdapter())
