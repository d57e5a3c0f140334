"""Prefill of new engine rows: a left-padded group in one pass, or a long prompt in chunks.

Both return the :class:`~drllm.models.decoding.DecodeState` of their rows (its
``next_tokens``: each row's first generated token, not yet emitted), which then joins the
running batch (:func:`drllm.engine.batch.merge_states`). A row that keeps the default path's
states hands its :class:`~drllm.engine.reuse.Capture`: the states entering every block over
its prompt are stored in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from drllm.engine.reuse import Capture
from drllm.models.decoding import CACHE_CHUNK, DecodeState
from drllm.models.kv import SlotKVCache


def prefill_group(ex: Any, ids: Sequence[Sequence[int]], paths: Sequence[Sequence[int]],
                  captures: Sequence[Optional[Capture]]) -> DecodeState:
    """One left-padded prefill pass of ``ids`` along ``paths``."""
    input_ids, mask = ex.left_pad(ids)
    width = input_ids.shape[1]
    lengths = [len(s) for s in ids]
    kept = [(j, c, lengths[j]) for j, c in enumerate(captures) if c is not None]

    def observe(block: int, hidden: torch.Tensor) -> None:
        for j, capture, n in kept:
            capture.prompt[block] = hidden[j, width - n:].clone()

    cache = SlotKVCache(capacity=width + CACHE_CHUNK, grow=CACHE_CHUNK)
    decisions = [list(p) for p in paths]
    hidden = ex.runner.run(
        ex.embed(input_ids), (mask.cumsum(1) - 1).clamp_(min=0), mask.bool(), decisions,
        all_valid=min(lengths) == width, cache=cache, observe=observe if kept else None,
    )
    valid = torch.zeros((len(ids), width + CACHE_CHUNK), dtype=torch.bool, device=ex.device)
    for j, n in enumerate(lengths):
        valid[j, width - n: width] = True
    return DecodeState(
        cache=cache, valid=valid, length=width, all_valid=min(lengths) == width,
        next_tokens=ex.head(hidden[:, -1:])[:, -1].float().argmax(-1),
        next_positions=torch.tensor(lengths, device=ex.device),
        decisions=decisions, rows=list(range(len(ids))),
    )


@dataclass(eq=False)
class ChunkedPrefill:
    """A long prompt prefilled one chunk per engine step through its own cache.

    Attributes:
        ids: the prompt; path: its decisions; capture: where its states go, or None.
        done: prompt tokens prefilled so far.
    """

    ids: tuple[int, ...]
    path: tuple[int, ...]
    capture: Optional[Capture] = None
    done: int = 0

    def __post_init__(self) -> None:
        self.cache = SlotKVCache(capacity=len(self.ids) + CACHE_CHUNK, grow=CACHE_CHUNK)

    def advance(self, ex: Any, chunk: int) -> tuple[int, Optional[DecodeState]]:
        """Prefill the next ``chunk`` tokens; the tokens fed, and the row's decode state once
        the whole prompt is in (else None)."""
        start, end = self.done, min(self.done + chunk, len(self.ids))
        capture = self.capture

        def observe(block: int, hidden: torch.Tensor) -> None:
            part = hidden[0].clone()
            prev = capture.prompt[block]  # type: ignore[union-attr]
            capture.prompt[block] = part if prev is None else torch.cat([prev, part])  # type: ignore[union-attr]

        hidden = ex.runner.run(
            ex.embed(torch.tensor([self.ids[start:end]], device=ex.device)),
            torch.arange(start, end, device=ex.device)[None],
            torch.ones((1, end), dtype=torch.bool, device=ex.device),
            [list(self.path)], all_valid=True, cache=self.cache,
            observe=observe if capture is not None else None,
        )
        self.done = end
        if end < len(self.ids):
            return end - start, None
        valid = torch.zeros((1, end + CACHE_CHUNK), dtype=torch.bool, device=ex.device)
        valid[:, :end] = True
        return end - start, DecodeState(
            cache=self.cache, valid=valid, length=end, all_valid=True,
            next_tokens=ex.head(hidden[:, -1:])[:, -1].float().argmax(-1),
            next_positions=torch.tensor([end], device=ex.device),
            decisions=[list(self.path)], rows=[0],
        )
