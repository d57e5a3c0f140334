"""Draft chunks during decoding: verify proposed continuations in one forward pass per step.

While decoding along an edited path, a row's next tokens are often ones some other path of the
same question already produced (a search asks each question along dozens of paths, and the
answers share their wording). A *proposer* maps a row's tokens so far to a draft: the next
tokens of a known response that starts with exactly those tokens (:func:`pool_proposer`).

A drafted step feeds every active row its last token plus its draft (padded to the longest
draft, the padding masked) in one forward call through the cache; per row, the greedy tokens
are accepted up to and including the first disagreement with the draft, exactly the tokens
one-token-at-a-time greedy decoding would emit. Key columns of rejected draft tokens (and of
the padding) are masked for that row from then on; its positions advance by what it accepted.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import torch

logger = logging.getLogger(__name__)

#: ``propose(tokens so far) -> draft tokens`` (possibly empty).
Proposer = Callable[[Sequence[int]], Sequence[int]]

#: Draft tokens per row and step at most.
MAX_DRAFT = 15


def pool_proposer(responses: Sequence[Sequence[int]], max_draft: int = MAX_DRAFT) -> Proposer:
    """Propose the continuation of the first known response that starts with the row's tokens."""

    def propose(tokens: Sequence[int]) -> Sequence[int]:
        n = len(tokens)
        for resp in responses:
            if len(resp) > n and tuple(resp[:n]) == tuple(tokens):
                return resp[n: n + max_draft]
        return ()

    return propose


def drafted_inputs(
    next_tokens: list[int], drafts: Sequence[Sequence[int]], pad: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``[B, q]`` inputs (last token, draft, padding), ``[B, q]`` real-column mask, ``q``."""
    q = 1 + max(len(d) for d in drafts)
    ids = torch.full((len(drafts), q), pad, dtype=torch.long)
    real = torch.zeros((len(drafts), q), dtype=torch.bool)
    for b, (t, d) in enumerate(zip(next_tokens, drafts)):
        ids[b, 0] = t
        ids[b, 1: 1 + len(d)] = torch.tensor(list(d), dtype=torch.long)
        real[b, : 1 + len(d)] = True
    return ids.to(device), real.to(device), q


def accept(greedy: Sequence[int], draft: Sequence[int]) -> int:
    """Draft tokens accepted: the length of the agreeing prefix of ``greedy`` and ``draft``
    (of any two sequences: also the leading decisions two paths share)."""
    a = 0
    for x, y in zip(greedy, draft):
        if x != y:
            break
        a += 1
    return a
