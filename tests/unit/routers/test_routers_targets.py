"""Targets that can be learned: soft targets over good paths, trace negatives, row weights,
the logit adjustment that undoes a weighted loss, the harm figure, warm-up as a fraction."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from drllm.routers.loss import (
    AdjustedCrossEntropy, effective_number_weights, focal_loss, inference_adjustment,
)
from drllm.routers.metrics import harm_counts, harm_from_counts
from drllm.routers.optim import warmup_steps_of
from drllm.routers.targets import (
    good_path_share, row_evidence, row_weights, trace_blame, training_targets,
)
from drllm.routers.training import TrainConfig, fit, selection_value

L = 4


def trace_entry(path, reward, failed=False):
    return {"path": list(path), "reward": reward, "cost": sum(path), "edits": 1,
            "reason": "", "extracted": None, "plausibility": None, "implausible": False,
            "response_tokens": 3, "response": None, "failed": failed, "simulation": 0}


def test_soft_targets_keep_execute_where_the_default_is_good() -> None:
    share = good_path_share([0, 1, 1, 1], [[0, 1, 1, 1], [1, 1, 2, 1]], default_correct=True)
    # good paths: SEEE, EERE and the default EEEE
    np.testing.assert_allclose(share, [[1 / 3, 2 / 3, 0], [0, 1, 0], [0, 2 / 3, 1 / 3],
                                       [0, 1, 0]], rtol=1e-6)
    share = good_path_share([0, 1, 1, 1], [], default_correct=False)  # one-hot best path
    np.testing.assert_allclose(share, [[1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 1, 0]])


def test_trace_negatives_blame_the_blocks_a_broken_path_edits() -> None:
    trace = [trace_entry([1, 1, 1, 1], 1.0),          # the default: no edit
             trace_entry([0, 1, 1, 1], 0.0),          # one edit broke it: block 0
             trace_entry([1, 0, 0, 1], 0.0),          # one edit (a 2-block skip): blocks 1, 2
             trace_entry([1, 2, 1, 0], 0.0),          # two edits: half each
             trace_entry([1, 1, 2, 1], 1.0),          # kept the answer: no blame
             trace_entry([1, 1, 1, 0], 0.0, failed=True)]  # failed: not a reward
    np.testing.assert_allclose(trace_blame(trace, L, 1.0), [1.0, 1.5, 1.0, 0.5])


def shard_row(default_reward: float, trace=None) -> dict:
    row = {"best_path": [0, 1, 1, 1], "good_paths": [[0, 1, 1, 1]],
           "default_reward": default_reward, "improved": default_reward < 1}
    if trace is not None:
        row["trace"] = trace
    return row


def test_row_evidence_reads_the_trace_defensively() -> None:
    broken = [trace_entry([1, 1, 0, 1], 0.0)]
    soft, blame, correct = row_evidence(shard_row(1.0, broken), L)
    assert correct and blame.tolist() == [0, 0, 1, 0]
    assert soft[0].tolist() == [0.5, 0.5, 0.0]  # best path and the default
    _, blame, _ = row_evidence(shard_row(1.0), L)  # no trace column: no negatives
    assert blame.tolist() == [0, 0, 0, 0]
    _, blame, correct = row_evidence(shard_row(0.0, broken), L)  # a wrong default: no negatives
    assert not correct and blame.tolist() == [0, 0, 0, 0]
    # rows as pyarrow gives them (trace a list<struct> with nullable fields)
    table = pa.Table.from_pylist([shard_row(1.0, broken), shard_row(1.0, [])])
    evidence = [row_evidence(r, L) for r in table.to_pylist()]
    assert [e[1].tolist() for e in evidence] == [[0, 0, 1, 0], [0, 0, 0, 0]]


def test_training_targets_push_blamed_blocks_to_execute() -> None:
    labels = torch.tensor([[0, 1, 2, 1]])
    soft = torch.tensor([[[0.5, 0.5, 0], [0, 1, 0], [0, 0.5, 0.5], [0, 1, 0]]])
    blame = torch.tensor([[1.0, 0.0, 0.25, 0.0]])
    q = training_targets(labels, soft, blame, negative_weight=2.0)
    torch.testing.assert_close(q[0, 0], torch.tensor([0.0, 1.0, 0.0]))  # nu = min(1, 2)
    torch.testing.assert_close(q[0, 2], torch.tensor([0.0, 0.75, 0.25]))  # nu = 0.5
    hard = training_targets(labels, soft, None, use_soft=False)
    torch.testing.assert_close(hard[0], torch.eye(3)[[0, 1, 2, 1]])
    w = row_weights(torch.tensor([True, False]), 2, improved_weight=3.0)
    assert w.tolist() == [3.0, 1.0]


def test_soft_focal_loss_equals_the_hard_loss_on_one_hot_targets() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(7, 3), torch.tensor([0, 1, 2, 1, 1, 0, 2])
    w = torch.tensor([2.0, 0.5, 1.0])
    hard = focal_loss(logits, target, w, gamma=2.0)
    soft = focal_loss(logits, torch.eye(3)[target], w, gamma=2.0)
    torch.testing.assert_close(hard, soft)
    # sample weights: a row of weight 2 counts twice
    twice = focal_loss(logits[[0, 0, 1]], target[[0, 0, 1]], w, gamma=0.0)
    weighted = focal_loss(logits[:2], target[:2], w, gamma=0.0,
                          sample_weight=torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(twice, weighted)


def test_class_weights_are_capped_at_small_label_counts() -> None:
    counts = [200, 4000, 70]  # ~143 rows x 30 blocks
    raw = effective_number_weights(counts, 0.999)
    assert float(raw.max() / raw.min()) > 10  # the tilt the issue measured
    capped = effective_number_weights(counts, 0.999, max_ratio=5.0)
    assert float(capped.max() / capped.min()) == pytest.approx(5.0)
    paper = [8400, 99000, 2500]  # the paper's ~110k labels: the cap never binds
    torch.testing.assert_close(effective_number_weights(paper, 0.999, max_ratio=5.0),
                               effective_number_weights(paper, 0.999))


def toy_problem() -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """One block; three inputs. A: 60 % execute / 40 % skip (200 rows); B: 80 % skip (20);
    C: always execute (300). Skip is rare overall, so its class weight is ~3.8x execute's."""
    groups = [([1.0, 0.0], [1] * 120 + [0] * 80), ([0.0, 1.0], [0] * 16 + [1] * 4),
              ([1.0, 1.0], [1] * 300)]
    feats, labels = [], []
    for x, ys in groups:
        feats += [x] * len(ys)
        labels += ys
    features = torch.tensor(feats).view(-1, 1, 1, 2)
    return features, torch.tensor(labels).view(-1, 1), [str(i) for i in range(len(labels))]


def test_logit_adjustment_recovers_the_unweighted_decision() -> None:
    features, labels, ids = toy_problem()
    wmask = torch.ones(len(ids), 1, dtype=torch.bool)
    cfg = TrainConfig(loss="focal", gamma=0.0, max_weight_ratio=None, epochs=30, lr=1e-2,
                      batch_size=64, windows=1, bottleneck=16, val_fraction=0.0)
    routers, history = fit(features, labels, wmask, cfg, ids=ids, device="cpu")
    w = history.class_weights
    assert w[0] / w[1] > 1.5  # enough to flip group A under the weighted loss
    probes = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]).view(3, 1, 2)
    mask = torch.ones(3, 1)
    raw = routers.decide(0, probes, mask, adjust=False).tolist()
    adjusted = routers.decide(0, probes, mask).tolist()
    assert raw == [0, 0, 1]  # the weights tilt A to skip
    assert adjusted == [1, 0, 1]  # the unweighted Bayes decision: A executes
    adjustment = routers.meta.logit_adjustment
    torch.testing.assert_close(torch.tensor(adjustment[:2]), -torch.log(torch.tensor(w[:2])))
    assert adjustment[2] == 0.0  # an absent class (weight 0) is not adjusted
    # the logit-adjusted cross-entropy's posterior too
    ce_routers, _ = fit(features, labels, wmask, TrainConfig(**{**cfg.to_dict(), "loss": "ce"}),
                        ids=ids, device="cpu")
    assert ce_routers.decide(0, probes, mask).tolist() == [1, 0, 1]


def test_adjusted_cross_entropy_shift_is_the_log_prior() -> None:
    loss = AdjustedCrossEntropy([10.0, 30.0, 0.0])
    torch.testing.assert_close(loss.shift, torch.tensor([np.log(0.25), np.log(0.75), 0.0],
                                                        dtype=torch.float32))
    assert inference_adjustment([1, 1, 1], "focal") == (0.0, 0.0, 0.0)


def test_harm_figure_counts_edits_no_good_path_takes() -> None:
    preds = torch.tensor([[0, 1, 2], [0, 0, 1]])
    soft = torch.tensor([[[0.5, 0.5, 0], [0, 1, 0], [0, 1, 0]],   # skip@0 supported, R@2 not
                         [[0, 1, 0], [1, 0, 0], [0, 1, 0]]])     # skip@0 not, skip@1 supported
    correct = torch.tensor([True, False])
    counts = harm_counts(preds, soft, correct)
    assert counts.tolist() == [1, 2, 4, 1, 2]
    figures = harm_from_counts(counts)
    assert figures == {"harm": 1.0, "support": 1.0, "deviations": 2.0, "score": 0.0}
    record = {"epoch": 3, "val": {"harm": figures, "loss": 2.0}}
    assert selection_value(record, "harm") == (0.0, 2.0)
    assert selection_value({"epoch": 3, "val": {"loss": 2.0}}, "loss") == (2.0, 0.0)
    assert selection_value({"epoch": 3, "val": {}}, "harm") == (-3.0, 0.0)  # no val: the last


def test_warmup_is_a_fraction_of_the_run() -> None:
    assert warmup_steps_of(TrainConfig(), 225) == 22  # 10 % (500 steps never peaked)
    assert warmup_steps_of(TrainConfig(warmup_steps=500), 225) == 500
    with pytest.raises(ValueError, match="warmup_fraction"):
        TrainConfig(warmup_fraction=1.5)
