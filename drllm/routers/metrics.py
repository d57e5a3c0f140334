"""Router classification metrics: per-class precision / recall / F1, macro-F1, per-layer accuracy.

Everything is derived from a per-layer confusion tensor ``[L, 3, 3]`` (``[layer, true, pred]``,
classes 0 skip, 1 execute, 2 repeat), so distributed workers can sum their confusions (and
nothing else) before computing metrics. Outputs are plain dicts of Python floats / ints / lists,
ready for ``json.dumps``.

Conventions: a precision / recall / F1 with a zero denominator is 0.0; macro-F1 averages F1 over
the classes that occur in the labels or the predictions (scikit-learn's default label set), so
a class absent from both neither helps nor hurts.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

CLASS_NAMES = ("skip", "execute", "repeat")
NUM_CLASSES = len(CLASS_NAMES)


def confusion_matrix(preds: Tensor, labels: Tensor, num_classes: int = NUM_CLASSES) -> Tensor:
    """Per-layer confusion counts.

    Args:
        preds: ``[N, L]`` predicted decisions.
        labels: ``[N, L]`` true decisions.

    Returns:
        ``[L, C, C]`` int64 counts, indexed ``[layer, true, pred]``.
    """
    if preds.shape != labels.shape or preds.dim() != 2:
        raise ValueError(
            f"preds and labels must both be [N, L]; "
            f"got {tuple(preds.shape)} and {tuple(labels.shape)}"
        )
    num_layers = preds.shape[1]
    layer = torch.arange(num_layers, device=preds.device).expand_as(preds)
    flat = (layer * num_classes + labels.long()) * num_classes + preds.long()
    counts = torch.bincount(flat.reshape(-1), minlength=num_layers * num_classes * num_classes)
    return counts.view(num_layers, num_classes, num_classes)


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    return torch.where(den > 0, num / den.clamp_min(1e-12), torch.zeros_like(num))


def metrics_from_confusion(confusion: Tensor) -> dict[str, Any]:
    """Metrics dict from a ``[L, C, C]`` (or ``[C, C]``, one layer) confusion.

    Keys: ``accuracy``, ``macro_f1``, ``per_class`` (``{name: {precision, recall, f1, support}}``),
    ``per_layer_accuracy`` (list of L floats), ``confusion`` (``C x C`` nested list, summed over
    layers, ``[true][pred]``), ``num_samples`` (row-block pairs), ``pred_counts``.
    """
    conf = confusion.to(torch.float64)
    if conf.dim() == 2:
        conf = conf.unsqueeze(0)
    if conf.dim() != 3 or conf.shape[1] != conf.shape[2]:
        raise ValueError(f"confusion must be [L, C, C], got {tuple(confusion.shape)}")
    total = conf.sum(0)  # [C, C]
    tp = torch.diagonal(total)
    support = total.sum(1)
    predicted = total.sum(0)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    seen = (support + predicted) > 0
    macro_f1 = float(f1[seen].mean()) if bool(seen.any()) else 0.0
    n = float(total.sum())
    layer_total = conf.sum(dim=(1, 2))
    layer_correct = torch.diagonal(conf, dim1=1, dim2=2).sum(1)
    names = (
        CLASS_NAMES
        if total.shape[0] == NUM_CLASSES
        else tuple(str(c) for c in range(total.shape[0]))
    )
    return {
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "macro_f1": macro_f1,
        "per_class": {
            name: {
                "precision": float(precision[c]),
                "recall": float(recall[c]),
                "f1": float(f1[c]),
                "support": int(support[c]),
            }
            for c, name in enumerate(names)
        },
        "per_layer_accuracy": [float(x) for x in _safe_div(layer_correct, layer_total)],
        "confusion": [[int(x) for x in row] for row in total],
        "num_samples": int(n),
        "pred_counts": [int(x) for x in predicted],
    }


def compute_metrics(preds: Tensor, labels: Tensor) -> dict[str, Any]:
    """:func:`metrics_from_confusion` of ``preds [N, L]`` against ``labels [N, L]``."""
    return metrics_from_confusion(confusion_matrix(preds, labels))


HARM_FIELDS = ("unsupported", "supported", "deviations", "correct_rows", "rows")


def harm_counts(preds: Tensor, soft: Tensor, default_correct: Tensor) -> Tensor:
    """Counts behind :func:`harm_from_counts` (summable across workers), ``[5]`` float64.

    Args:
        preds: ``[N, L]`` decisions (e.g. the argmax of the adjusted logits).
        soft: ``[N, L, 3]`` good-path shares of each row (:mod:`drllm.routers.targets`).
        default_correct: ``[N]`` bool, the default path answers the row correctly.

    Returns:
        ``[unsupported, supported, deviations, correct_rows, rows]``: deviations from execute
        that no good path takes on default-correct rows (each may break a correct answer),
        deviations some good path takes (on any row), all deviations, default-correct rows,
        rows.
    """
    deviate = preds != 1
    taken = soft.gather(-1, preds.long().unsqueeze(-1)).squeeze(-1) > 0  # a good path does it
    correct = default_correct.bool().unsqueeze(1)
    return torch.stack([
        (deviate & ~taken & correct).sum(), (deviate & taken).sum(), deviate.sum(),
        default_correct.bool().sum(), torch.tensor(preds.shape[0], device=preds.device),
    ]).double()


def harm_from_counts(counts: Tensor) -> dict[str, float]:
    """The harm figures of summed :func:`harm_counts` (per row, so splits compare).

    ``harm``: unsupported deviations per default-correct row (each may break a correct
    answer); ``support``: deviations a good path takes, per row; ``deviations`` per row;
    ``score = harm - support`` (lower is better: the best-epoch criterion ``select="harm"``).
    """
    unsupported, supported, deviations, correct_rows, rows = (float(x) for x in counts)
    harm = unsupported / correct_rows if correct_rows else 0.0
    support = supported / rows if rows else 0.0
    return {"harm": harm, "support": support,
            "deviations": deviations / rows if rows else 0.0, "score": harm - support}
