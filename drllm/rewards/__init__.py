"""Graders: binary rewards for (model response, gold answer), behind a registry.

Registered graders (``GRADERS.names()``):

* ``exact`` — dummy for tests: stripped string equality;
* ``mc_letter`` — strict multiple-choice letter (paper, Appendix B);
* ``mc_letter_lenient`` — also ``"B. text"`` and ``"the answer is B"``;
* ``math_boxed`` — last ``\\boxed{}`` vs gold, normalised string or math-verify equivalence;
* ``gsm8k_numeric`` — final number vs the number after ``####``.

A grader never raises on model output; an unusable gold raises ``ValueError``
(``validate_gold``), which dataset adapters use to reject rows.
"""

from drllm.rewards.base import GRADERS, ExactGrader, Grader, get_grader, grade
from drllm.rewards.extract import (
    extract_letter_lenient,
    extract_letter_strict,
    gsm8k_gold,
    last_boxed,
    last_number,
    normalize_letter,
    parse_number,
)
from drllm.rewards.gsm8k import GSM8KGrader
from drllm.rewards.math_boxed import MathBoxedGrader
from drllm.rewards.math_normalize import normalize_math_answer
from drllm.rewards.mc_letter import LenientMCLetterGrader, MCLetterGrader

__all__ = [
    "GRADERS",
    "ExactGrader",
    "GSM8KGrader",
    "Grader",
    "LenientMCLetterGrader",
    "MCLetterGrader",
    "MathBoxedGrader",
    "extract_letter_lenient",
    "extract_letter_strict",
    "get_grader",
    "grade",
    "gsm8k_gold",
    "last_boxed",
    "last_number",
    "normalize_letter",
    "normalize_math_answer",
    "parse_number",
]
