"""Precomputed router features in memory: validation, the id-based split, shuffled batches.

A router dataset of ``N`` searched examples over a model with ``L`` blocks is three tensors:

* ``features [N, L, W, d]`` -- pooled windows of the hidden states entering each block along the
  example's best path (fp16 / bf16 storage is fine; batches are cast to float32);
* ``wmask [N, W]`` bool -- valid windows (the same for every block of a row);
* ``labels [N, L]`` int64 -- the MCTS best-path decisions (0 skip, 1 execute, 2 repeat).

Batches are dicts ``{"features", "wmask", "labels"}`` -- the same keys a Ray Data
``iter_torch_batches`` loop would yield -- so the training loop accepts either source -- plus
any per-row ``extras`` (``targets [B, L, 3]``, ``weights [B]``, ``soft``, ``default_correct``:
see :mod:`drllm.routers.targets`).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Iterator, Mapping, Sequence

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

Batch = Mapping[str, Tensor]
BATCH_KEYS = ("features", "wmask", "labels")


def check_dataset(features: Tensor, labels: Tensor, wmask: Tensor) -> None:
    """Raise ``ValueError`` naming the problem if the three tensors do not fit together."""
    if features.dim() != 4:
        raise ValueError(f"features must be [N, L, W, d], got shape {tuple(features.shape)}")
    if not features.is_floating_point():
        raise ValueError(f"features must be a float tensor, got {features.dtype}")
    n, num_layers, windows, _ = features.shape
    if labels.shape != (n, num_layers):
        raise ValueError(f"labels must be [N, L] = {(n, num_layers)}, got {tuple(labels.shape)}")
    if wmask.shape != (n, windows):
        raise ValueError(f"wmask must be [N, W] = {(n, windows)}, got {tuple(wmask.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > 2):
        raise ValueError(
            f"labels must be decisions in {{0, 1, 2}}, "
            f"got range [{int(labels.min())}, {int(labels.max())}]"
        )
    empty = (~wmask.bool()).all(dim=1)
    if bool(empty.any()):
        rows = torch.nonzero(empty).flatten()[:10].tolist()
        raise ValueError(f"rows {rows} have no valid window in wmask")


def id_fraction(example_id: str, seed: int = 0) -> float:
    """Deterministic pseudo-uniform number in ``[0, 1)`` from a hash of ``(seed, example_id)``."""
    digest = hashlib.blake2b(f"{seed}\x00{example_id}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def split_by_id(ids: Sequence[str], val_fraction: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Split rows into train / validation by a hash of each example id.

    A row goes to validation when ``id_fraction(id, seed) < val_fraction``. The assignment of an
    id never depends on the other rows, their order or the run, so re-running (or adding
    shards) keeps every example on its side.

    Returns:
        ``(train_idx, val_idx)``: sorted int64 row indices.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    is_val = torch.tensor([id_fraction(str(i), seed) < val_fraction for i in ids], dtype=torch.bool)
    idx = torch.arange(len(ids), dtype=torch.int64)
    train_idx, val_idx = idx[~is_val], idx[is_val]
    if val_fraction > 0 and len(ids) and len(val_idx) == 0:
        logger.warning(
            "val_fraction=%s put none of %d examples in validation", val_fraction, len(ids)
        )
    if len(ids) and len(train_idx) == 0:
        raise ValueError(f"val_fraction={val_fraction} left no training examples out of {len(ids)}")
    return train_idx, val_idx


class FeatureBatches:
    """Iterable of batches over in-memory features, optionally shuffled per epoch.

    Args:
        features / wmask / labels: the dataset tensors (see module docstring), all rows.
        indices: rows to iterate (e.g. a split); all rows if ``None``.
        batch_size: rows per batch (the last batch may be smaller).
        shuffle: reshuffle rows every epoch (seeded by ``seed`` and the epoch number).
        seed: shuffle seed.
        device: where batches are moved (features cast to float32 there).
        extras: further per-row tensors (first dimension ``N``) yielded under their names.
    """

    def __init__(
        self,
        features: Tensor,
        wmask: Tensor,
        labels: Tensor,
        indices: Tensor | None = None,
        batch_size: int = 16,
        shuffle: bool = False,
        seed: int = 0,
        device: torch.device | str | None = None,
        extras: Mapping[str, Tensor] | None = None,
    ) -> None:
        check_dataset(features, labels, wmask)
        self.extras = {k: v for k, v in (extras or {}).items() if v is not None}
        for name, value in self.extras.items():
            if value.shape[0] != features.shape[0]:
                raise ValueError(f"extra {name!r} has {value.shape[0]} rows for "
                                 f"{features.shape[0]} feature rows")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.features, self.wmask, self.labels = features, wmask.bool(), labels.long()
        self.indices = torch.arange(features.shape[0]) if indices is None else indices.long()
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.device = torch.device(device) if device is not None else features.device
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle order of ``epoch`` (like ``DistributedSampler.set_epoch``)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        order = self.indices
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = order[torch.randperm(len(order), generator=gen)]
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            # Gather layer-major ([L, B, W, d]) by stacking contiguous rows (index_select on the
            # transposed view is ~100x slower), cast once, and hand out the [B, L, W, d] view,
            # which StackedRouters consumes without another copy.
            layer_major = torch.stack([self.features[r] for r in rows.tolist()], dim=1)
            yield {
                "features": layer_major.to(self.device, torch.float32).transpose(0, 1),
                "wmask": self.wmask[rows].to(self.device, non_blocking=True),
                "labels": self.labels[rows].to(self.device, non_blocking=True),
                **{k: v[rows].to(self.device) for k, v in self.extras.items()},
            }


def unpack_batch(
    batch: Batch | Sequence[Tensor], device: torch.device | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """``(features float32 [B, L, W, d], wmask bool [B, W], labels int64 [B, L])`` of a batch.

    Accepts a mapping with :data:`BATCH_KEYS` or a ``(features, wmask, labels)`` sequence.
    """
    if isinstance(batch, Mapping):
        missing = [k for k in BATCH_KEYS if k not in batch]
        if missing:
            raise KeyError(f"batch is missing keys {missing}; expected {list(BATCH_KEYS)}")
        features, wmask, labels = (batch[k] for k in BATCH_KEYS)
    else:
        features, wmask, labels = batch
    if device is not None:
        features, wmask, labels = features.to(device), wmask.to(device), labels.to(device)
    return features.float(), wmask.bool(), labels.long()


def batch_targets(
    batch: Batch | Sequence[Tensor], labels: Tensor, device: torch.device | None = None
) -> tuple[Tensor, Tensor | None]:
    """``(targets [B, L, 3] float32, sample weights [B, L] or None)`` of a batch: its
    ``targets`` / ``weights`` when it has them, else one-hot ``labels`` and no weights."""
    extras = batch if isinstance(batch, Mapping) else {}
    targets = extras.get("targets")
    if targets is None:
        targets = torch.nn.functional.one_hot(labels.long(), 3).float()
    targets = targets.to(device or labels.device).float()
    weights = extras.get("weights")
    if weights is not None:
        weights = weights.to(targets.device).float().unsqueeze(1).expand(labels.shape)
    return targets, weights
