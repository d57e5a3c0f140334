"""Attention masks for left-padded batches, in the formats the stock attention functions take.

Keys live on one time axis shared by the batch (prompt columns, left padded, then one column per
generated token); the ``q`` queries of a forward call are the last ``q`` key columns. A query may
attend to key ``k`` when ``k`` is not in its future, ``k`` is a real (non-pad) token, and, for a
sliding-window block, ``q_pos - k < window``. A pad query attends to itself only, so no row of
the mask is empty (an empty row makes softmax produce NaN, which would then leak through the
values of later blocks); pad queries' outputs are never read.

Formats: ``sdpa`` takes a bool mask ``[B, 1, q, K]`` (True = attend) or ``None`` when a plain
causal / full mask suffices (no padding, no window), which lets SDPA pick its fastest kernel, as
the stock model does. ``eager`` takes an additive float mask (0 or the dtype's minimum).
"""

from __future__ import annotations

import torch


def needs_window(window: int | None, kv_length: int) -> bool:
    """Whether a sliding window of ``window`` keys changes anything over ``kv_length`` keys."""
    return window is not None and kv_length > window


def build_mask(
    valid: torch.Tensor,
    q_length: int,
    *,
    window: int | None,
    attn_implementation: str,
    dtype: torch.dtype,
    all_valid: bool,
) -> torch.Tensor | None:
    """Mask for ``q_length`` queries over the ``K = valid.shape[1]`` keys of each row.

    Args:
        valid: ``[B, K]`` bool, True where the key column holds a real token of that row.
        q_length: queries in this call; they are key columns ``K - q_length .. K - 1``.
        window: sliding window in tokens, or ``None`` for full causal attention.
        attn_implementation: ``"sdpa"`` or ``"eager"``.
        dtype: float dtype of an additive (eager) mask.
        all_valid: caller's knowledge that ``valid`` is all True (skips a device sync).

    Returns:
        ``[B, 1, q_length, K]`` bool (sdpa) or additive ``dtype`` (eager) mask, or ``None`` when
        no mask is needed (no padding, no window, and ``q_length`` 1, or ``q_length == K`` for
        sdpa, whose ``is_causal`` path is then exact).
    """
    batch, kv_length = valid.shape
    windowed = needs_window(window, kv_length)
    if all_valid and not windowed and (
        q_length == 1 or (attn_implementation == "sdpa" and q_length == kv_length)
    ):
        return None
    if q_length == 1 and not windowed:
        allowed = valid.clone()
        allowed[:, -1] = True  # the query itself, even if it is a pad column
        allowed = allowed[:, None, None, :]
    else:
        k_idx = torch.arange(kv_length, device=valid.device)
        q_idx = k_idx[kv_length - q_length :]
        causal = k_idx[None, :] <= q_idx[:, None]  # [q, K]
        if windowed:
            causal = causal & (k_idx[None, :] > q_idx[:, None] - window)
        diagonal = k_idx[None, :] == q_idx[:, None]
        allowed = causal[None] & (valid[:, None, :] | diagonal[None])  # [B, q, K]
        allowed = allowed[:, None]
    if attn_implementation == "eager":
        zero = torch.zeros((), dtype=dtype, device=valid.device)
        neg = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=valid.device)
        return torch.where(allowed, zero, neg)
    return allowed
