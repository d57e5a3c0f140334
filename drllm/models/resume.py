"""Generation along edited paths that starts from the default path's stored states.

For each row: a prompt, its path, and the :class:`~drllm.models.prefix.PrefixEntry` of the
default path on that prompt. Let ``f`` be the row's first edited block (the first decision
that is not 1). Blocks ``0..f-1`` see exactly the default path's states, so:

1. **Shared prefix.** The row's verification pass starts at block ``f``: the states entering
   ``f`` are injected from the entry, and the keys / values of blocks ``< f`` are the entry's.
2. **Draft verification** (self-speculative, as LayerSkip). The pass is teacher-forced over
   the prompt plus the first ``m`` tokens of the default response (the draft) in one chunk.
   Its greedy tokens ``g_1..g_{m+1}`` are accepted up to the first disagreement with the
   draft (``g_j = d_j`` for ``j <= a``) plus the first token after it: those are exactly the
   tokens plain greedy decoding would emit, since each ``g_j`` is the greedy token after a
   prefix the row itself produced. The stop rule is applied to them token by token.
3. Rows that have not stopped continue decoding (:func:`decode`) from ``g_{a+1}``, with
   drafts from the responses other paths gave on this prompt when ``pool`` is set
   (:mod:`drllm.models.drafts`, verified the same way); the cache keeps the positions of the prompt and the accepted draft
   (``P + a``), the rest of the draft is masked out (never attended to).

Everything is batched: rows differ in prompt, draft length, first edit and path; the
verification pass runs in length buckets (:mod:`drllm.models.buckets`) as a plain prefill does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import torch

from drllm.models.buckets import plan_buckets
from drllm.models.decoding import CACHE_CHUNK, DecodeState, Stepper, decode
from drllm.models.drafts import accept, pool_proposer
from drllm.models.kv import SlotKVCache
from drllm.models.prefix import PathStates, PrefixEntry
from drllm.models.stopping import FinalFn, StopRule

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResumeRow:
    """One row to generate from a stored default prefix.

    Attributes:
        path: its ``L`` decisions (not all 1).
        entry: the default path's entry for the row's prompt (and stop rule).
        draft: draft tokens verified (``0 <= draft <= R - 1``; 0: prefix reuse only).
        final: the row's grader predicate, or None.
        pool: after the first disagreement, draft from the responses other paths produced
            on this prompt (:meth:`PrefixEntry.drafts`, :mod:`drllm.models.drafts`).
        base: an edited path's stored prompt states to start from instead of the default
            path's (:meth:`PrefixEntry.base_for`); then ``draft`` must be 0.
        start: with ``base``, the first block where ``path`` differs from ``base.path``.
    """

    path: tuple[int, ...]
    entry: PrefixEntry
    draft: int
    final: FinalFn | None = None
    pool: bool = False
    base: PathStates | None = None
    start: int | None = None

    def __post_init__(self) -> None:
        if self.base is not None:
            if self.draft:
                raise ValueError("a row resuming from an edited path's states verifies no draft")
            if not (self.first_edit < self.start < len(self.path)) or (
                    tuple(self.base.path[: self.start]) != tuple(self.path[: self.start])):
                raise ValueError(f"path {self.path} does not share its first {self.start} "
                                 f"blocks with base {self.base.path}")

    @property
    def first_edit(self) -> int:
        return next(i for i, d in enumerate(self.path) if d != 1)

    @property
    def begin(self) -> int:
        """The first block the row computes: where it leaves its base."""
        return self.first_edit if self.base is None else self.start

    def states(self, block: int, n: int) -> torch.Tensor:
        """``[n, d]`` states entering ``block`` (``<= begin``) over the first ``n`` fed positions."""
        if self.base is None:
            return self.entry.hidden[block, :n]
        return self.base.hidden[block][:n]

    def kv(self, block: int, pass_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of step ``(block, pass)`` (``block < begin``) over the fed positions."""
        if self.base is None:
            fed = len(self.fed)
            return self.entry.keys[block][:, :fed], self.entry.values[block][:, :fed]
        return self.base.kv[(block, pass_index)]

    @property
    def fed(self) -> list[int]:
        return list(self.entry.prompt) + list(self.entry.tokens[: self.draft])


def _injector(rows: Sequence[ResumeRow], width: int, device: torch.device):
    """Replace the states entering each row's first edited block by the entry's."""
    by_block: dict[int, list[int]] = {}
    for r, row in enumerate(rows):
        if row.begin > 0:
            by_block.setdefault(row.begin, []).append(r)

    def inject(block: int, hidden: torch.Tensor) -> torch.Tensor:
        members = by_block.get(block)
        if not members:
            return hidden
        hidden = hidden.clone()
        for r in members:
            n = len(rows[r].fed)
            hidden[r, width - n:] = rows[r].states(block, n).to(hidden.dtype)
        return hidden

    return inject


@dataclass(frozen=True)
class _Chunk:
    """One length bucket's verification pass: its cache, width and rows (resume indices)."""

    cache: SlotKVCache
    width: int
    rows: tuple[int, ...]


def _slot_index(cache: SlotKVCache, key: tuple[int, int]) -> dict[int, int]:
    """Batch row -> index within slot ``key`` of ``cache`` (empty if the slot does not exist)."""
    slot_rows = cache.slot_rows(*key)
    return {} if slot_rows is None else {int(b): i for i, b in enumerate(slot_rows.tolist())}


def _path_states(
    row: ResumeRow, captured: dict[int, torch.Tensor], cache: SlotKVCache, j: int, offset: int,
    num_layers: int,
) -> PathStates:
    """The row's prompt states: its base's up to its first computed block, then its own
    (captured entering each later block, keys / values from the verification cache)."""
    p = len(row.entry.prompt)
    hidden = [row.states(b, p) if b <= row.begin else captured[b] for b in range(num_layers)]
    kv = {}
    for block in range(num_layers):
        for pass_index in (0, 1):
            if row.path[block] <= pass_index:
                continue
            if block < row.begin:
                k, v = row.kv(block, pass_index)
                kv[(block, pass_index)] = (k[:, :p], v[:, :p])
                continue
            i = _slot_index(cache, (block, pass_index))[j]
            _, keys, values = cache.slot_tensors(block, pass_index)
            kv[(block, pass_index)] = (keys[i, :, offset: offset + p].clone(),
                                       values[i, :, offset: offset + p].clone())
    return PathStates(tuple(row.path), row.begin, hidden, kv)


def _verify_group(
    ex: Stepper, rows: Sequence[ResumeRow], members: Sequence[int], dense: bool,
    keep_states: bool = False,
) -> tuple[_Chunk, list[list[int]], list[PathStates | None]]:
    """Teacher-forced pass of rows ``members`` (one bucket): its chunk, greedy tokens and
    (``keep_states``) each row's prompt states."""
    group = [rows[r] for r in members]
    fed = [row.fed for row in group]
    input_ids, mask = ex.left_pad(fed)
    width = input_ids.shape[1]
    decisions = [[0] * row.begin + list(row.path[row.begin:]) for row in group]
    offsets = [width - len(f) for f in fed]
    captured: list[dict[int, torch.Tensor]] = [{} for _ in group]

    def capture(block: int, hidden: torch.Tensor, _mask: torch.Tensor) -> None:
        for j, row in enumerate(group):
            if block > row.begin:
                p = len(row.entry.prompt)
                captured[j][block] = hidden[j, offsets[j]: offsets[j] + p].clone()

    cache = SlotKVCache(capacity=width)
    hidden = ex.runner.run(
        ex.embed(input_ids), (mask.cumsum(1) - 1).clamp_(min=0), mask.bool(), decisions,
        all_valid=min(map(len, fed)) == width, cache=cache,
        inject=_injector(group, width, ex.device), dense=dense,
        hook=capture if keep_states else None, hook_mask=mask,
    )
    picked = torch.cat([hidden[j, width - row.draft - 1:] for j, row in enumerate(group)])
    greedy = ex.head(picked[None])[0].float().argmax(-1).tolist()
    out, start = [], 0
    for row in group:
        out.append(greedy[start: start + row.draft + 1])
        start += row.draft + 1
    states: list[PathStates | None] = [None] * len(group)
    if keep_states:
        states = [_path_states(row, captured[j], cache, j, offsets[j], ex.num_layers)
                  for j, row in enumerate(group)]
    return _Chunk(cache, width, tuple(members)), out, states


def _verify(
    ex: Stepper, rows: Sequence[ResumeRow], dense: bool, keep_states: bool = False,
) -> tuple[list[_Chunk], list[list[int]], list[PathStates | None]]:
    """The verification passes, rows sorted by length in buckets (:func:`plan_buckets`):
    the chunks, the greedy tokens ``g_1..g_{m+1}`` and the prompt states of every row."""
    order = sorted(range(len(rows)), key=lambda r: len(rows[r].fed))
    groups = plan_buckets([len(rows[r].fed) for r in order], ex.bucket_overhead_tokens)
    chunks, greedy = [], [None] * len(rows)
    states: list[PathStates | None] = [None] * len(rows)
    for start, end in groups:
        chunk, tokens, kept = _verify_group(ex, rows, order[start:end], dense, keep_states)
        chunks.append(chunk)
        for r, t, st in zip(chunk.rows, tokens, kept):
            greedy[r], states[r] = t, st
    return chunks, greedy, states  # type: ignore[return-value]


def _accepted(greedy: list[int], row: ResumeRow) -> list[int]:
    """``g_1..g_{a+1}``: the greedy tokens up to and including the first disagreement."""
    return greedy[: accept(greedy, row.entry.tokens[: row.draft]) + 1]


def _merged_cache(
    rows: Sequence[ResumeRow], keep: Sequence[int], chunks: Sequence[_Chunk], width: int,
    capacity: int, num_layers: int, dense: bool,
) -> SlotKVCache:
    """The decode cache of the continuing rows ``keep``: blocks before each row's first edit
    from its entry, the others from its verification chunk, right-aligned to ``width``."""
    where = {r: (c, j) for c, chunk in enumerate(chunks) for j, r in enumerate(chunk.rows)}
    batch_row = {r: b for b, r in enumerate(keep)}
    local: dict[tuple[int, int, int], dict[int, int]] = {}  # (chunk, block, pass) -> row -> i

    def chunk_row(c: int, key: tuple[int, int], j: int) -> int | None:
        found = local.get((c, *key))
        if found is None:
            found = local[(c, *key)] = _slot_index(chunks[c].cache, key)
        return found.get(j)

    slots = {}
    for block in range(num_layers):
        for pass_index in (0, 1):
            key = (block, pass_index)
            members = [r for r in keep if dense or rows[r].path[block] > pass_index]
            if not any(rows[r].path[block] > pass_index for r in members):
                continue
            keys = values = None
            for n, r in enumerate(members):
                row = rows[r]
                c, j = where[r]
                i = None if block < row.begin else chunk_row(c, key, j)
                if block < row.begin:
                    if row.path[block] <= pass_index:  # dense: not run by this row
                        continue
                    k, v = row.kv(block, pass_index)
                    cols = slice(width - len(row.fed), width)
                elif i is not None:
                    _, ck, cv = chunks[c].cache.slot_tensors(*key)
                    k, v = ck[i], cv[i]
                    cols = slice(width - chunks[c].width, width)
                else:  # dense: a row that does not run this step keeps zeros here
                    assert dense, (key, r)
                    continue
                if keys is None:
                    keys = k.new_zeros((len(members), k.shape[0], capacity, k.shape[-1]))
                    values = v.new_zeros((len(members), v.shape[0], capacity, v.shape[-1]))
                keys[n, :, cols] = k
                values[n, :, cols] = v
            index = torch.tensor([batch_row[r] for r in members], dtype=torch.long,
                                 device=keys.device)
            slots[key] = (index, keys, values)
    return SlotKVCache.from_slots(slots, length=width, grow=CACHE_CHUNK)


@dataclass
class Resumed:
    """Rows after their verification pass (:func:`resume_start`).

    Attributes:
        tokens: per row, the tokens emitted so far (cut at a stop).
        reasons: per row, its finish reason, or None if it continues.
        states: per row, its prompt states (``keep_states``) or None.
        keep: the rows that continue, in the order of ``state``'s batch rows.
        state: the decode state of the ``keep`` rows (None if none continues): its
            ``next_tokens`` are each row's last emitted token, not yet fed.
    """

    tokens: list[list[int]]
    reasons: list[str | None]
    states: list[PathStates | None]
    keep: list[int]
    state: DecodeState | None


@torch.inference_mode()
def resume_start(
    ex: Stepper, rows: Sequence[ResumeRow], rules: Sequence[StopRule], *, dense: bool = False,
    keep_states: bool = False,
) -> Resumed:
    """The verification pass of every row from its stored prefix, its accepted tokens (each
    checked with the row's stop rule) and the decode state of the rows that continue."""
    chunks, greedy, states = _verify(ex, rows, dense, keep_states)
    width = max(chunk.width for chunk in chunks)
    tokens: list[list[int]] = []
    reasons: list[str | None] = []
    keep = []
    for r, (row, rule) in enumerate(zip(rows, rules, strict=True)):
        emitted = _accepted(greedy[r], row)
        stop, reason = rule.first_stop(emitted, final=row.final)
        tokens.append(emitted[:stop])
        reasons.append(reason)
        if reason is None:
            keep.append(r)
    state = None
    if keep:
        room = max(rules[r].max_new_tokens - len(tokens[r]) for r in keep) + 1
        state = _decode_state(ex, rows, keep, tokens, chunks, width, room, dense)
    return Resumed(tokens, reasons, states, keep, state)


def _decode_state(
    ex: Stepper, rows: Sequence[ResumeRow], keep: list[int], tokens: list, chunks: Sequence[_Chunk],
    width: int, room: int, dense: bool,
) -> DecodeState:
    """Decode state of the rows ``keep`` after their verified tokens."""
    capacity = width + min(room, CACHE_CHUNK)
    cache = _merged_cache(rows, keep, chunks, width, capacity, ex.num_layers, dense)
    valid = torch.zeros((len(keep), width + room), dtype=torch.bool, device=ex.device)
    positions = []
    for j, r in enumerate(keep):
        start = width - len(rows[r].fed)
        filled = len(rows[r].entry.prompt) + len(tokens[r]) - 1  # prompt + accepted draft
        valid[j, start: start + filled] = True
        positions.append(filled)
    return DecodeState(
        cache=cache, valid=valid, length=width, all_valid=False,
        next_tokens=torch.tensor([tokens[r][-1] for r in keep], device=ex.device),
        next_positions=torch.tensor(positions, device=ex.device),
        decisions=[list(rows[r].path) for r in keep], rows=list(range(len(keep))),
    )


@torch.inference_mode()
def generate_resumed(
    ex: Stepper, rows: Sequence[ResumeRow], rule: StopRule, *, dense: bool = False,
    compact_fraction: float | None = None, keep_states: bool = False,
) -> tuple[list[list[int]], list[str], list[PathStates | None]]:
    """Greedy generation of every row from its stored prefix; per row its tokens, finish
    reason and (``keep_states``) prompt states, for later paths that share its leading
    blocks (:class:`~drllm.models.prefix.PathStates`)."""
    if not rows:
        return [], [], []
    started = resume_start(ex, rows, [rule] * len(rows), dense=dense, keep_states=keep_states)
    tokens, reasons, keep = started.tokens, started.reasons, started.keep
    if keep:
        extra = {} if compact_fraction is None else {"compact_fraction": compact_fraction}
        proposers = [pool_proposer(rows[r].entry.drafts()) if rows[r].pool else None
                     for r in keep]
        out, why = decode(ex, started.state, rule, finals=[rows[r].final for r in keep],
                          initial=[tokens[r][:-1] for r in keep], dense=dense,
                          proposers=proposers, **extra)
        for j, r in enumerate(keep):
            tokens[r], reasons[r] = out[j], why[j]
    return tokens, reasons, started.states  # type: ignore[return-value]
