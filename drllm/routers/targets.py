"""What a router learns per block: soft targets over good paths, negatives, row weights.

The search gives each solved example a set of **good paths** (correct, at least as good as the
default path) besides its single best path. A one-hot target on the best path punishes
"execute" wherever the label happens to edit, even on questions the default already answers.
So, per example and block (``[L, 3]``):

* ``soft`` -- the share of the example's good paths taking each decision: the best path, every
  stored good path and, when the default path is correct, the default path itself (so execute
  keeps probability wherever the default is among the good paths);
* ``blame`` -- negatives from the search trace (shard column ``trace``, when present): on a row
  whose default answer is correct, every evaluated edited path that is **worse** (broke the
  answer) blames each block it edits by ``1 / edits``. Training moves the target of a blamed
  block toward execute: ``q <- (1 - nu) q + nu e_execute`` with ``nu = min(1,
  negative_weight * blame)``.

Both are computed once per row in the feature pass (:func:`row_evidence`, stored with the
features) and turned into training targets by :func:`training_targets` under the training
config (soft or one-hot, negative weight), with :func:`row_weights` weighting improved rows.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from drllm.paths import EXECUTE, edit_count

logger = logging.getLogger(__name__)

NUM_CLASSES = 3


def _onehot_path(path: Sequence[int]) -> np.ndarray:
    out = np.zeros((len(path), NUM_CLASSES), dtype=np.float32)
    out[np.arange(len(path)), np.asarray(path, dtype=np.int64)] = 1.0
    return out


def _paths(values: Any, num_layers: int) -> list[tuple[int, ...]]:
    out = []
    for p in values or ():
        path = tuple(int(d) for d in p)
        if len(path) != num_layers:
            raise ValueError(f"a good path has {len(path)} decisions for L={num_layers}")
        out.append(path)
    return out


def good_path_share(best_path: Sequence[int], good_paths: Any, default_correct: bool
                    ) -> np.ndarray:
    """``[L, 3]`` share of the distinct good paths (best, stored, default if correct) per
    decision."""
    num_layers = len(best_path)
    paths = {tuple(int(d) for d in best_path), *_paths(good_paths, num_layers)}
    if default_correct:
        paths.add((EXECUTE,) * num_layers)
    return np.mean([_onehot_path(p) for p in sorted(paths)], axis=0).astype(np.float32)


def trace_blame(trace: Any, num_layers: int, default_reward: float) -> np.ndarray:
    """``[L]`` blame from the trace's evaluated paths that scored below the default.

    Entries are mappings with ``path`` and ``reward`` (``failed`` ones are skipped). Only a
    caller whose default path is correct should ask (a wrong default cannot be broken).
    """
    blame = np.zeros(num_layers, dtype=np.float32)
    for entry in trace or ():
        if entry is None or entry.get("failed") or entry.get("path") is None:
            continue
        path = tuple(int(d) for d in entry["path"])
        if len(path) != num_layers:
            raise ValueError(f"a trace path has {len(path)} decisions for L={num_layers}")
        if float(entry.get("reward", 0.0)) >= default_reward:
            continue
        edits = edit_count(path)
        if edits == 0:
            continue
        for block, d in enumerate(path):
            if d != EXECUTE:
                blame[block] += 1.0 / edits
    return blame


def row_evidence(row: Mapping[str, Any], num_layers: int, success: float = 1.0
                 ) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(soft [L, 3], blame [L], default_correct)`` of one shard row.

    Reads ``best_path``, ``good_paths``, ``default_reward`` and, when the row has it, ``trace``
    (rows without a trace have no negatives).
    """
    default_reward = float(row.get("default_reward") or 0.0)
    correct = default_reward >= success
    soft = good_path_share(row["best_path"], row.get("good_paths"), correct)
    blame = (trace_blame(row.get("trace"), num_layers, default_reward) if correct
             else np.zeros(num_layers, dtype=np.float32))
    return soft, blame, correct


def training_targets(
    labels: Tensor, soft: Optional[Tensor], blame: Optional[Tensor], *,
    use_soft: bool = True, negative_weight: float = 1.0,
) -> Tensor:
    """``[N, L, 3]`` targets: ``soft`` (or one-hot ``labels``), blamed blocks moved toward
    execute by ``nu = min(1, negative_weight * blame)``."""
    if use_soft and soft is not None:
        q = soft.float()
    else:
        q = torch.nn.functional.one_hot(labels.long(), NUM_CLASSES).float()
    if blame is not None and negative_weight > 0:
        nu = (negative_weight * blame.float()).clamp(0.0, 1.0).unsqueeze(-1)  # [N, L, 1]
        execute = torch.zeros(NUM_CLASSES, dtype=q.dtype)
        execute[EXECUTE] = 1.0
        q = (1.0 - nu) * q + nu * execute
    return q


def row_weights(improved: Optional[Tensor], n: int, improved_weight: float = 1.0) -> Tensor:
    """``[N]`` row weights: ``improved_weight`` for rows whose best path beat the default."""
    w = torch.ones(n, dtype=torch.float32)
    if improved is not None and improved_weight != 1.0:
        w[improved.bool()] = float(improved_weight)
    return w
