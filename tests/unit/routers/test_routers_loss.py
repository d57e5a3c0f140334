"""Focal loss, effective-number class weights and router metrics against hand-computed values."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from drllm.routers.loss import FocalLoss, class_counts, effective_number_weights, focal_loss
from drllm.routers.metrics import compute_metrics, confusion_matrix

LN2, LN3 = math.log(2.0), math.log(3.0)
# Three samples: softmax of [0, 0, 0] is 1/3 each; of [ln 2, 0, 0] is (1/2, 1/4, 1/4).
LOGITS = torch.tensor([[0.0, 0.0, 0.0], [LN2, 0.0, 0.0], [LN2, 0.0, 0.0]])
TARGET = torch.tensor([1, 0, 2])
WEIGHT = torch.tensor([0.5, 1.0, 1.5])


def test_effective_number_weights_by_hand() -> None:
    # beta = 0.5, counts (1, 2, 0): raw = 0.5/0.5 = 1, 0.5/0.75 = 2/3, 0 -> scaled to sum 3.
    w = effective_number_weights([1, 2, 0], beta=0.5)
    torch.testing.assert_close(w, torch.tensor([1.8, 1.2, 0.0]))
    # Paper setting: beta = 0.999; rarer classes weigh more; sum is the number of classes.
    counts = [700, 9000, 300]
    raw = [(1 - 0.999) / (1 - 0.999**n) for n in counts]
    expected = torch.tensor([3 * r / sum(raw) for r in raw])
    w = effective_number_weights(counts, beta=0.999)
    torch.testing.assert_close(w, expected)
    assert w[2] > w[0] > w[1] and abs(float(w.sum()) - 3.0) < 1e-5
    torch.testing.assert_close(effective_number_weights([5, 50, 500], beta=0.0), torch.ones(3))
    with pytest.raises(ValueError, match="every class count is 0"):
        effective_number_weights([0, 0, 0])
    with pytest.raises(ValueError, match="beta"):
        effective_number_weights([1, 1, 1], beta=1.0)


def test_class_counts() -> None:
    assert class_counts(torch.tensor([[1, 1, 0], [2, 1, 1]])) == [1, 4, 1]
    with pytest.raises(ValueError, match="labels must lie"):
        class_counts(torch.tensor([0, 3]))


def test_focal_loss_hand_computed() -> None:
    # FL = -w_y (1 - p_y)^2 log p_y:
    #   sample 0: w=1.0, p=1/3 -> (4/9) ln 3;  sample 1: w=0.5, p=1/2 -> 0.5 * 0.25 * ln 2
    #   sample 2: w=1.5, p=1/4 -> 1.5 * 0.5625 * 2 ln 2; mean divides by sum of w_y = 3.0.
    per_sample = torch.tensor([4 / 9 * LN3, 0.125 * LN2, 1.6875 * LN2])
    got = focal_loss(LOGITS, TARGET, WEIGHT, gamma=2.0, reduction="none")
    torch.testing.assert_close(got, per_sample)
    torch.testing.assert_close(focal_loss(LOGITS, TARGET, WEIGHT, 2.0), per_sample.sum() / 3.0)
    torch.testing.assert_close(focal_loss(LOGITS, TARGET, WEIGHT, 2.0, "sum"), per_sample.sum())
    unweighted = torch.tensor([4 / 9 * LN3, 0.25 * LN2, 0.5625 * 2 * LN2]).mean()
    torch.testing.assert_close(FocalLoss(None, 2.0)(LOGITS, TARGET), unweighted)


def test_gamma_zero_equals_weighted_cross_entropy() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 3, generator=gen) * 3
    target = torch.randint(0, 3, (64,), generator=gen)
    weight = effective_number_weights([3, 50, 11], beta=0.9)
    expected = F.cross_entropy(logits, target, weight=weight)
    torch.testing.assert_close(focal_loss(logits, target, weight, gamma=0.0), expected)
    torch.testing.assert_close(FocalLoss(weight, 0.0)(logits, target), expected)
    torch.testing.assert_close(
        FocalLoss(None, 0.0)(logits, target), F.cross_entropy(logits, target)
    )
    # [B, L, 3] logits with [B, L] labels flatten to the same loss.
    torch.testing.assert_close(
        FocalLoss(weight, 0.0)(logits.view(16, 4, 3), target.view(16, 4)), expected
    )


def test_focal_loss_gradient_and_zero_weight_batch() -> None:
    logits = LOGITS.clone().requires_grad_(True)
    focal_loss(logits, TARGET, WEIGHT, 2.0).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    zero = focal_loss(LOGITS, torch.tensor([2, 2, 2]), torch.tensor([1.0, 1.0, 0.0]), 2.0)
    assert zero.item() == 0.0
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(None, -1.0)


def test_metrics_hand_computed() -> None:
    labels = torch.tensor([[0, 1], [1, 1], [2, 1], [1, 0]])
    preds = torch.tensor([[0, 1], [1, 1], [1, 1], [0, 0]])
    conf = confusion_matrix(preds, labels)
    assert conf.shape == (2, 3, 3)
    assert conf[0].tolist() == [[1, 0, 0], [1, 1, 0], [0, 1, 0]]
    m = compute_metrics(preds, labels)
    assert m["confusion"] == [[2, 0, 0], [1, 4, 0], [0, 1, 0]]
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["per_layer_accuracy"] == pytest.approx([0.5, 1.0])
    skip, execute, repeat = (m["per_class"][k] for k in ("skip", "execute", "repeat"))
    assert (skip["precision"], skip["recall"], skip["f1"]) == pytest.approx((2 / 3, 1.0, 0.8))
    assert (execute["precision"], execute["recall"], execute["f1"]) == pytest.approx(
        (0.8, 0.8, 0.8)
    )
    assert (repeat["precision"], repeat["recall"], repeat["f1"], repeat["support"]) == (0, 0, 0, 1)
    assert m["macro_f1"] == pytest.approx(1.6 / 3)
    assert m["num_samples"] == 8 and m["pred_counts"] == [3, 5, 0]
    json.dumps(m)  # JSON-serializable
    # A class absent from labels and predictions does not count in macro-F1.
    m2 = compute_metrics(torch.tensor([[0, 1, 1]]), torch.tensor([[0, 1, 1]]))
    assert m2["macro_f1"] == 1.0 and m2["per_class"]["repeat"]["f1"] == 0.0
