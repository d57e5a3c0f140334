"""``synthetic_arith``: generated arithmetic word problems, levels 1-5, no download.

The default dataset of the main search job. Each problem is a short story about one person's
stock of an item, changed by a few operations, then "How many <items> does <name> have now?";
the gold is the integer result (``gsm8k_numeric`` grader) and the instruction asks for just the
number, so a correct answer fits in a handful of tokens.

Levels (number of operations, operand ranges):

====  =====================================================================================
 1    one add or subtract, numbers 1-9 ("Tom has 3 apples and buys 4 more." -> 7)
 2    two adds / subtracts, start 2-20, operands up to 10
 3    groups ("buys 3 bags with 4 apples in each") plus an add / subtract, start 2-20
 4    three operations including groups or doubling/tripling, start 10-60, operands up to 40
 5    four operations with groups, an exact equal split, doubling/tripling, start 50-500
====  =====================================================================================

Every intermediate value stays a positive integer. The pool holds :data:`POOL_SIZE` problems
per level and split; problem ``i`` of level ``L`` depends only on ``(split, L, i)`` (a
``random.Random`` seeded by that string), never on the sampling seed or on which other levels
are loaded, so ids ``synthetic_arith-L{L}-{i}`` (``synthetic_arith-<split>-L{L}-{i}`` outside
``train``) name the same problem everywhere. ``DatasetConfig.seed`` only picks which problems
are sampled. ``meta["expression"]`` records the computation (e.g. ``((3 + 4) - 2)``).
"""

from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

from drllm.data.base import DATASETS, DatasetAdapter, DatasetConfig, MAX_LEVEL, MIN_LEVEL
from drllm.data.prompts import ARITH_INSTRUCTION, make_example, with_instruction
from drllm.data.sources import Rows
from drllm.types import Example

logger = logging.getLogger(__name__)

#: Problems generated per level and split.
POOL_SIZE = 1000

# (name, subject pronoun, object pronoun, possessive)
PEOPLE = (
    ("Tom", "he", "him", "his"), ("Anna", "she", "her", "her"), ("Ben", "he", "him", "his"),
    ("Maria", "she", "her", "her"), ("Leo", "he", "him", "his"), ("Emma", "she", "her", "her"),
    ("Omar", "he", "him", "his"), ("Lily", "she", "her", "her"), ("Sam", "he", "him", "his"),
    ("Zoe", "she", "her", "her"),
)
FRIENDS = ("Jack", "Mia", "Noah", "Ella", "Ravi", "Sofia", "Liam", "Nora")
ITEMS = (
    ("apple", "apples"), ("marble", "marbles"), ("sticker", "stickers"), ("pencil", "pencils"),
    ("cookie", "cookies"), ("book", "books"), ("card", "cards"), ("shell", "shells"),
    ("stamp", "stamps"), ("coin", "coins"),
)
CONTAINERS = ("bags", "boxes", "packs", "jars", "baskets")
SCALE_WORDS = {2: "doubles", 3: "triples"}


@dataclass(frozen=True)
class ArithProblem:
    """One generated problem: ``text`` (story + question), integer ``answer``, the
    ``expression`` that computes it and the number of operations (``steps``)."""

    level: int
    index: int
    text: str
    answer: int
    expression: str
    steps: int


@dataclass
class _Story:
    rng: random.Random
    value: int
    expression: str
    person: tuple[str, str, str, str]
    item: tuple[str, str]
    phrases: list[str] = field(default_factory=list)

    def count(self, n: int) -> str:
        """``"1 apple"`` / ``"3 apples"``."""
        return f"{n} {self.item[0] if n == 1 else self.item[1]}"


# Each operation appends a verb phrase (subject omitted) and updates value / expression;
# it returns False, changing nothing, when it cannot apply to the current value.
def _add(st: _Story, hi: int) -> bool:
    n = st.rng.randint(1, hi)
    friend = st.rng.choice(FRIENDS)
    st.phrases.append(st.rng.choice((
        f"buys {n} more", f"finds {n} more", f"gets {st.count(n)} from {friend}",
    )))
    st.value, st.expression = st.value + n, f"({st.expression} + {n})"
    return True


def _sub(st: _Story, hi: int) -> bool:
    if st.value < 2:
        return False
    n = st.rng.randint(1, min(hi, st.value - 1))
    friend = st.rng.choice(FRIENDS)
    st.phrases.append(st.rng.choice((
        f"gives {st.count(n)} to {friend}", f"loses {st.count(n)}", f"sells {st.count(n)}",
    )))
    st.value, st.expression = st.value - n, f"({st.expression} - {n})"
    return True


def _groups(st: _Story, k_hi: int, m_hi: int) -> bool:
    k, m = st.rng.randint(2, k_hi), st.rng.randint(2, m_hi)
    st.phrases.append(f"buys {k} {st.rng.choice(CONTAINERS)} with {m} {st.item[1]} in each")
    st.value, st.expression = st.value + k * m, f"({st.expression} + {k} * {m})"
    return True


def _scale(st: _Story) -> bool:
    factor = st.rng.choice(tuple(SCALE_WORDS))
    st.phrases.append(f"{SCALE_WORDS[factor]} the number of {st.item[1]} {st.person[1]} has")
    st.value, st.expression = st.value * factor, f"({st.expression} * {factor})"
    return True


def _share(st: _Story, k_hi: int) -> bool:
    ks = [k for k in range(2, k_hi + 1) if st.value % k == 0 and st.value // k >= 2]
    if not ks:
        return False
    k = st.rng.choice(ks)
    st.phrases.append(
        f"splits {st.person[3]} {st.item[1]} into {k} equal groups and keeps one group"
    )
    st.value, st.expression = st.value // k, f"({st.expression} / {k})"
    return True


Op = Callable[[_Story], bool]
ADD: Callable[[int], Op] = lambda hi: lambda st: _add(st, hi)  # noqa: E731
SUB: Callable[[int], Op] = lambda hi: lambda st: _sub(st, hi)  # noqa: E731


def _plan(rng: random.Random, level: int) -> tuple[int, list[Op]]:
    """Start value and operation sequence of a problem of ``level``."""
    if level == 1:
        return rng.randint(2, 9), [rng.choice((ADD(9), SUB(9)))]
    if level == 2:
        return rng.randint(2, 20), [rng.choice((ADD(10), SUB(10))) for _ in range(2)]
    if level == 3:
        ops = [lambda st: _groups(st, 5, 10), rng.choice((ADD(20), SUB(20)))]
        rng.shuffle(ops)
        return rng.randint(2, 20), ops
    if level == 4:
        ops = [
            rng.choice((lambda st: _groups(st, 9, 12), _scale)),
            rng.choice((ADD(40), SUB(40))),
            rng.choice((ADD(40), SUB(40), lambda st: _groups(st, 9, 12))),
        ]
        rng.shuffle(ops)
        return rng.randint(10, 60), ops
    ops = [
        lambda st: _groups(st, 12, 25),
        lambda st: _share(st, 6) or _sub(st, 200),
        rng.choice((ADD(200), SUB(200))),
        rng.choice((ADD(200), SUB(200), _scale)),
    ]
    rng.shuffle(ops)
    return rng.randint(50, 500), ops


def _sentence(phrase: str, subject: str, first: bool) -> str:
    text = f"{subject} {phrase}." if first else f"Then {subject} {phrase}."
    return text[0].upper() + text[1:]


def generate_problem(split: str, level: int, index: int) -> ArithProblem:
    """Problem ``index`` of ``level`` in ``split``; a pure function of its arguments."""
    if not MIN_LEVEL <= level <= MAX_LEVEL:
        raise ValueError(f"level must be in {MIN_LEVEL}..{MAX_LEVEL}, got {level}")
    rng = random.Random(f"synthetic_arith/{split}/L{level}/{index}")
    person, item = rng.choice(PEOPLE), rng.choice(ITEMS)
    start, ops = _plan(rng, level)
    st = _Story(rng=rng, value=start, expression=str(start), person=person, item=item)
    for op in ops:
        applied = op(st) or _add(st, 9)
        assert applied and st.value > 0, "operations keep a positive integer"
    name, subject = person[0], person[1]
    opening = f"{name} has {st.count(start)}"
    if len(st.phrases) == 1:
        story = f"{opening} and {st.phrases[0]}."
    else:
        rest = [_sentence(p, subject, i == 0) for i, p in enumerate(st.phrases)]
        story = " ".join([f"{opening}."] + rest)
    text = f"{story} How many {item[1]} does {name} have now?"
    return ArithProblem(level, index, text, st.value, st.expression, len(st.phrases))


def example_id(split: str, level: int, index: int) -> str:
    """``synthetic_arith-L{level}-{index}`` (``synthetic_arith-{split}-L...`` outside train)."""
    prefix = "synthetic_arith" if split == "train" else f"synthetic_arith-{split}"
    return f"{prefix}-L{level}-{index}"


class SyntheticArithAdapter(DatasetAdapter):
    """Generated rows; ``levels`` selects which levels are generated (default: all five)."""

    name = "synthetic_arith"
    default_grader = "gsm8k_numeric"
    default_max_new_tokens = 128  # SmolLM2 reasons before the number: see the YAML
    has_levels = True

    def validate(self, config: DatasetConfig) -> None:
        super().validate(config)
        if config.path is not None or config.data_files is not None:
            raise ValueError(
                "DatasetConfig.path / data_files: synthetic_arith is generated, it reads no files"
            )

    def rows(self, config: DatasetConfig) -> Rows:
        levels = config.levels or tuple(range(MIN_LEVEL, MAX_LEVEL + 1))
        rows = [
            asdict(generate_problem(config.split, level, index))
            for level in levels
            for index in range(POOL_SIZE)
        ]
        return Rows(rows, len(rows), f"generated, levels {list(levels)} x {POOL_SIZE}")

    def level(self, row: Mapping[str, Any]) -> int | None:
        return row["level"]

    def parse(self, row: Mapping[str, Any], index: int, config: DatasetConfig) -> Example:
        level, i = row["level"], row["index"]
        return make_example(
            id=example_id(config.split, level, i),
            dataset=self.name,
            split=config.split,
            prompt=with_instruction(row["text"], ARITH_INSTRUCTION),
            gold=str(row["answer"]),
            grader=config.grader_name,
            system_prompt=config.system_prompt,
            meta={"level": level, "expression": row["expression"], "steps": row["steps"]},
        )


DATASETS.register("synthetic_arith")(SyntheticArithAdapter())
