"""Routed inference: a frozen LLM whose trained routers pick each row's layer path at prefill.

:class:`RoutedModel` drives the edited-path executor with a block hook: at block ``i`` of the
prefill the hook receives the hidden states entering block ``i`` (``[B, T, d]``) and the mask,
and :meth:`Routers.decide` returns each row's decision (0 skip, 1 execute, 2 repeat) from that
row's own prompt tokens (padding excluded). The decisions form the row's path, which every
generated token then reuses (one KV-cache slot per (block, pass), so cached decoding stays
exact). Rows of a batch decide independently.

Routers may choose any path (the control knob ``alpha = -1`` skips every block), so the
executor runs with permissive constraints unless given others.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from drllm.paths import LayerPath, PathConstraints
from drllm.routers.control import check_alpha
from drllm.routers.features import left_pad, permissive_constraints
from drllm.routers.module import Routers
from drllm.types import Generation

logger = logging.getLogger(__name__)


class RoutedModel:
    """A frozen causal LM plus per-block routers that choose each row's path during prefill.

    Args:
        model: a frozen HF causal LM the executor can drive (eval mode).
        tokenizer: its tokenizer.
        routers: trained :class:`Routers` for this model (same ``L`` and ``d``).
        alpha: control knob in ``[-1, 1]`` (``< 0`` skips more, ``> 0`` repeats more).
        constraints: path rules the executor enforces on the chosen paths (default: any
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
        logger.info("routed model: %s with routers from %s (alpha=%g)", loaded.model_id,
                    routers_dir, alpha)
        return cls(loaded.model, loaded.tokenizer, routers, alpha, constraints=constraints)

    def block_hook(self, alpha: float | None = None) -> Any:
        """The executor hook: ``(block, hidden [B, T, d], mask [B, T]) -> decisions [B]``."""
        a = self.alpha if alpha is None else check_alpha(alpha)

        def hook(block: int, hidden: torch.Tensor, mask: torch.Tensor) -> list[int]:
            return self.routers.decide(block, hidden, mask, a).tolist()

        return hook

    def route(
        self, prompts: Sequence[str] | Sequence[Sequence[int]], alpha: float | None = None
    ) -> list[LayerPath]:
        """Each prompt's routed path (one cacheless prefill, no generation).

        Args:
            prompts: rendered prompt texts (chat template applied) or token-id lists.
            alpha: overrides the model's control knob for this call.
        """
        ids = self._ids(prompts)
        input_ids, mask = left_pad(ids, self.executor.pad_token_id, self.executor.device)
        states = self.executor.prefill_states(input_ids, mask, block_hook=self.block_hook(alpha))
        return list(states.paths)

    def generate(
        self,
        prompts: Sequence[str] | Sequence[Sequence[int]],
        max_new_tokens: int = 64,
        *,
        stop_strings: Sequence[str] = (),
        alpha: float | None = None,
        batch_size: int | None = None,
    ) -> list[Generation]:
        """Greedy generation along the routed paths.

        Args:
            prompts: rendered prompt texts (chat template applied) or token-id lists.
            max_new_tokens: token budget per row.
            stop_strings: a row stops once its text contains one (cut before it).
            alpha: overrides the model's control knob for this call.
            batch_size: rows per forward batch (``None``: all at once).

        Returns:
            One :class:`~drllm.types.Generation` per prompt; ``layers_executed`` counts the
            routed path's blocks over every forward pass of the row.
        """
        return self.executor.generate(
            self._ids(prompts), None, max_new_tokens=max_new_tokens,
            stop_strings=stop_strings, block_hook=self.block_hook(alpha), batch_size=batch_size,
        )

    def _ids(self, prompts: Sequence[str] | Sequence[Sequence[int]]) -> list[list[int]]:
        if isinstance(prompts, str):
            raise TypeError("pass a sequence of prompts, not one string")
        if all(isinstance(p, str) for p in prompts):
            return self.executor.encode(list(prompts))  # type: ignore[arg-type]
        return [[int(t) for t in p] for p in prompts]
