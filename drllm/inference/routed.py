"""Routed inference: a frozen LLM whose trained routers pick each row's layer path at prefill.

:class:`RoutedModel` drives the edited-path executor with a block hook: at block ``i`` of the
prefill the hook receives the hidden states entering block ``i`` (``[B, T, d]``) and the mask,
and :meth:`Routers.decide` returns each row's decision (0 skip, 1 execute, 2 repeat) from that
row's own prompt tokens (padding excluded). The decisions form the row's path, which every
generated token then reuses (one KV-cache slot per (block, pass), so cached decoding stays
exact). Rows of a batch decide independently.

Decisions follow :mod:`drllm.routers.decision`: logits adjusted by the checkpoint's logit
adjustment, the knob ``alpha``, the gate ``tau`` (by default the checkpoint's calibrated gate,
else the argmax; ``tau = 1`` is exactly the default path) and the search's path rules, enforced
block by block (at most 2 consecutive skips, an edit budget: by default the most edits any
training label has). Routers pool the tokens their checkpoint's pooling spec names (the whole
prompt, or the question without the chat template's shared prefix and suffix), exactly as the
feature pass did. The executor itself runs with permissive constraints unless given others.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

from drllm.paths import EXECUTE, LayerPath, PathConstraints
from drllm.routers.control import check_alpha
from drllm.routers.decision import (
    DecisionRule, PathState, RowRules, calibrated_probs, check_gate, gated_decisions,
)
from drllm.routers.features import left_pad, permissive_constraints
from drllm.routers.module import Routers
from drllm.routers.pooling import span_mask
from drllm.types import Generation

logger = logging.getLogger(__name__)

CALIBRATED = "calibrated"
"""``gate=CALIBRATED``: the checkpoint's calibrated gate (the argmax when it has none)."""


class RoutingHook:
    """The executor's prefill hook for one call: ``(block, hidden [B, T, d], mask [B, T]) ->
    decisions [B]``.

    The executor hands the rows over in the order given, in chunks (blocks ``0..L-1`` per
    chunk); the hook follows the chunks to pick each row's pooling span and keeps each row's
    path-rule state (:class:`~drllm.routers.decision.PathState`).
    """

    def __init__(self, routers: Routers, rule: DecisionRule,
                 spans: Optional[Sequence[tuple[int, int]]] = None) -> None:
        self.routers, self.rule, self.spans = routers, rule, spans
        self.num_layers = routers.num_layers
        self._cursor = 0
        self._chunk: Optional[Sequence[tuple[int, int]]] = None
        self._state: Optional[PathState] = None

    def __call__(self, block: int, hidden: torch.Tensor, mask: torch.Tensor) -> list[int]:
        rows = hidden.shape[0]
        if block == 0:
            self._state = PathState(rows, self.num_layers, self.rule.rules)
            if self.spans is not None:
                self._chunk = self.spans[self._cursor:self._cursor + rows]
                self._cursor += rows
        assert self._state is not None, "the hook starts at block 0"
        if self.rule.gate == 1.0:  # the default path: no router call at all
            return self._state.step(block, [EXECUTE] * rows)
        adjustment = self.routers.meta.logit_adjustment if self.rule.adjust else None
        with torch.no_grad():
            logits = self.routers.forward_hidden(block, hidden, span_mask(mask, self._chunk))
        wanted = gated_decisions(calibrated_probs(logits, adjustment), self.rule.alpha,
                                 self.rule.gate)
        return self._state.step(block, wanted.tolist())


class RoutedModel:
    """A frozen causal LM plus per-block routers that choose each row's path during prefill.

    Args:
        model: a frozen HF causal LM the executor can drive (eval mode).
        tokenizer: its tokenizer.
        routers: trained :class:`Routers` for this model (same ``L`` and ``d``).
        alpha: control knob in ``[-1, 1]`` (``< 0`` skips more, ``1/2`` is the default path,
            ``> 1/2`` repeats; :mod:`drllm.routers.control`).
        gate: ``tau`` in ``[0, 1]``, ``None`` (argmax) or :data:`CALIBRATED` (the checkpoint's
            calibrated gate, else the argmax).
        rules: path rules enforced while deciding (default: the search's -- at most 2
            consecutive skips -- and an edit budget of the checkpoint's ``max_label_edits``).
        adjust: apply the checkpoint's logit adjustment.
        constraints: path rules the executor checks on the chosen paths (default: any
            well-formed path); a routed path breaking them raises ``InvalidPathError``.

    Raises:
        ValueError: the routers do not fit the model (``L`` or ``d``), or ``alpha`` is out of
            range.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        routers: Routers,
        alpha: float = 0.0,
        *,
        gate: float | None | str = CALIBRATED,
        rules: RowRules | None = None,
        adjust: bool = True,
        constraints: PathConstraints | None = None,
    ) -> None:
        from drllm.models.executor import PathExecutor

        num_layers = int(model.config.num_hidden_layers)
        hidden_size = int(model.config.hidden_size)
        if (routers.num_layers, routers.hidden_size) != (num_layers, hidden_size):
            raise ValueError(
                f"routers are for L={routers.num_layers}, d={routers.hidden_size} but the model "
                f"has L={num_layers}, d={hidden_size}"
            )
        self.alpha = check_alpha(alpha)
        self.rules = rules or RowRules(max_edits=routers.meta.max_label_edits)
        self.adjust = bool(adjust)
        self.gate = self._gate(gate, routers)
        self.executor = PathExecutor(
            model, tokenizer, constraints or permissive_constraints(num_layers)
        )
        self.routers = routers.to(device=self.executor.device, dtype=torch.float32).eval()
        self.tokenizer = tokenizer
        self.num_layers = num_layers

    @classmethod
    def from_pretrained(
        cls,
        model_spec: Any,
        routers_dir: str | Path,
        alpha: float = 0.0,
        *,
        check_model_id: bool = True,
        gate: float | None | str = CALIBRATED,
        rules: RowRules | None = None,
        constraints: PathConstraints | None = None,
    ) -> "RoutedModel":
        """Load ``model_spec``'s model and the router checkpoint in ``routers_dir``.

        Args:
            model_spec: a :class:`~drllm.models.loading.ModelSpec`.
            routers_dir: a directory written by :meth:`Routers.save_pretrained`.
            alpha: control knob.
            check_model_id: also require the checkpoint's ``base_model_id`` to equal the
                loaded model's id (``L`` and ``d`` are always checked).

        Raises:
            drllm.routers.checkpoint.RouterCheckpointError: the checkpoint was trained for
                another model (its ``L``, ``d`` or model id differs), naming both values.
        """
        from drllm.models.loading import load_model

        loaded = load_model(model_spec)
        routers = Routers.from_pretrained(
            routers_dir,
            expected_num_layers=loaded.num_layers,
            expected_hidden_size=loaded.hidden_size,
            expected_model_id=loaded.model_id if check_model_id else None,
        )
        logger.info("routed model: %s with routers from %s (alpha=%g, gate=%s)",
                    loaded.model_id, routers_dir, alpha, gate)
        return cls(loaded.model, loaded.tokenizer, routers, alpha, gate=gate, rules=rules,
                   constraints=constraints)

    @staticmethod
    def _gate(gate: float | None | str, routers: Routers) -> float | None:
        if isinstance(gate, str):
            if gate != CALIBRATED:
                raise ValueError(f"gate must be a number in [0, 1], None or {CALIBRATED!r}, "
                                 f"got {gate!r}")
            if routers.meta.gate is None:
                logger.warning("the router checkpoint has no calibrated gate: deciding by argmax "
                               "(calibrate with python -m drllm.jobs.evaluate "
                               "evaluation.calibrate=true)")
            return routers.meta.gate
        return check_gate(gate)

    def rule(self, alpha: float | None = None, gate: float | None | str = CALIBRATED
             ) -> DecisionRule:
        """The decision rule of a call: this model's, with ``alpha`` / ``gate`` overridden
        (``gate=CALIBRATED`` keeps the model's gate)."""
        a = self.alpha if alpha is None else check_alpha(alpha)
        g = self.gate if gate == CALIBRATED else check_gate(gate)  # type: ignore[arg-type]
        return DecisionRule(alpha=a, gate=g, adjust=self.adjust, rules=self.rules)

    def block_hook(self, alpha: float | None = None, gate: float | None | str = CALIBRATED,
                   token_ids: Sequence[Sequence[int]] | None = None) -> RoutingHook:
        """The executor hook of one call over ``token_ids`` (the prompts, in the order the
        executor gets them; needed when the routers pool over the question only)."""
        spans = None
        if self.routers.meta.pooling.mode != "prompt":
            if token_ids is None:
                raise ValueError("these routers pool over the question: pass the prompts' "
                                 "token_ids to block_hook")
            spans = self.routers.meta.pooling.spans(token_ids)
        return RoutingHook(self.routers, self.rule(alpha, gate), spans)

    def route(
        self, prompts: Sequence[str] | Sequence[Sequence[int]], alpha: float | None = None,
        gate: float | None | str = CALIBRATED,
    ) -> list[LayerPath]:
        """Each prompt's routed path (one cacheless prefill, no generation).

        Args:
            prompts: rendered prompt texts (chat template applied) or token-id lists.
            alpha: overrides the model's control knob for this call.
        """
        ids = self._ids(prompts)
        input_ids, mask = left_pad(ids, self.executor.pad_token_id, self.executor.device)
        states = self.executor.prefill_states(input_ids, mask,
                                              block_hook=self.block_hook(alpha, gate, ids))
        return list(states.paths)

    def generate(
        self,
        prompts: Sequence[str] | Sequence[Sequence[int]],
        max_new_tokens: int = 64,
        *,
        stop_strings: Sequence[str] = (),
        alpha: float | None = None,
        gate: float | None | str = CALIBRATED,
        batch_size: int | None = None,
    ) -> list[Generation]:
        """Greedy generation along the routed paths.

        Args:
            prompts: rendered prompt texts (chat template applied) or token-id lists.
            max_new_tokens: token budget per row.
            stop_strings: a row stops once its text contains one (cut before it).
            alpha: overrides the model's control knob for this call.
            gate: overrides the model's gate for this call.
            batch_size: rows per forward batch (``None``: all at once).

        Returns:
            One :class:`~drllm.types.Generation` per prompt; ``layers_executed`` counts the
            routed path's blocks over every forward pass of the row.
        """
        ids = self._ids(prompts)
        return self.executor.generate(
            ids, None, max_new_tokens=max_new_tokens, stop_strings=stop_strings,
            block_hook=self.block_hook(alpha, gate, ids), batch_size=batch_size,
        )

    def _ids(self, prompts: Sequence[str] | Sequence[Sequence[int]]) -> list[list[int]]:
        if isinstance(prompts, str):
            raise TypeError("pass a sequence of prompts, not one string")
        if all(isinstance(p, str) for p in prompts):
            return self.executor.encode(list(prompts))  # type: ignore[arg-type]
        return [[int(t) for t in p] for p in prompts]
