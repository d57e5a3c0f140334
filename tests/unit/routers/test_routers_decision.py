"""Decisions at inference: gate, knob, path rules, the checkpoint's calibration, tau = 1."""

from __future__ import annotations

import pytest
import torch

from drllm.inference import RoutedModel
from drllm.models.executor import PathExecutor
from drllm.models.tiny import tiny_model, tiny_tokenizer
from drllm.paths import LayerPath, edit_count, max_skip_run
from drllm.routers.checkpoint import read_config, write_calibration
from drllm.routers.decision import (
    PathState, RouterMeta, RowRules, calibrated_probs, gated_decisions,
)
from drllm.routers.features import permissive_constraints
from drllm.routers.module import Routers

L, D = 6, 64
PROMPTS = [
    "<|im_start|>user\nWhat is 7 times 6?<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time",
    "<|im_start|>user\nName a color.<|im_end|>\n<|im_start|>assistant\n",
]


def test_gate_thresholds_the_likelier_deviation() -> None:
    p = torch.tensor([[0.30, 0.60, 0.10], [0.05, 0.40, 0.55], [0.2, 0.2, 0.6], [0.0, 1.0, 0.0]])
    assert gated_decisions(p).tolist() == [1, 2, 2, 1]  # argmax
    assert gated_decisions(p, gate=0.25).tolist() == [0, 2, 2, 1]
    assert gated_decisions(p, gate=0.55).tolist() == [1, 1, 2, 1]  # strictly above tau
    assert gated_decisions(p, gate=1.0).tolist() == [1, 1, 1, 1]
    one_hot_skip = torch.tensor([[1.0, 0.0, 0.0]])
    assert gated_decisions(one_hot_skip, gate=1.0).tolist() == [1]  # tau = 1: never deviate
    with pytest.raises(ValueError, match="gate"):
        gated_decisions(p, gate=1.5)


def test_logit_adjustment_shifts_probabilities() -> None:
    logits = torch.tensor([[0.0, 0.0, 0.0]])
    q = calibrated_probs(logits, [-1.0, 0.0, 1.0])
    torch.testing.assert_close(q, torch.softmax(torch.tensor([[-1.0, 0.0, 1.0]]), -1))
    torch.testing.assert_close(calibrated_probs(logits, None), torch.full((1, 3), 1 / 3))


def run_rules(wanted: list[int], rules: RowRules) -> list[int]:
    state = PathState(1, len(wanted), rules)
    return [state.step(i, [d])[0] for i, d in enumerate(wanted)]


def test_path_rules_follow_the_search() -> None:
    every_skip = [0] * 8
    path = run_rules(every_skip, RowRules())
    assert path == [0, 0, 1, 0, 0, 1, 0, 0] and max_skip_run(path) == 2
    # edit budget: a run of 2 skips is one edit, a repeat one edit
    path = run_rules([0, 0, 1, 2, 0, 1, 2, 0], RowRules(max_edits=2))
    assert path == [0, 0, 1, 2, 1, 1, 1, 1] and edit_count(tuple(path)) == 2
    path = run_rules([0, 0, 0, 0], RowRules(max_consecutive_skips=4, max_edits=1))
    assert path == [0, 0, 1, 1]
    # cost at most max_cost_factor * L (the rest of the path assumed executed)
    assert run_rules([2, 2, 2, 2], RowRules(max_cost_factor=1.5)) == [2, 2, 1, 1]
    # at least min_executed blocks run
    assert run_rules([0, 0, 0], RowRules(max_consecutive_skips=None, min_executed=1)) == [0, 0, 1]


@pytest.fixture(scope="module")
def model():
    return tiny_model("qwen3", L, D, seed=11)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def eager_routers() -> Routers:
    """Routers that want to skip or repeat every block (strong, alternating logits)."""
    routers = Routers(L, D, bottleneck=16, windows=4)
    with torch.no_grad():
        for i, router in enumerate(routers.routers):
            router.fc2.weight.zero_()
            router.fc2.bias.copy_(torch.tensor([8.0, 0.0, 0.0] if i % 2 else [0.0, 0.0, 8.0]))
    return routers


def test_gate_one_is_token_identical_to_the_default_path(model, tok, tmp_path) -> None:
    executor = PathExecutor(model, tok, permissive_constraints(L))
    default = executor.generate(PROMPTS, None, max_new_tokens=10)
    routed = RoutedModel(model, tok, eager_routers())
    assert all(p != LayerPath.default(L) for p in routed.route(PROMPTS))  # they do deviate
    for alpha in (-1.0, 0.0, 1.0):  # the gate overrides even the knob's extremes
        gens = routed.generate(PROMPTS, 10, alpha=alpha, gate=1.0)
        assert [g.token_ids for g in gens] == [g.token_ids for g in default]
        assert [g.layers_executed for g in gens] == [g.layers_executed for g in default]
    # a checkpoint calibrated to tau = 1 routes the default path by default
    eager_routers().save_pretrained(tmp_path, base_model_id="tiny")
    write_calibration(tmp_path, {"gate": 1.0, "epsilon": 0.01})
    assert read_config(tmp_path)["calibration"]["gate"] == 1.0
    loaded = Routers.from_pretrained(tmp_path)
    assert loaded.meta.gate == 1.0
    calibrated = RoutedModel(model, tok, loaded)
    assert [g.token_ids for g in calibrated.generate(PROMPTS, 10)] == \
        [g.token_ids for g in default]
    assert calibrated.route(PROMPTS) == [LayerPath.default(L)] * len(PROMPTS)


def test_checkpoint_meta_round_trip(tmp_path) -> None:
    routers = eager_routers()
    routers.meta = RouterMeta(logit_adjustment=(0.5, 0.0, -0.5), max_label_edits=3)
    routers.save_pretrained(tmp_path, base_model_id="tiny")
    meta = Routers.from_pretrained(tmp_path).meta
    assert meta.logit_adjustment == (0.5, 0.0, -0.5) and meta.max_label_edits == 3
    assert meta.gate is None and meta.pooling.mode == "prompt"
    # the default edit budget is the labels' largest edit count
    assert RoutedModel(tiny_model("qwen3", L, D, seed=11), tiny_tokenizer(),
                       Routers.from_pretrained(tmp_path)).rules.max_edits == 3
