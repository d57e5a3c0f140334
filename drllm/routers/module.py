"""Per-block routers: window pooling of prompt hidden states and the skip / execute / repeat heads.

Each decoder block ``i`` of a frozen LLM gets one :class:`Router`: ``Linear(d, b) -> GELU ->
Linear(b, 3)`` (``b = 128`` by default; Xavier-uniform weights, zero biases). Classes are the
:mod:`drllm.paths` decisions: ``0`` skip, ``1`` execute, ``2`` repeat.

Input of router ``i``: the hidden states entering block ``i`` over the **prompt** tokens. The
real (unpadded) tokens of each row are split into ``W`` contiguous windows (``W`` clamped by the
row's prompt length) which are mean-pooled (:func:`window_pool`); the router runs on every valid
window and its logits are averaged over the valid windows. Because the second layer is linear,
averaging the logits equals applying it to the average of the GELU activations, which is what
the implementation does (one small matmul instead of ``W``).

Two implementations share these semantics:

* :class:`Routers` -- the canonical module, a ``ModuleList`` of per-block routers, used for
  inference (:meth:`Routers.decide` during prefill) and for checkpoints.
* :class:`StackedRouters` -- the same weights stacked over blocks (``[L, b, d]`` ...) so all
  ``L`` routers run in two batched matmuls; used for training. Convert with
  :meth:`Routers.stacked` and :meth:`StackedRouters.to_routers`.

Both expose ``forward(features [B, L, W, d], wmask [B, W]) -> logits [B, L, 3]``, the training
entry point over precomputed pooled features.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drllm.routers.checkpoint import load_routers, read_config, save_routers
from drllm.routers.decision import RouterMeta, calibrated_probs, gated_decisions

logger = logging.getLogger(__name__)

NUM_CLASSES = 3
DEFAULT_BOTTLENECK = 128
DEFAULT_WINDOWS = 8


def _window_index(rank: Tensor, n: Tensor, windows: Tensor) -> Tensor:
    """Window of each real token, ``numpy.array_split`` style.

    Args:
        rank: ``[B, T]`` position of the token among its row's real tokens (0-based).
        n: ``[B, 1]`` real tokens per row (>= 1).
        windows: ``[B, 1]`` windows per row (``1 <= windows <= n``).

    Returns:
        ``[B, T]`` window index in ``[0, windows)``: the first ``n % windows`` windows hold
        ``ceil(n / windows)`` tokens, the others ``floor(n / windows)``.
    """
    q = torch.div(n, windows, rounding_mode="floor")
    rem = n - q * windows
    split = rem * (q + 1)
    head = torch.div(rank, q + 1, rounding_mode="floor")
    tail = rem + torch.div(rank - split, q.clamp_min(1), rounding_mode="floor")
    return torch.where(rank < split, head, tail)


def window_pool(
    hidden: Tensor, mask: Tensor, windows: int = DEFAULT_WINDOWS
) -> tuple[Tensor, Tensor]:
    """Mean-pool each row's real tokens into ``windows`` contiguous windows.

    Padding (``mask == 0``) is excluded wherever it sits (rows are usually left-padded, each
    with its own length). A row with ``n < windows`` real tokens gets ``n`` one-token windows;
    its remaining windows are zero and masked out. Windows follow ``numpy.array_split``: the
    first ``n % W`` windows hold one token more than the rest.

    Args:
        hidden: ``[B, T, d]`` hidden states (any float dtype; pooled in float32).
        mask: ``[B, T]`` attention mask, nonzero / True on real tokens.
        windows: W, the maximum number of windows per row (paper: 8).

    Returns:
        ``(pooled [B, W, d] float32, window_mask [B, W] bool)``.

    Raises:
        ValueError: on bad shapes, ``windows < 1`` or a row without any real token.
    """
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be [B, T, d], got shape {tuple(hidden.shape)}")
    if mask.shape != hidden.shape[:2]:
        raise ValueError(
            f"mask shape {tuple(mask.shape)} does not match "
            f"hidden [B, T] = {tuple(hidden.shape[:2])}"
        )
    if windows < 1:
        raise ValueError(f"windows must be >= 1, got {windows}")
    real = mask.to(torch.bool)
    n = real.sum(dim=1, keepdim=True)  # [B, 1]
    if bool((n == 0).any()):
        empty = torch.nonzero(n.squeeze(1) == 0).flatten().tolist()
        raise ValueError(f"rows {empty} have no real tokens; cannot pool an empty prompt")
    per_row = n.clamp(max=windows)  # [B, 1]
    rank = real.long().cumsum(dim=1) - 1  # [B, T]
    win = _window_index(rank.clamp_min(0), n, per_row)
    assign = F.one_hot(win, windows).to(torch.float32) * real.unsqueeze(-1)  # [B, T, W]
    counts = assign.sum(dim=1)  # [B, W]
    sums = torch.einsum("btw,btd->bwd", assign, hidden.to(torch.float32))
    window_mask = counts > 0
    pooled = sums / counts.clamp_min(1.0).unsqueeze(-1)
    return pooled, window_mask


def _masked_window_mean(x: Tensor, wmask: Tensor, window_dim: int) -> Tensor:
    """Mean of ``x`` over its window dimension, counting only windows where ``wmask`` is True."""
    m = wmask.to(x.dtype)
    shape = [1] * x.dim()
    shape[0], shape[window_dim] = m.shape
    m = m.view(shape)
    denom = m.sum(dim=window_dim).clamp_min(1.0)
    return (x * m).sum(dim=window_dim) / denom


def _check_features(features: Tensor, wmask: Tensor, num_layers: int, hidden_size: int) -> None:
    if features.dim() != 4 or features.shape[1] != num_layers or features.shape[3] != hidden_size:
        raise ValueError(
            f"features must be [B, L={num_layers}, W, d={hidden_size}], got {tuple(features.shape)}"
        )
    if wmask.shape != (features.shape[0], features.shape[2]):
        raise ValueError(
            f"wmask must be [B, W] = {(features.shape[0], features.shape[2])}, "
            f"got {tuple(wmask.shape)}"
        )


class Router(nn.Module):
    """One block's router: ``Linear(d, b) -> GELU -> Linear(b, 3)``.

    Weights are Xavier-uniform, biases zero (paper initialization).
    """

    def __init__(self, hidden_size: int, bottleneck: int = DEFAULT_BOTTLENECK) -> None:
        super().__init__()
        if hidden_size < 1 or bottleneck < 1:
            raise ValueError(
                f"hidden_size and bottleneck must be >= 1, got {hidden_size} and {bottleneck}"
            )
        self.fc1 = nn.Linear(hidden_size, bottleneck)
        self.fc2 = nn.Linear(bottleneck, NUM_CLASSES)
        for layer in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``x [..., d] -> logits [..., 3]`` (applied per window, no pooling)."""
        return self.fc2(F.gelu(self.fc1(x)))

    def window_logits(self, pooled: Tensor, wmask: Tensor) -> Tensor:
        """Logits averaged over valid windows: ``pooled [B, W, d], wmask [B, W] -> [B, 3]``."""
        x = pooled.to(self.fc1.weight.dtype)
        act = F.gelu(self.fc1(x))  # [B, W, b]
        return self.fc2(_masked_window_mean(act, wmask, window_dim=1))


class Routers(nn.Module):
    """All ``L`` per-block routers of one model (``self.routers[i]`` is block ``i``'s).

    Args:
        num_layers: L, decoder blocks of the frozen model.
        hidden_size: d, the model's hidden size.
        bottleneck: b, router hidden width (paper: 128).
        windows: W, pooling windows over the prompt (paper: 8).
    """

    def __init__(
        self,
        num_layers: int,
        hidden_size: int,
        bottleneck: int = DEFAULT_BOTTLENECK,
        windows: int = DEFAULT_WINDOWS,
    ) -> None:
        super().__init__()
        for name, value in (
            ("num_layers", num_layers),
            ("hidden_size", hidden_size),
            ("bottleneck", bottleneck),
            ("windows", windows),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.num_layers = num_layers
        self.hidden_size = hidden_size
        self.bottleneck = bottleneck
        self.windows = windows
        self.routers = nn.ModuleList(Router(hidden_size, bottleneck) for _ in range(num_layers))
        self.meta = RouterMeta()  # what the checkpoint says about decisions (decision.py)

    def extra_repr(self) -> str:
        return (
            f"num_layers={self.num_layers}, hidden_size={self.hidden_size}, "
            f"bottleneck={self.bottleneck}, windows={self.windows}"
        )

    def _block(self, i: int) -> Router:
        if not 0 <= i < self.num_layers:
            raise IndexError(f"block {i} out of range for {self.num_layers} routers")
        return self.routers[i]

    def logits(self, i: int, pooled: Tensor, wmask: Tensor) -> Tensor:
        """Block ``i``'s logits: ``pooled [B, W, d], wmask [B, W] -> [B, 3]``.

        Logits are averaged over the valid windows of each row.
        """
        return self._block(i).window_logits(pooled, wmask)

    def forward_hidden(self, i: int, hidden: Tensor, mask: Tensor) -> Tensor:
        """Block ``i``'s logits from raw states: ``hidden [B, T, d], mask [B, T] -> [B, 3]``."""
        pooled, wmask = window_pool(hidden, mask, self.windows)
        return self.logits(i, pooled, wmask)

    @torch.no_grad()
    def decide(
        self, i: int, hidden: Tensor, mask: Tensor, alpha: float = 0.0,
        gate: float | None = None, adjust: bool = True,
    ) -> Tensor:
        """Block ``i``'s decisions at prefill, without path rules: ``LongTensor [B]``.

        Logits are adjusted by ``self.meta.logit_adjustment`` (when ``adjust``), then the knob
        ``alpha`` and the gate apply (:mod:`drllm.routers.decision`); ``alpha = 0`` with
        ``gate=None`` is the argmax of the calibrated probabilities.
        """
        adjustment = self.meta.logit_adjustment if adjust else None
        probs = calibrated_probs(self.forward_hidden(i, hidden, mask), adjustment)
        return gated_decisions(probs, alpha, gate)

    def forward(self, features: Tensor, wmask: Tensor) -> Tensor:
        """All blocks' logits from precomputed features.

        Args:
            features: ``[B, L, W, d]`` pooled windows entering each block.
            wmask: ``[B, W]`` valid windows (the same for every block of a row).

        Returns:
            ``[B, L, 3]`` logits; block ``i`` equals ``logits(i, features[:, i], wmask)``.
        """
        _check_features(features, wmask, self.num_layers, self.hidden_size)
        return torch.stack(
            [self.logits(i, features[:, i], wmask) for i in range(self.num_layers)], dim=1
        )

    def stacked(self) -> "StackedRouters":
        """A :class:`StackedRouters` holding a copy of these weights (for fast training)."""
        return StackedRouters.from_routers(self)

    def save_pretrained(
        self,
        directory: str | Path,
        *,
        base_model_id: str,
        class_counts: Sequence[int] | None = None,
        train_config: Any = None,
        metrics: Mapping[str, Any] | None = None,
        rows: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write ``routers.safetensors`` + ``config.json`` to ``directory`` (:mod:`.checkpoint`);
        :attr:`meta` (logit adjustment, label edits, pooling) is written with it."""
        meta = {"logit_adjustment": self.meta.logit_adjustment,
                "label_edits": {"max": self.meta.max_label_edits},
                "pooling": self.meta.pooling.to_dict()}
        return save_routers(
            self,
            directory,
            base_model_id=base_model_id,
            class_counts=class_counts,
            train_config=train_config,
            metrics=metrics,
            rows=rows,
            extra={**meta, **dict(extra or {})},
        )

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        *,
        expected_num_layers: int | None = None,
        expected_hidden_size: int | None = None,
        expected_model_id: str | None = None,
    ) -> "Routers":
        """Load a checkpoint written by :meth:`save_pretrained`; mismatches raise clear errors.

        :attr:`meta` is read from its ``config.json`` (logit adjustment, calibrated gate,
        label edits, pooling)."""
        routers = load_routers(
            directory,
            cls,
            expected_num_layers=expected_num_layers,
            expected_hidden_size=expected_hidden_size,
            expected_model_id=expected_model_id,
        )
        routers.meta = RouterMeta.from_config(read_config(directory))
        return routers


class StackedRouters(nn.Module):
    """The ``L`` routers with weights stacked over blocks, evaluated in two batched matmuls.

    Parameters are stored input-major so that neither the forward nor the weight gradients
    need a transpose copy: ``w1 [L, d, b]``, ``b1 [L, b]``, ``w2 [L, b, 3]``, ``b2 [L, 3]``.
    Block ``i`` is exactly ``Routers.routers[i]``: ``w1[i] = fc1.weight.T``,
    ``b1[i] = fc1.bias``, ``w2[i] = fc2.weight.T``, ``b2[i] = fc2.bias``.

    ``forward`` is fastest when ``features`` is a ``[B, L, W, d]`` view of a layer-major
    ``[L, B, W, d]`` tensor (as :class:`~drllm.routers.dataset.FeatureBatches` yields); other
    layouts cost one copy.
    """

    def __init__(
        self,
        num_layers: int,
        hidden_size: int,
        bottleneck: int = DEFAULT_BOTTLENECK,
        windows: int = DEFAULT_WINDOWS,
    ) -> None:
        super().__init__()
        template = Routers(num_layers, hidden_size, bottleneck, windows)
        self.num_layers, self.hidden_size = num_layers, hidden_size
        self.bottleneck, self.windows = bottleneck, windows
        self.w1 = nn.Parameter(torch.empty(num_layers, hidden_size, bottleneck))
        self.b1 = nn.Parameter(torch.empty(num_layers, bottleneck))
        self.w2 = nn.Parameter(torch.empty(num_layers, bottleneck, NUM_CLASSES))
        self.b2 = nn.Parameter(torch.empty(num_layers, NUM_CLASSES))
        self.load_from(template)

    @classmethod
    def from_routers(cls, routers: Routers) -> "StackedRouters":
        """Stack a :class:`Routers`' weights (copied) on its device and dtype."""
        out = cls(routers.num_layers, routers.hidden_size, routers.bottleneck, routers.windows)
        ref = routers.routers[0].fc1.weight
        out.to(device=ref.device, dtype=ref.dtype)
        out.load_from(routers)
        out.meta = routers.meta
        return out

    @torch.no_grad()
    def load_from(self, routers: Routers) -> None:
        """Copy the weights of ``routers`` (same L, d, b) into this module."""
        mine = (self.num_layers, self.hidden_size, self.bottleneck)
        theirs = (routers.num_layers, routers.hidden_size, routers.bottleneck)
        if mine != theirs:
            raise ValueError(
                f"cannot load Routers(L, d, b)={theirs} into StackedRouters(L, d, b)={mine}"
            )
        blocks = list(routers.routers)
        self.w1.copy_(torch.stack([r.fc1.weight.T for r in blocks]))
        self.b1.copy_(torch.stack([r.fc1.bias for r in blocks]))
        self.w2.copy_(torch.stack([r.fc2.weight.T for r in blocks]))
        self.b2.copy_(torch.stack([r.fc2.bias for r in blocks]))

    @torch.no_grad()
    def to_routers(self) -> Routers:
        """A per-block :class:`Routers` with a copy of these weights (same device and dtype)."""
        out = Routers(self.num_layers, self.hidden_size, self.bottleneck, self.windows)
        out.meta = getattr(self, "meta", out.meta)
        out.to(device=self.w1.device, dtype=self.w1.dtype)
        for i, r in enumerate(out.routers):
            r.fc1.weight.copy_(self.w1[i].T)
            r.fc1.bias.copy_(self.b1[i])
            r.fc2.weight.copy_(self.w2[i].T)
            r.fc2.bias.copy_(self.b2[i])
        return out

    def forward(self, features: Tensor, wmask: Tensor) -> Tensor:
        """``features [B, L, W, d], wmask [B, W] -> logits [B, L, 3]`` (see ``Routers.forward``)."""
        _check_features(features, wmask, self.num_layers, self.hidden_size)
        B, L, W, d = features.shape
        x = features.to(self.w1.dtype).transpose(0, 1).reshape(L, B * W, d)  # [L, B*W, d]
        h = torch.baddbmm(self.b1.unsqueeze(1), x, self.w1)  # [L, B*W, b]
        act = F.gelu(h).view(L, B, W, self.bottleneck)
        m = wmask.to(act.dtype)
        m = m / m.sum(dim=1, keepdim=True).clamp_min(1.0)  # [B, W] averaging weights
        mean = (act * m.view(1, B, W, 1)).sum(dim=2)  # [L, B, b]
        logits = torch.baddbmm(self.b2.unsqueeze(1), mean, self.w2)  # [L, B, 3]
        return logits.transpose(0, 1)

    def flops_per_example(self) -> int:
        """Forward matmul FLOPs for one example (all blocks, all W windows): ``2 L b (W d + 3)``."""
        return (
            2 * self.num_layers * self.bottleneck * (self.windows * self.hidden_size + NUM_CLASSES)
        )

    def train_flops_per_example(self) -> int:
        """Matmul FLOPs of forward + backward for one example.

        The input features need no gradient, so the first layer costs 2x its forward (forward
        and weight gradient) and the second 3x (forward, weight and input gradients).
        """
        first = 2 * self.num_layers * self.bottleneck * self.windows * self.hidden_size
        second = 2 * self.num_layers * self.bottleneck * NUM_CLASSES
        return 2 * first + 3 * second
