"""One forward call through the stock decoder blocks along per-row layer paths.

:class:`BlockRunner` drives the blocks of a causal LM for a batch whose rows carry their own
decisions (0 skip, 1 execute, 2 repeat). At block ``i`` the rows whose decision is ``>= 1`` run
pass 0 together as one micro-batch; the rows that repeat then run pass 1 together on the output
of pass 0; skipped rows pass through unchanged. When every row runs a step the whole batch goes
through with no gather or scatter; when no row runs it, the layer is not called.

With a :class:`~drllm.models.kv.SlotKVCache`, step ``(i, pass)`` writes to its own slot, holding
only its micro-batch's rows. Rotary ``(cos, sin)``, positions and masks are computed once per
forward call and gathered once per distinct micro-batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from drllm.models.kv import SlotKVCache
from drllm.models.masks import build_mask, needs_window
from drllm.paths import InvalidPathError

logger = logging.getLogger(__name__)

#: ``hook(block, hidden [B, T, d], attention_mask [B, T]) -> decisions for block (len B) | None``.
#: Sees the states entering ``block`` before its decision; returning decisions fixes them for
#: the block (routed inference), returning None keeps the given path (feature extraction).
BlockHook = Callable[[int, torch.Tensor, torch.Tensor], "Sequence[int] | torch.Tensor | None"]


@dataclass(frozen=True)
class Step:
    """One (block, pass) to run in a forward call.

    Attributes:
        block: block index ``i``.
        pass_index: 0 for the first run of the block, 1 for a repeat's second run.
        rows: ascending batch rows of the micro-batch, or None for the whole batch.
        index: ``rows`` as a long tensor on the model's device (None for the whole batch).
        select: dense steps only: ``[B, 1, 1]`` bool, the rows whose output is kept (the
            whole batch runs the block, the others keep their input), else None.
    """

    block: int
    pass_index: int
    rows: tuple[int, ...] | None
    index: torch.Tensor | None
    select: torch.Tensor | None = None


def block_steps(
    block: int, decisions: Sequence[Sequence[int]], device: torch.device,
    index_cache: dict[tuple[int, ...], torch.Tensor], dense: bool = False,
) -> list[Step]:
    """The steps of ``block`` for rows with the given decisions (``[B][L]``), pass 0 then pass 1.

    ``dense``: a step that not every row runs still runs the whole batch and keeps the output
    of its rows only (:attr:`Step.select`): static shapes (CUDA graphs), slots hold every row.
    """
    batch = len(decisions)
    steps = []
    for pass_index in (0, 1):
        rows = tuple(b for b in range(batch) if decisions[b][block] > pass_index)
        if not rows:
            continue
        if len(rows) == batch:
            steps.append(Step(block, pass_index, None, None))
            continue
        if dense:
            select = torch.zeros((batch, 1, 1), dtype=torch.bool, device=device)
            select[list(rows)] = True
            steps.append(Step(block, pass_index, None, None, select))
            continue
        index = index_cache.get(rows)
        if index is None:
            index = index_cache[rows] = torch.tensor(rows, dtype=torch.long, device=device)
        steps.append(Step(block, pass_index, rows, index))
    return steps


def plan_steps(
    decisions: Sequence[Sequence[int]], num_layers: int, device: torch.device,
    dense: bool = False,
) -> list[Step]:
    """Every step of a forward call for fixed decisions ``[B][L]``, in execution order."""
    index_cache: dict[tuple[int, ...], torch.Tensor] = {}
    steps: list[Step] = []
    for block in range(num_layers):
        steps.extend(block_steps(block, decisions, device, index_cache, dense))
    return steps


#: ``inject(block, hidden [B, q, d]) -> hidden``: called before ``block`` runs; may return new
#: states entering it (rows resuming from a stored prefix start there).
Inject = Callable[[int, torch.Tensor], torch.Tensor]


def hook_decisions(values: object, block: int, batch: int) -> list[int]:
    """Check a block hook's return value: ``batch`` decisions in {0, 1, 2}."""
    if isinstance(values, torch.Tensor):
        values = values.reshape(-1).tolist()
    values = [int(v) for v in values]  # type: ignore[union-attr]
    if len(values) != batch:
        raise InvalidPathError(
            f"block_hook returned {len(values)} decisions for block {block}; expected one per "
            f"row ({batch})"
        )
    for row, d in enumerate(values):
        if d not in (0, 1, 2):
            raise InvalidPathError(
                f"block_hook: row {row}, block {block}: decision {d} is not 0 (skip), 1 (execute) "
                f"or 2 (repeat)"
            )
    return values


class _CallInputs:
    """Rotary, positions and masks of one forward call, gathered per micro-batch on demand."""

    def __init__(
        self, runner: "BlockRunner", hidden: torch.Tensor, positions: torch.Tensor,
        valid: torch.Tensor, all_valid: bool,
    ) -> None:
        self.runner = runner
        self.q_length = hidden.shape[1]
        self.valid = valid
        self.all_valid = all_valid
        self.positions = positions
        self.cos, self.sin = runner.rotary_emb(hidden, positions)
        self.all_rows = torch.arange(hidden.shape[0], device=hidden.device)
        self._masks: dict[int | None, torch.Tensor | None] = {}
        self._groups: dict[tuple, tuple] = {}

    def _mask(self, window: int | None) -> torch.Tensor | None:
        if window not in self._masks:
            self._masks[window] = build_mask(
                self.valid, self.q_length, window=window, dtype=self.cos.dtype,
                attn_implementation=self.runner.attn_implementation, all_valid=self.all_valid,
            )
        return self._masks[window]

    def get(self, step: Step, window: int | None) -> tuple:
        """``(mask, cos, sin, positions)`` for the rows of ``step``."""
        if not needs_window(window, self.valid.shape[1]):
            window = None
        key = (step.rows, window)
        found = self._groups.get(key)
        if found is not None:
            return found
        mask = self._mask(window)
        if step.index is None:
            found = (mask, self.cos, self.sin, self.positions)
        else:
            idx = step.index
            found = (
                None if mask is None else mask.index_select(0, idx),
                self.cos.index_select(0, idx),
                self.sin.index_select(0, idx),
                self.positions.index_select(0, idx),
            )
        self._groups[key] = found
        return found


class BlockRunner:
    """Calls a model's stock decoder layers along per-row decisions.

    Args:
        layers: the ``L`` decoder blocks.
        rotary_emb: ``(x, position_ids) -> (cos, sin)``.
        windows: per-block sliding window (None = full attention).
        cache_kwarg: the layers' KV-cache keyword.
        attn_implementation: ``"sdpa"`` or ``"eager"``.
    """

    def __init__(
        self, layers: Sequence[nn.Module], rotary_emb: nn.Module, windows: Sequence[int | None],
        cache_kwarg: str, attn_implementation: str,
    ) -> None:
        self.layers = list(layers)
        self.rotary_emb = rotary_emb
        self.windows = list(windows)
        self.cache_kwarg = cache_kwarg
        self.attn_implementation = attn_implementation

    def run(
        self,
        hidden: torch.Tensor,
        positions: torch.Tensor,
        valid: torch.Tensor,
        decisions: list[list[int]],
        *,
        all_valid: bool,
        cache: SlotKVCache | None = None,
        plan: Sequence[Step] | None = None,
        hook: BlockHook | None = None,
        hook_mask: torch.Tensor | None = None,
        inject: Inject | None = None,
        dense: bool = False,
        observe: Callable[[int, torch.Tensor], None] | None = None,
    ) -> torch.Tensor:
        """Run every block on ``hidden`` along ``decisions``.

        Args:
            hidden: ``[B, q, d]`` states entering block 0 (embeddings of the new tokens).
            positions: ``[B, q]`` rotary position of each new token (0 at a row's first real one).
            valid: ``[B, K]`` bool over every key column (cached ones, then the ``q`` new ones).
            decisions: ``[B][L]`` decisions; a hook's return value overwrites column ``i``.
            all_valid: ``valid`` is all True (no padding anywhere).
            cache: slot cache to read and extend, or None for a cacheless full forward.
            plan: precomputed steps for fixed decisions (decode); built block by block if None.
            hook: per-block prefill hook (see :data:`BlockHook`); needs ``plan is None``.
            hook_mask: ``[B, q]`` attention mask handed to the hook.
            inject: replaces the states entering a block (see :data:`Inject`); needs
                ``plan is None``.
            dense: whole-batch steps with per-row selection (see :func:`block_steps`).
            observe: ``observe(block, hidden [B, q, d])`` sees the states entering each block
                that some row runs (after ``inject``; with or without a plan): the engine
                keeps the default path's states during its own generation. Read only.

        Returns:
            ``[B, q, d]`` hidden states after the last block (before the final norm).
        """
        assert (hook is None and inject is None) or plan is None, "per-block callbacks; no plan"
        inputs = _CallInputs(self, hidden, positions, valid, all_valid)
        if plan is not None:
            for step in plan:
                if observe is not None and step.pass_index == 0:
                    observe(step.block, hidden)
                hidden = self._run_step(step, hidden, inputs, cache)
            return hidden
        batch = hidden.shape[0]
        index_cache: dict[tuple[int, ...], torch.Tensor] = {}
        for block in range(len(self.layers)):
            if inject is not None:
                hidden = inject(block, hidden)
            if hook is not None:
                chosen = hook(block, hidden, hook_mask)
                if chosen is not None:
                    for row, d in enumerate(hook_decisions(chosen, block, batch)):
                        decisions[row][block] = d
            for step in block_steps(block, decisions, hidden.device, index_cache, dense):
                if observe is not None and step.pass_index == 0:
                    observe(block, hidden)
                hidden = self._run_step(step, hidden, inputs, cache)
        return hidden

    def _run_step(
        self, step: Step, hidden: torch.Tensor, inputs: _CallInputs, cache: SlotKVCache | None
    ) -> torch.Tensor:
        mask, cos, sin, positions = inputs.get(step, self.windows[step.block])
        if cache is not None:
            rows = step.index if step.index is not None else inputs.all_rows
            cache.activate(step.block, step.pass_index, rows)
        x = hidden if step.index is None else hidden.index_select(0, step.index)
        out = self.layers[step.block](
            x,
            attention_mask=mask,
            position_ids=positions,
            position_embeddings=(cos, sin),
            use_cache=cache is not None,
            **{self.cache_kwarg: cache},
        )
        if isinstance(out, tuple):  # layers of older transformers releases return a tuple
            out = out[0]
        if step.select is not None:
            return torch.where(step.select, out, hidden)
        if step.index is None:
            return out
        return hidden.index_copy(0, step.index, out)
