"""Placebo golds: the same questions with a wrong gold, a control for what a search "finds".

The search is an optimizer against its reward. Searching the same questions against a *wrong*
gold measures how often the reward can be won without answering the question: by luck (a
multiple-choice ranking that a perturbed path flips to an arbitrary choice) or by a gamed
reward (a broken output that happens to contain the number). Under a placebo gold, every
"improved" example is a false discovery; comparing the placebo run's improved rate with the
real run's tells how much of the real improvement is luck (``dataset.placebo=true``).

* Multiple choice: the gold becomes another choice, drawn per example (seeded by its id); each
  choice-order variant's gold letter names that same decoy choice.
* Anything else: the gold becomes another example's gold (one that differs), so the decoy is a
  plausible answer of the same task (a number of the same range, a LaTeX expression, ...).

The true gold is kept in ``meta["true_gold"]``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from typing import Sequence

from drllm.types import CHOICE_LETTERS as LETTERS, Example


def _rng(example_id: str, seed: int) -> random.Random:
    return random.Random(hashlib.sha256(f"placebo|{seed}|{example_id}".encode()).digest())


def _num_choices(example: Example) -> int | None:
    if example.choices:
        return len(example.choices)
    n = example.meta.get("num_choices")
    return int(n) if n is not None else None


def _multiple_choice(example: Example, n: int, seed: int) -> Example:
    gold = LETTERS.index(example.gold)
    decoy = _rng(example.id, seed).choice([j for j in range(n) if j != gold])
    variants = tuple(
        dataclasses.replace(v, gold=LETTERS[list(v.meta["choice_order"]).index(decoy)])
        for v in example.variants
    )
    meta = {**example.meta, "true_gold": example.gold}
    if variants:
        meta["variant_golds"] = [v.gold for v in variants]
    return dataclasses.replace(example, gold=LETTERS[decoy], variants=variants, meta=meta)


def placebo_examples(examples: Sequence[Example], seed: int = 0) -> tuple[Example, ...]:
    """``examples`` with placebo golds (see the module docstring); deterministic in ``seed``.

    Raises:
        ValueError: an open-answer example has no other example with a different gold to
            borrow (a sample of one, or every gold equal).
    """
    golds = [ex.gold for ex in examples]
    out = []
    for i, ex in enumerate(examples):
        n = _num_choices(ex)
        if n is not None and n > 1:
            out.append(_multiple_choice(ex, n, seed))
            continue
        others = [j for j, g in enumerate(golds) if g.strip() != ex.gold.strip()]
        if not others:
            raise ValueError(f"placebo: example {ex.id} has no other example with a different "
                             f"gold to borrow ({len(examples)} examples); sample more examples")
        j = _rng(ex.id, seed).choice(others)
        out.append(dataclasses.replace(ex, gold=golds[j],
                                       meta={**ex.meta, "true_gold": ex.gold}))
    return tuple(out)
