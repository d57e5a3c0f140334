"""Graders: binary rewards for (model response, gold answer), behind a registry.

Registered graders (``GRADERS.names()``):

* ``exact`` — dummy for tests: stripped string equality;
* ``mc_letter`` — strict multiple-choice letter (paper, Appendix B);
* ``mc_letter_lenient`` — also ``"B. text"`` and ``"the answer is B"``;
* ``math_boxed`` — final ``\\boxed{}`` answer(s) vs gold: normalised string, the decimal rule
  (``0.333`` vs ``\\frac13``) or math-verify equivalence;
* ``math_boxed_lenient`` — also an unboxed final answer (``the answer is X``, last ``$...$``);
* ``gsm8k_numeric`` — the answer the response states (marker, bare first line, final ``=``)
  vs the number after ``####``;
* ``gsm8k_numeric_lenient`` — also the last number anywhere in the text.

:func:`lenient_counterpart` maps each grader to its lenient variant's name (strict and lenient
accuracy side by side): ``mc_letter`` -> ``mc_letter_lenient``, ``math_boxed`` ->
``math_boxed_lenient``, ``gsm8k_numeric`` -> ``gsm8k_numeric_lenient``, ``exact`` -> None.

A grader never raises on model output; an unusable gold raises ``ValueError``
(``validate_gold``), which dataset adapters use to reject rows.
"""

from drllm.rewards.base import (
    GRADERS,
    ExactGrader,
    Grader,
    get_grader,
    grade,
    lenient_counterpart,
)
from drllm.rewards.extract import (
    extract_letter_lenient,
    extract_letter_strict,
    gsm8k_gold,
    last_boxed,
    last_number,
    normalize_letter,
    parse_number,
)
from drllm.rewards.gsm8k import GSM8KGrader, LenientGSM8KGrader
from drllm.rewards.math_boxed import LenientMathBoxedGrader, MathBoxedGrader
from drllm.rewards.math_extract import boxed_answers, final_answer_lenient
from drllm.rewards.math_normalize import normalize_math_answer
from drllm.rewards.mc_letter import LenientMCLetterGrader, MCLetterGrader

__all__ = [
    "GRADERS",
    "ExactGrader",
    "GSM8KGrader",
    "Grader",
    "LenientGSM8KGrader",
    "LenientMCLetterGrader",
    "LenientMathBoxedGrader",
    "MCLetterGrader",
    "MathBoxedGrader",
    "boxed_answers",
    "extract_letter_lenient",
    "extract_letter_strict",
    "final_answer_lenient",
    "get_grader",
    "grade",
    "gsm8k_gold",
    "last_boxed",
    "lenient_counterpart",
    "last_number",
    "normalize_letter",
    "normalize_math_answer",
    "parse_number",
]
