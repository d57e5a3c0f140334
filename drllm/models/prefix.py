"""The default path's states per question, kept so that edited paths can start from them.

A search asks for the same question along dozens of paths, each one to three edits from the
default path (all-execute), whose output it already has. Blocks before a path's first edit see
exactly the default path's states, over the prompt and over every response token on which the
edited path agrees with the default one. A :class:`PrefixEntry` holds, for one (question,
prompt, stop rule), the default response and, at every fed position (prompt, then the response
but its last token), the states entering every block and every block's keys and values;
:func:`record_prefixes` builds entries with one teacher-forced forward pass over
prompt + default response. :class:`PrefixCache` keeps entries within a memory budget, least
recently used question out, and counts hits, misses and bytes.

Edited paths' prompt states (:class:`PathStates`): an edited path evaluated from an entry
leaves its states over the prompt behind, from the block where it left its base on. A later
path that agrees with it on more leading blocks than with the default path (typically a child
of that node: its parent plus one edit) starts there instead of at its own first edit. Each
entry keeps its most recently used paths (``paths_per_question``); the cache drops
path states (least recently used entry first) before it evicts a whole entry.

Sizes: ``fed`` positions cost ``L * fed * (d + 2 * kv_heads * head_dim)`` values; SmolLM2-135M
(L = 30, d = 576, 3 x 64 KV), fp32: about 115 KB per position, 19 MB for an ARC question
(150 prompt tokens, 16 new).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Hashable, Sequence

import torch

from drllm.models.decoding import Stepper
from drllm.models.drafts import accept
from drllm.models.kv import SlotKVCache

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrefixEntry:
    """The default path's generation of one prompt and its per-block states.

    Attributes:
        prompt: prompt token ids (``P``).
        tokens: the default response token ids (``R >= 1``), as generation returned them.
        reason: its finish reason.
        text: its final text.
        hidden: ``[L, fed, d]`` states entering each block at the fed positions
            (``fed = P + R - 1``: the prompt, then every response token but the last).
        keys, values: ``[L, kv_heads, fed, head_dim]`` each block's (pass 0) keys / values.
        responses: token ids of responses other paths produced on this prompt, most recent
            first (:meth:`remember`): drafts for later edited paths (:mod:`drllm.models.drafts`).
    """

    prompt: tuple[int, ...]
    tokens: tuple[int, ...]
    reason: str
    text: str
    hidden: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor
    responses: list = field(default_factory=list, compare=False, repr=False)
    paths: "OrderedDict[tuple[int, ...], PathStates]" = field(
        default_factory=OrderedDict, compare=False, repr=False)
    drafts_seen: list = field(default_factory=list, compare=False, repr=False)

    #: responses remembered per entry at most
    MAX_RESPONSES = 32
    #: verification outcomes (draft tokens accepted) remembered per entry
    MAX_DRAFTS_SEEN = 8

    def base_for(self, path: Sequence[int]) -> tuple["PathStates | None", int]:
        """The stored edited path sharing the most leading decisions with ``path`` (more than
        its first edit, fewer than all), and that count; ``(None, first edit)`` if none."""
        first = next(i for i, d in enumerate(path) if d != 1)
        best, start = None, first
        path = tuple(path)
        for key, states in self.paths.items():
            n = accept(key, path)
            if start < n < len(path):
                best, start = states, n
        if best is not None:
            self.paths.move_to_end(best.path)
        return best, start

    def add_path(self, states: "PathStates", limit: int = 8) -> None:
        """Keep an edited path's prompt states (least recently used out beyond ``limit``)."""
        self.paths[states.path] = states
        self.paths.move_to_end(states.path)
        while len(self.paths) > limit:
            self.paths.popitem(last=False)

    def note_draft(self, accepted: int) -> None:
        """Record how many draft tokens a verification accepted (adaptive draft length)."""
        self.drafts_seen.append(int(accepted))
        del self.drafts_seen[: -self.MAX_DRAFTS_SEEN]

    def draft_length(self) -> int:
        """Draft tokens to verify next: the whole default response (but its last token) until
        verifications show otherwise, then 4 more than the most any recent one accepted (a
        draft rejected at its first token only costs compute in the verification pass)."""
        whole = len(self.tokens) - 1
        if len(self.drafts_seen) < 2:
            return whole
        return min(whole, max(self.drafts_seen) + 4)

    def drafting_pays(self) -> bool:
        """Whether verifications of the default response here accept tokens (>= 2 in the
        best recent one, or too few seen to tell); else a deeper base beats the draft."""
        return len(self.drafts_seen) < 2 or max(self.drafts_seen) >= 2

    def remember(self, tokens: Sequence[int]) -> None:
        """Add a response of some path on this prompt to the draft pool (most recent first)."""
        tokens = tuple(tokens)
        if tokens in self.responses or tokens == self.tokens:
            return
        self.responses.insert(0, tokens)
        del self.responses[self.MAX_RESPONSES:]

    def drafts(self) -> list:
        """The draft pool: remembered responses, then the default response."""
        return [*self.responses, self.tokens]

    @property
    def fed(self) -> int:
        return self.hidden.shape[1]

    @property
    def nbytes(self) -> int:
        """Bytes held: the default states and every kept path's own states (tensors shared
        between paths counted once)."""
        tensors = [self.hidden, self.keys, self.values]
        for states in self.paths.values():
            tensors.extend(states.tensors())
        return _storage_bytes(tensors)

    def drop_oldest_path(self) -> bool:
        """Drop the least recently used path states; False if there are none."""
        if not self.paths:
            return False
        self.paths.popitem(last=False)
        return True


def _storage_bytes(tensors: Sequence[torch.Tensor]) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


@dataclass(eq=False)
class PathStates:
    """An edited path's states over the prompt, for later paths that share its leading blocks.

    Attributes:
        path: its ``L`` decisions.
        start: the first block it computed itself (blocks before it are its base's, the
            default path's or another stored path's: it agrees with that base on them).
        hidden: per block ``i``, ``[P, d]`` states entering ``i`` along ``path``.
        kv: per step ``(block, pass)`` the path runs, ``(keys, values)`` over the prompt,
            ``[kv_heads, P, head_dim]`` each.

    Blocks before ``start`` hold the base's tensors themselves (shared, not copied).
    """

    path: tuple[int, ...]
    start: int
    hidden: list
    kv: dict

    def tensors(self) -> list[torch.Tensor]:
        out = list(self.hidden)
        for k, v in self.kv.values():
            out.extend((k, v))
        return out


@torch.inference_mode()
def record_prefixes(
    ex: Stepper, prompts: Sequence[Sequence[int]], tokens: Sequence[Sequence[int]],
    reasons: Sequence[str], texts: Sequence[str],
) -> list[PrefixEntry]:
    """Entries for default-path generations: one teacher-forced pass over prompt + response.

    Args:
        prompts: prompt ids per row; tokens, reasons, texts: the default generation of each.
    """
    fed = [list(p) + list(t[:-1]) for p, t in zip(prompts, tokens)]
    input_ids, mask = ex.left_pad(fed)
    width = input_ids.shape[1]
    num_layers = ex.num_layers
    states: list[torch.Tensor] = []

    def hook(block: int, hidden: torch.Tensor, _mask: torch.Tensor) -> None:
        states.append(hidden)

    cache = SlotKVCache(capacity=width)
    lengths = [len(f) for f in fed]
    ex.runner.run(
        ex.embed(input_ids), (mask.cumsum(1) - 1).clamp_(min=0), mask.bool(),
        [[1] * num_layers for _ in fed], all_valid=min(lengths) == width, cache=cache,
        hook=hook, hook_mask=mask,
    )
    stacked = torch.stack(states)  # [L, B, W, d]
    slot_keys = [cache.slot_tensors(i, 0) for i in range(num_layers)]
    entries = []
    for row, n in enumerate(lengths):
        cols = slice(width - n, width)
        entries.append(PrefixEntry(
            prompt=tuple(prompts[row]), tokens=tuple(tokens[row]), reason=reasons[row],
            text=texts[row], hidden=stacked[:, row, cols].contiguous(),
            keys=torch.stack([k[row, :, cols] for _, k, _ in slot_keys]),
            values=torch.stack([v[row, :, cols] for _, _, v in slot_keys]),
        ))
    return entries


class PrefixCache:
    """Prefix entries by key within ``max_bytes``, least recently used out.

    Attributes:
        hits, misses: lookups that found / did not find their key.
        evictions: entries dropped to stay within the budget.
        rejected: entries larger than the whole budget (not stored).
        path_drops: edited paths' states dropped to stay within the budget.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[Hashable, PrefixEntry] = OrderedDict()
        self._sizes: dict[Hashable, int] = {}
        self.bytes = 0
        self.peak_bytes = 0
        self.hits = self.misses = self.evictions = self.rejected = self.path_drops = 0

    def get(self, key: Hashable) -> PrefixEntry | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def put(self, key: Hashable, entry: PrefixEntry) -> bool:
        """Store ``entry`` (evicting old ones); False if it alone exceeds the budget."""
        size = entry.nbytes
        if size > self.max_bytes:
            self.rejected += 1
            return False
        if key in self._entries:
            self._remove(key)
        self._entries[key] = entry
        self._sizes[key] = size
        self.bytes += size
        self._fit(key)
        return True

    def refit(self, key: Hashable) -> None:
        """Re-account the entry at ``key`` after it grew (path states added): path states of
        the least recently used entries are dropped first, then whole entries (never
        ``key``'s default states), until the cache is within its budget again."""
        if key not in self._entries:
            return
        self._resize(key)
        self._fit(key)

    def _resize(self, key: Hashable) -> None:
        size = self._entries[key].nbytes
        self.bytes += size - self._sizes[key]
        self._sizes[key] = size

    def _remove(self, key: Hashable) -> None:
        self._entries.pop(key)
        self.bytes -= self._sizes.pop(key)

    def _fit(self, key: Hashable) -> None:
        for k in list(self._entries):
            while self.bytes > self.max_bytes and self._entries[k].drop_oldest_path():
                self.path_drops += 1
                self._resize(k)
            if self.bytes <= self.max_bytes:
                break
        while self.bytes > self.max_bytes and len(self._entries) > 1:
            oldest = next(k for k in self._entries if k != key)
            self._remove(oldest)
            self.evictions += 1
        self.peak_bytes = max(self.peak_bytes, self.bytes)

    def clear(self) -> None:
        self._entries.clear()
        self._sizes.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict[str, int]:
        """Hits, misses, evictions, entries, kept path states, bytes now and at peak, and the
        budget."""
        return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                "rejected": self.rejected, "path_drops": self.path_drops,
                "entries": len(self._entries),
                "paths": sum(len(e.paths) for e in self._entries.values()),
                "bytes": self.bytes, "peak_bytes": self.peak_bytes, "max_bytes": self.max_bytes}
