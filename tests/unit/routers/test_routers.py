"""Router module: window pooling, per-block vs vectorized logits, the alpha knob, checkpoints."""

from __future__ import annotations

import json
import math

import pytest
import torch

from drllm.routers.checkpoint import RouterCheckpointError
from drllm.routers.control import apply_control
from drllm.routers.module import Router, Routers, window_pool
from drllm.routers.training import TrainConfig

PAD = 1.0e6  # padding positions hold huge values: any leak into a mean is obvious


def _tokens(values: list[float], pad_left: int) -> tuple[list[list[float]], list[int]]:
    rows = [[PAD, -PAD]] * pad_left + [[v, 10 * v] for v in values]
    return rows, [0] * pad_left + [1] * len(values)


def test_window_pool_known_means_left_padding_and_clamp() -> None:
    r0, m0 = _tokens([1.0, 2.0, 3.0], pad_left=2)  # 3 real tokens
    r1, m1 = _tokens([1.0, 2.0, 3.0, 4.0, 5.0], pad_left=0)
    hidden = torch.tensor([r0, r1])
    mask = torch.tensor([m0, m1])

    pooled, wmask = window_pool(hidden, mask, windows=2)  # array_split: [2, 1] and [3, 2]
    assert wmask.tolist() == [[True, True], [True, True]]
    torch.testing.assert_close(pooled[0, :, 0], torch.tensor([1.5, 3.0]))
    torch.testing.assert_close(pooled[1, :, 0], torch.tensor([2.0, 4.5]))
    torch.testing.assert_close(pooled[1, :, 1], torch.tensor([20.0, 45.0]))

    pooled, wmask = window_pool(hidden, mask, windows=4)  # row 0 clamped to 3 windows
    assert wmask.tolist() == [[True, True, True, False], [True, True, True, True]]
    torch.testing.assert_close(pooled[0, :3, 0], torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(pooled[0, 3], torch.zeros(2))
    torch.testing.assert_close(pooled[1, :, 0], torch.tensor([1.5, 3.0, 4.0, 5.0]))


def test_window_pool_right_padding_and_single_token() -> None:
    hidden = torch.tensor([[[4.0], [PAD], [PAD]], [[1.0], [2.0], [PAD]]])
    mask = torch.tensor([[1, 0, 0], [1, 1, 0]], dtype=torch.bool)
    pooled, wmask = window_pool(hidden, mask, windows=8)
    assert wmask.sum(1).tolist() == [1, 2]
    assert pooled[0, 0, 0].item() == 4.0
    assert pooled[1, :2, 0].tolist() == [1.0, 2.0]


def test_window_pool_rejects_empty_rows_and_bad_shapes() -> None:
    with pytest.raises(ValueError, match="no real tokens"):
        window_pool(torch.zeros(2, 3, 4), torch.tensor([[1, 1, 1], [0, 0, 0]]), 2)
    with pytest.raises(ValueError, match="mask shape"):
        window_pool(torch.zeros(2, 3, 4), torch.ones(2, 4), 2)
    with pytest.raises(ValueError, match="windows"):
        window_pool(torch.zeros(2, 3, 4), torch.ones(2, 3), 0)


def test_router_init_is_xavier_uniform_with_zero_bias() -> None:
    torch.manual_seed(0)
    router = Router(hidden_size=576, bottleneck=128)
    bound = math.sqrt(6.0 / (576 + 128))
    w = router.fc1.weight
    assert w.shape == (128, 576) and router.fc2.weight.shape == (3, 128)
    assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
    assert abs(w.std().item() - bound / math.sqrt(3)) < 0.02 * bound
    assert router.fc1.bias.abs().sum() == 0 and router.fc2.bias.abs().sum() == 0


def _random_inputs(b: int, num_layers: int, w: int, d: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(b, num_layers, w, d, generator=gen)
    valid = torch.randint(1, w + 1, (b,), generator=gen)
    wmask = torch.arange(w)[None] < valid[:, None]
    return features, wmask


def test_vectorized_logits_equal_per_block_logits() -> None:
    torch.manual_seed(1)
    routers = Routers(num_layers=5, hidden_size=24, bottleneck=16, windows=4)
    for r in routers.routers:  # non-zero biases so their placement is checked too
        torch.nn.init.normal_(r.fc1.bias)
        torch.nn.init.normal_(r.fc2.bias)
    stacked = routers.stacked()
    features, wmask = _random_inputs(7, 5, 4, 24)
    per_block = torch.stack([routers.logits(i, features[:, i], wmask) for i in range(5)], dim=1)
    # Reference: the definition itself -- router on each valid window, logits averaged.
    i = 3
    for row in range(7):
        n = int(wmask[row].sum())
        expected = routers.routers[i](features[row, i, :n]).mean(0)
        torch.testing.assert_close(per_block[row, i], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stacked(features, wmask), per_block, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(routers(features, wmask), per_block, atol=1e-6, rtol=1e-6)
    layer_major = features.transpose(0, 1).contiguous().transpose(0, 1)
    torch.testing.assert_close(stacked(layer_major, wmask), per_block, atol=1e-5, rtol=1e-5)
    back = stacked.to_routers()
    for a, b in zip(routers.state_dict().values(), back.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_forward_hidden_batched_row_equals_row_alone() -> None:
    torch.manual_seed(2)
    routers = Routers(num_layers=2, hidden_size=8, bottleneck=4, windows=3)
    hidden = torch.randn(3, 6, 8)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    hidden[mask == 0] = PAD
    batched = routers.forward_hidden(1, hidden, mask)
    for row in range(3):
        real = hidden[row : row + 1, mask[row] == 1]
        alone = routers.forward_hidden(1, real, torch.ones(real.shape[:2]))
        torch.testing.assert_close(batched[row : row + 1], alone, atol=1e-5, rtol=1e-5)


def test_control_knob() -> None:
    torch.manual_seed(3)
    routers = Routers(num_layers=3, hidden_size=8, bottleneck=8, windows=2)
    hidden, mask = torch.randn(64, 5, 8), torch.ones(64, 5)
    plain = routers.forward_hidden(0, hidden, mask).argmax(-1)
    assert torch.equal(routers.decide(0, hidden, mask, alpha=0.0), plain)
    assert routers.decide(0, hidden, mask, alpha=-1.0).tolist() == [0] * 64
    assert routers.decide(0, hidden, mask, alpha=1.0).tolist() == [2] * 64
    skips = [int((routers.decide(0, hidden, mask, a) == 0).sum()) for a in (0, -0.2, -0.5, -0.9)]
    assert skips == sorted(skips)  # monotone toward skipping
    assert routers.decide(0, hidden, mask, alpha=0.5).tolist() == [1] * 64  # the default path
    executes = [int((routers.decide(0, hidden, mask, a) == 1).sum()) for a in (0, 0.2, 0.4, 0.5)]
    assert executes == sorted(executes) and executes[-1] == 64  # the execute direction
    p = torch.tensor([[0.2, 0.7, 0.1]])
    torch.testing.assert_close(apply_control(p, -0.5), torch.tensor([[0.6, 0.35, 0.05]]))
    torch.testing.assert_close(apply_control(p, 0.25), torch.tensor([[0.1, 0.85, 0.05]]))
    torch.testing.assert_close(apply_control(p, 0.5), torch.tensor([[0.0, 1.0, 0.0]]))
    torch.testing.assert_close(apply_control(p, 0.75), torch.tensor([[0.0, 0.5, 0.5]]))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        apply_control(p, 1.5)


def _saved(tmp_path, **kwargs):
    torch.manual_seed(4)
    routers = Routers(num_layers=3, hidden_size=16, bottleneck=8, windows=4)
    routers.save_pretrained(
        tmp_path,
        base_model_id="tiny/model",
        class_counts=[5, 80, 3],
        train_config=TrainConfig(epochs=2, windows=4, bottleneck=8),
        metrics={"macro_f1": torch.tensor(0.5), "per_layer_accuracy": [0.9, 1.0, 0.8]},
        **kwargs,
    )
    return routers


def test_checkpoint_round_trip(tmp_path) -> None:
    routers = _saved(tmp_path)
    loaded = Routers.from_pretrained(
        tmp_path, expected_num_layers=3, expected_hidden_size=16, expected_model_id="tiny/model"
    )
    features, wmask = _random_inputs(4, 3, 4, 16)
    assert torch.equal(loaded(features, wmask), routers(features, wmask))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["format_version"] == 1 and config["class_counts"] == [5, 80, 3]
    assert config["train_config"]["epochs"] == 2 and config["metrics"]["macro_f1"] == 0.5
    assert (config["num_layers"], config["hidden_size"], config["windows"]) == (3, 16, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "routers.safetensors"]
    assert config["rows"] is None  # not given
    rows = {"filter": "solved", "used": 7, "skipped_unsolved": 3, "train": 6, "val": 1}
    _saved(tmp_path / "with_rows", rows=rows)
    assert json.loads((tmp_path / "with_rows" / "config.json").read_text())["rows"] == rows


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"expected_num_layers": 30}, r"blocks \(L\) 3 but the model has blocks \(L\) 30"),
        (
            {"expected_hidden_size": 576},
            r"hidden size \(d\) 16 but the model has hidden size \(d\) 576",
        ),
        (
            {"expected_model_id": "other/model"},
            r"'tiny/model' but the model has model id 'other/model'",
        ),
    ],
)
def test_checkpoint_mismatch_errors(tmp_path, kwargs, pattern) -> None:
    _saved(tmp_path)
    with pytest.raises(RouterCheckpointError, match=pattern) as info:
        Routers.from_pretrained(tmp_path, **kwargs)
    assert str(tmp_path) in str(info.value)


def test_checkpoint_corrupt_and_missing_files(tmp_path) -> None:
    _saved(tmp_path)
    weights = tmp_path / "routers.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(RouterCheckpointError, match="cannot read routers.safetensors"):
        Routers.from_pretrained(tmp_path)
    weights.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(RouterCheckpointError, match=str(tmp_path)):
        Routers.from_pretrained(tmp_path)
    weights.write_bytes(good)
    config = tmp_path / "config.json"
    text = config.read_text()
    config.write_text(text.replace('"hidden_size": 16', '"hidden_size": 32'))
    with pytest.raises(RouterCheckpointError, match="shape"):
        Routers.from_pretrained(tmp_path)
    config.write_text(text[:-20])
    with pytest.raises(RouterCheckpointError, match="not valid JSON"):
        Routers.from_pretrained(tmp_path)
    config.write_text(text.replace('"format_version": 1', '"format_version": 99'))
    with pytest.raises(RouterCheckpointError, match="format_version 99"):
        Routers.from_pretrained(tmp_path)
    config.unlink()
    with pytest.raises(FileNotFoundError, match="missing config.json"):
        Routers.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Routers.from_pretrained(tmp_path / "nope")


def test_checkpoint_requires_model_id(tmp_path) -> None:
    with pytest.raises(ValueError, match="base_model_id"):
        Routers(2, 4, 4, 2).save_pretrained(tmp_path, base_model_id="")
