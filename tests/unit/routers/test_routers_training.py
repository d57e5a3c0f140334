"""Router training: id split, batches, schedule, and learning a known rule with rare classes."""

from __future__ import annotations

import json

import pytest
import torch
import torch.distributed as dist

from drllm.bench.train import run_train_benchmark
from drllm.routers.dataset import FeatureBatches, split_by_id
from drllm.routers.loss import FocalLoss
from drllm.routers.module import Routers, StackedRouters
from drllm.routers.training import (
    TrainConfig,
    evaluate,
    fit,
    lr_factor,
    make_optimizer,
    train_epoch,
)

L, D, W = 4, 32, 4
BALANCE = (0.07, 0.90, 0.03)  # skip, execute, repeat
GAP = 0.5


def synthetic_rule(n: int = 3000, seed: int = 0):
    """Features whose labels are a known function of the inputs, with rare skip / repeat.

    For block i with unit direction u_i and s = u_i . mean(valid windows of block i):
    label = skip if s > 1 + GAP/2, repeat if s < -1 - GAP/2, else execute. Labels are drawn
    with BALANCE first, then each row's windows are shifted along u_i so s lands in its class's
    interval (execute [-1, 1], skip [1 + GAP, 2 + GAP], repeat [-2 - GAP, -1 - GAP]).
    """
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(n, L, W, D, generator=gen)
    valid = torch.randint(1, W + 1, (n,), generator=gen)
    valid[torch.rand(n, generator=gen) < 0.6] = W
    wmask = torch.arange(W)[None] < valid[:, None]
    u = torch.randn(L, D, generator=gen)
    u = u / u.norm(dim=1, keepdim=True)
    labels = torch.multinomial(torch.tensor(BALANCE), n * L, True, generator=gen).view(n, L)
    r = torch.rand(n, L, generator=gen)
    target = torch.where(
        labels == 1, 2 * r - 1, torch.where(labels == 0, 1 + GAP + r, -1 - GAP - r)
    )
    m = wmask.float()[:, None, :, None]
    proj = torch.einsum("nld,ld->nl", (features * m).sum(2) / m.sum(2), u)
    features = features + (target - proj)[:, :, None, None] * u[None, :, None, :] * m
    s = torch.einsum("nld,ld->nl", (features * m).sum(2) / m.sum(2), u)
    rule = torch.ones_like(labels)
    rule[s > 1 + GAP / 2] = 0
    rule[s < -1 - GAP / 2] = 2
    assert torch.equal(rule, labels)
    return features.half(), labels, wmask


@pytest.fixture(scope="module")
def data():
    return synthetic_rule()


def _cfg(**kw) -> TrainConfig:
    base = dict(epochs=2, lr=3e-3, warmup_steps=50, windows=W, bottleneck=128, seed=0)
    return TrainConfig(**{**base, **kw})


def test_fit_learns_rule_and_focal_beats_cross_entropy_on_rare_classes(data) -> None:
    features, labels, wmask = data
    ids = [f"q-{i}" for i in range(len(labels))]
    routers, hist = fit(features, labels, wmask, _cfg(), ids=ids, device="cpu")
    _, ce_hist = fit(
        features, labels, wmask, _cfg(gamma=0.0, class_weighting=False), ids=ids, device="cpu"
    )
    focal, ce = hist.final_metrics, ce_hist.final_metrics
    assert focal["macro_f1"] >= 0.9, focal
    minority = lambda m: (m["per_class"]["skip"]["recall"] + m["per_class"]["repeat"]["recall"]) / 2
    assert minority(focal) > minority(ce) + 0.1, (focal["per_class"], ce["per_class"])
    assert focal["per_class"]["repeat"]["recall"] > ce["per_class"]["repeat"]["recall"]
    # Class counts come from the training split; rarer classes weigh more.
    train = torch.tensor(hist.train_indices)
    assert list(hist.class_counts) == torch.bincount(labels[train].flatten(), minlength=3).tolist()
    w = hist.class_weights
    assert w[2] > w[0] > w[1] and ce_hist.class_weights is None
    assert len(hist.epochs) == 2 and hist.epochs[-1]["train"]["steps"] == -(-len(train) // 16)
    assert 0.05 < len(hist.val_indices) / len(labels) < 0.15
    # The returned per-block routers reproduce the validation metrics.
    val = torch.tensor(hist.val_indices)
    again = evaluate(routers, FeatureBatches(features, wmask, labels, val, batch_size=64))
    assert again["confusion"] == focal["confusion"]
    json.dumps(hist.final_metrics)


def test_split_by_id_is_deterministic_and_order_independent() -> None:
    ids = [f"gsm8k-train-{i}" for i in range(2000)]
    tr, va = split_by_id(ids, 0.1, seed=0)
    assert sorted(tr.tolist() + va.tolist()) == list(range(2000))
    assert 150 < len(va) < 250
    val_ids = {ids[i] for i in va.tolist()}
    shuffled = list(reversed(ids)) + [f"new-{i}" for i in range(100)]
    _, va2 = split_by_id(shuffled, 0.1, seed=0)
    assert {shuffled[i] for i in va2.tolist()} & set(ids) == val_ids
    _, va3 = split_by_id(ids, 0.1, seed=1)
    assert {ids[i] for i in va3.tolist()} != val_ids
    assert len(split_by_id(ids, 0.0)[1]) == 0
    with pytest.raises(ValueError, match="val_fraction"):
        split_by_id(ids, 1.0)


def test_feature_batches_cover_rows_shuffle_per_epoch_and_cast(data) -> None:
    features, labels, wmask = data
    idx = torch.arange(0, 100)
    loader = FeatureBatches(features, wmask, labels, idx, batch_size=16, shuffle=True, seed=3)
    assert len(loader) == 7

    def rows(epoch):
        loader.set_epoch(epoch)
        out = []
        for batch in loader:
            assert batch["features"].dtype == torch.float32 and batch["features"].shape[1:] == (
                L,
                W,
                D,
            )
            for f, y in zip(batch["features"], batch["labels"], strict=True):
                match = (labels[:100] == y).all(1) & (features[:100].float() == f).flatten(1).all(1)
                out.append(int(torch.nonzero(match)[0]))
        return out

    e0, e0_again, e1 = rows(0), rows(0), rows(1)
    assert sorted(e0) == list(range(100)) and e0 == e0_again and e0 != e1
    with pytest.raises(ValueError, match="labels must be"):
        FeatureBatches(features, wmask, labels[:, :2])


def test_lr_schedule_warmup_then_cosine() -> None:
    assert lr_factor(0, 10, 110) == pytest.approx(0.1)
    assert lr_factor(9, 10, 110) == pytest.approx(1.0)
    assert lr_factor(60, 10, 110) == pytest.approx(0.5)
    assert lr_factor(110, 10, 110) == pytest.approx(0.0)
    model = StackedRouters(2, 8, 4, 2)
    opt, sched = make_optimizer(model, TrainConfig(lr=1e-2, warmup_steps=4), total_steps=8)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([2.5e-3, 5e-3, 7.5e-3, 1e-2])
    assert lrs[4:] == sorted(lrs[4:], reverse=True) and lrs[-1] > 0


def test_train_epoch_tuple_batches_grad_clip_and_single_process_group(tmp_path, data) -> None:
    features, labels, wmask = data
    torch.manual_seed(0)
    model = StackedRouters(L, D, 16, W)
    batches = [
        (features[i : i + 32].float(), wmask[i : i + 32], labels[i : i + 32])
        for i in range(0, 256, 32)
    ]
    opt, sched = make_optimizer(model, TrainConfig(lr=1e-2, warmup_steps=1), total_steps=8)
    before = model.w1.detach().clone()
    stats = train_epoch(model, batches, opt, sched, FocalLoss([1.0, 1.0, 1.0]), grad_clip=1e-3)
    assert stats["steps"] == 8 and stats["examples"] == 256 and stats["loss"] > 0
    assert not torch.equal(before, model.w1)
    local = evaluate(model, batches, FocalLoss(None, 2.0))
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        assert evaluate(model, batches, FocalLoss(None, 2.0)) == local
    finally:
        dist.destroy_process_group()
    with pytest.raises(ValueError, match="empty loader"):
        evaluate(model, [])


def test_config_validation_and_shape_errors(data) -> None:
    with pytest.raises(ValueError, match="lr must be > 0"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match="unknown TrainConfig keys"):
        TrainConfig.from_dict({"lr": 1e-3, "epoch": 3})
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()
    assert TrainConfig(batch_size=16).per_worker_batch_size(4) == 4
    features, labels, wmask = data
    with pytest.raises(ValueError, match="W=4 windows but TrainConfig.windows=8"):
        fit(features, labels, wmask, TrainConfig())
    with pytest.raises(ValueError, match=r"features must be \[B, L=3"):
        Routers(3, D, 8, W)(features[:2].float(), wmask[:2])


def test_train_benchmark_smoke() -> None:
    out = run_train_benchmark(
        num_examples=64, num_layers=3, hidden_size=16, windows=4, epochs=2, bottleneck=8
    )
    assert out["steps"] == 2 * 4 and out["train_seconds"] > 0
    assert out["examples_per_s"] == pytest.approx(128 / out["train_seconds"])
    assert out["train_gflops_per_s"] > 0
