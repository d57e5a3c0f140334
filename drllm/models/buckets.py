"""Length buckets for prefill: split a batch so that padding does not cost more than it saves.

A left-padded prefill computes ``rows x max_length`` token positions, the padding included. With
prompts of mixed lengths (ARC: 100-165 tokens) a quarter of that work can be padding. Prefilling
rows sorted by length in a few groups, each padded only to its own longest row, removes most of
it; the price is smaller matrix products, which run below peak when they have few rows. That
price is modelled as a fixed ``overhead`` per group, in token positions: a product with ``M``
rows runs at about ``M / (M + overhead)`` of peak (measured on a 2-core CPU for SmolLM2
shapes: ``overhead`` about 60-130; GPUs need far larger ``M`` to saturate).

:func:`plan_buckets` picks contiguous groups of the length-sorted rows minimising
``sum(rows_g * max_len_g + overhead)`` exactly, by dynamic programming.
"""

from __future__ import annotations

from typing import Sequence


def plan_buckets(sorted_lengths: Sequence[int], overhead: int) -> list[tuple[int, int]]:
    """Split ascending ``sorted_lengths`` into ``[start, end)`` groups of least modelled cost.

    Args:
        sorted_lengths: prompt lengths in tokens, ascending.
        overhead: fixed cost of one extra group, in token positions (``>= 0``; a huge value
            yields one group).

    Returns:
        Contiguous, ordered ``(start, end)`` index ranges covering every row.
    """
    n = len(sorted_lengths)
    if overhead < 0:
        raise ValueError(f"overhead must be >= 0, got {overhead}")
    if any(a > b for a, b in zip(sorted_lengths, sorted_lengths[1:])):
        raise ValueError("sorted_lengths must be ascending")
    if n == 0:
        return []
    best = [0] + [None] * n  # best[j]: least cost of rows [0, j)
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        width = sorted_lengths[end - 1]
        for start in range(end):
            cost = best[start] + (end - start) * width + overhead
            if best[end] is None or cost < best[end]:
                best[end], cut[end] = cost, start
    groups = []
    end = n
    while end > 0:
        groups.append((cut[end], end))
        end = cut[end]
    return groups[::-1]
