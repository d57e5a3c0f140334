"""Trained routers as a search prior: each block's (skip, execute, repeat) probabilities.

The MCTS can order its expansions by how likely a trained router finds each edit
(``drllm.search.prior.BlockPrior.from_router_probs(probs)`` with ``probs [L][3]``). Those
probabilities come from here: the prompt runs **teacher-forced along the default path** (every
block executed once) and router ``i`` reads the states entering block ``i``, window-pooled over
the prompt tokens with padding excluded -- exactly the features the routers were trained on
(:func:`~drllm.routers.features.extract_features`, the executor's per-block prefill hook) and
what :class:`~drllm.inference.RoutedModel` sees at block ``i`` as long as the earlier blocks
execute.

* :func:`path_probs` -- probabilities from loaded :class:`~drllm.routers.module.Routers`;
* :func:`router_path_probs` -- the same from a checkpoint directory, checked against the model
  (``L``, ``d`` and, when known, the model id) like :meth:`RoutedModel.from_pretrained`.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import torch

from drllm.routers.decision import calibrated_probs
from drllm.routers.features import extract_features, permissive_constraints
from drllm.routers.module import Routers

logger = logging.getLogger(__name__)

Probs = list[list[list[float]]]
"""Per prompt, per block ``[L][3]``: probabilities of (skip, execute, repeat), summing to 1."""


def _check_prompts(prompts: Sequence[Sequence[int]]) -> list[list[int]]:
    if isinstance(prompts, (str, bytes)) or any(isinstance(p, (str, bytes)) for p in prompts):
        raise TypeError("prompts must be token-id sequences (PathExecutor.encode renders text)")
    ids = [[int(t) for t in p] for p in prompts]
    empty = [i for i, p in enumerate(ids) if not p]
    if empty:
        raise ValueError(f"prompts {empty[:10]} have no tokens")
    return ids


@torch.inference_mode()
def path_probs(
    routers: Routers,
    executor: Any,
    prompts: Sequence[Sequence[int]],
    batch_size: int = 8,
) -> Probs:
    """Router probabilities of every block along the default path.

    Args:
        routers: trained routers of the executor's model (same ``L`` and ``d``); not moved.
        executor: a :class:`~drllm.models.executor.PathExecutor` of the frozen model.
        prompts: token ids per prompt (rendered prompt, chat template applied).
        batch_size: prompts per prefill; prompts are grouped by length (least padding) and the
            result keeps the input order. A row's probabilities do not depend on its batch.

    Returns:
        ``[N][L][3]`` floats: ``softmax`` of router ``i``'s logits plus the checkpoint's logit
        adjustment on the pooled states entering block ``i`` (``W = routers.windows``
        windows, the checkpoint's pooling) when the prompt runs through every block once.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if (routers.num_layers, routers.hidden_size) != (executor.num_layers, executor.hidden_size):
        raise ValueError(
            f"routers are for L={routers.num_layers}, d={routers.hidden_size} but the model has "
            f"L={executor.num_layers}, d={executor.hidden_size}"
        )
    ids = _check_prompts(prompts)
    ref = next(routers.parameters())
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out: list[Any] = [None] * len(ids)
    default = [1] * executor.num_layers
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        features, wmask = extract_features(  # [B, L, W, d] float32, [B, W] bool
            executor, [ids[r] for r in rows], [default] * len(rows), routers.windows,
            routers.meta.pooling,
        )
        logits = routers(features.to(ref.device, ref.dtype), wmask.to(ref.device))  # [B, L, 3]
        probs = calibrated_probs(logits, routers.meta.logit_adjustment).cpu().tolist()
        for row, p in zip(rows, probs):
            out[row] = p
    return out


def _executor(model: Any) -> tuple[Any, str | None]:
    """``(PathExecutor, model id or None)`` of a ``LoadedModel`` or an executor."""
    from drllm.models.executor import PathExecutor
    from drllm.models.loading import LoadedModel

    if isinstance(model, LoadedModel):
        executor = PathExecutor(model.model, model.tokenizer,
                                permissive_constraints(model.num_layers))
        return executor, model.model_id
    if isinstance(model, PathExecutor):
        return model, None
    raise TypeError(f"model must be a LoadedModel or a PathExecutor, got {type(model).__name__}")


def router_path_probs(
    routers_dir: str | os.PathLike[str],
    model: Any,
    prompts: Sequence[Sequence[int]],
    batch_size: int = 8,
    *,
    model_id: str | None = None,
    check_model_id: bool = True,
) -> Probs:
    """Per prompt, ``[L][3]`` (skip, execute, repeat) probabilities of a router checkpoint.

    Args:
        routers_dir: a directory written by :meth:`Routers.save_pretrained`.
        model: the frozen model, a :class:`~drllm.models.loading.LoadedModel` or a
            :class:`~drllm.models.executor.PathExecutor`.
        prompts: token ids per prompt.
        batch_size: prompts per prefill (see :func:`path_probs`).
        model_id: the model's id for the checkpoint check (default: ``LoadedModel.model_id``;
            an executor carries none, so without it only ``L`` and ``d`` are checked).
        check_model_id: require the checkpoint's ``base_model_id`` to equal the model id.

    Raises:
        drllm.routers.checkpoint.RouterCheckpointError: the checkpoint was trained for another
            model (``L``, ``d`` or model id), naming both values.
    """
    executor, loaded_id = _executor(model)
    expected_id = (model_id or loaded_id) if check_model_id else None
    routers = Routers.from_pretrained(
        routers_dir, expected_num_layers=executor.num_layers,
        expected_hidden_size=executor.hidden_size, expected_model_id=expected_id,
    )
    logger.info("router prior: %d prompt(s), L=%d, routers from %s", len(prompts),
                executor.num_layers, routers_dir)
    return path_probs(routers, executor, prompts, batch_size)
