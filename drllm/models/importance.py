"""Block influence of a frozen model: how much each decoder block changes the states it sees.

``importance[i] = 1 - cos(h_in, h_out)`` of block ``i``, averaged over the real (unpadded)
prompt tokens of a calibration set, along the default path (ShortGPT's "block influence"). A
block whose output is nearly its input is the cheapest to skip; the MCTS layer-importance prior
(:meth:`drllm.search.prior.BlockPrior.from_layer_importance`) tries skipping such blocks first.

States entering block ``i`` come from the executor's prefill hook; block ``i``'s output is the
state entering block ``i + 1``, and the last block's output is captured by a forward hook on
that layer module (the executor drives the stock modules).
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import torch

logger = logging.getLogger(__name__)


def _cosine_gap(h_in: torch.Tensor, h_out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B]`` mean over a row's real tokens of ``1 - cos`` between ``[B, T, d]`` states."""
    cos = torch.nn.functional.cosine_similarity(h_in.float(), h_out.float(), dim=-1)  # [B, T]
    weight = mask.to(cos.dtype)
    return ((1.0 - cos) * weight).sum(1) / weight.sum(1).clamp(min=1.0)


@torch.inference_mode()
def layer_importance(
    executor: Any, prompts: Sequence[Sequence[int]], batch_size: int = 8
) -> list[float]:
    """Per-block influence ``1 - cos(h_in, h_out)`` over the prompts, default path (length L).

    Args:
        executor: a :class:`~drllm.models.executor.PathExecutor` of the frozen model.
        prompts: token ids of the calibration prompts (at least one).
        batch_size: prompts per forward pass.

    Raises:
        ValueError: no prompts.
    """
    if not prompts:
        raise ValueError("layer_importance needs at least one calibration prompt")
    num_layers = executor.num_layers
    totals = torch.zeros(num_layers, dtype=torch.float64)
    last_layer = executor.family.layers(executor.model)[num_layers - 1]
    for start in range(0, len(prompts), batch_size):
        chunk = [list(p) for p in prompts[start:start + batch_size]]
        entering: list[torch.Tensor | None] = [None] * num_layers
        captured: list[torch.Tensor] = []

        def block_hook(block: int, hidden: torch.Tensor, _mask: torch.Tensor) -> None:
            entering[block] = hidden.clone()
            return None

        def capture_last(_module: Any, _args: Any, output: Any) -> None:
            captured.append((output[0] if isinstance(output, tuple) else output).clone())

        handle = last_layer.register_forward_hook(capture_last)
        try:
            input_ids, mask = executor.left_pad(chunk)
            executor.prefill_states(input_ids, mask, block_hook=block_hook)
        finally:
            handle.remove()
        assert all(h is not None for h in entering) and captured, "hooks were not called"
        outputs = [*entering[1:], captured[-1]]
        for i in range(num_layers):
            totals[i] += _cosine_gap(entering[i], outputs[i], mask.to(entering[i].device)).sum()
    importance = (totals / len(prompts)).tolist()
    logger.info("layer importance over %d prompts: min %.4f (block %d), max %.4f (block %d)",
                len(prompts), min(importance), importance.index(min(importance)),
                max(importance), importance.index(max(importance)))
    return importance
