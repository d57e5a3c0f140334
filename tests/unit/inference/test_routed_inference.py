"""RoutedModel: routed prefill decisions reproduce the executor's fixed-path generations."""

from __future__ import annotations

import pytest
import torch

from drllm.models.executor import PathExecutor
from drllm.models.tiny import tiny_model, tiny_tokenizer
from drllm.inference import RoutedModel
from drllm.paths import LayerPath
from drllm.routers.decision import UNCONSTRAINED
from drllm.routers.features import extract_features, permissive_constraints
from drllm.routers.module import Routers

L, D, W = 6, 64, 8
PROMPTS = [
    "<|im_start|>user\nWhat is 7 times 6?<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time",
    "<|im_start|>user\nName a color.<|im_end|>\n<|im_start|>assistant\n",
    "2+2=",
    "The capital of France is",
    "zzz",
]
NEW_TOKENS = 8


@pytest.fixture(scope="module")
def model():
    return tiny_model("qwen3", L, D, seed=11)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def executor(model, tok):
    return PathExecutor(model, tok, permissive_constraints(L))


def forcing_routers(decisions: list[int]) -> Routers:
    """Routers whose block ``i`` always outputs ``decisions[i]`` (zero weights, biased logit)."""
    routers = Routers(L, D, bottleneck=16, windows=W)
    with torch.no_grad():
        for router, d in zip(routers.routers, decisions):
            router.fc2.weight.zero_()
            router.fc2.bias.zero_()
            router.fc2.bias[d] = 10.0
    return routers


def same_generations(a, b) -> None:
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    assert [g.text for g in a] == [g.text for g in b]
    assert [g.layers_executed for g in a] == [g.layers_executed for g in b]


def test_execute_everywhere_equals_the_default_path(model, tok, executor):
    routed = RoutedModel(model, tok, forcing_routers([1] * L))
    assert routed.route(PROMPTS) == [LayerPath.default(L)] * len(PROMPTS)
    same_generations(routed.generate(PROMPTS, NEW_TOKENS),
                     executor.generate(PROMPTS, None, max_new_tokens=NEW_TOKENS))


@pytest.mark.parametrize("k", [0, 3, L - 1])
def test_skip_at_block_k_equals_that_fixed_path(model, tok, executor, k):
    decisions = [1] * L
    decisions[k] = 0
    routed = RoutedModel(model, tok, forcing_routers(decisions))
    expected = executor.generate(PROMPTS, [decisions] * len(PROMPTS), max_new_tokens=NEW_TOKENS)
    same_generations(routed.generate(PROMPTS, NEW_TOKENS), expected)
    default = executor.generate(PROMPTS, None, max_new_tokens=NEW_TOKENS)
    assert [g.token_ids for g in expected] != [g.token_ids for g in default]
    assert all(g.layers_executed == (L - 1) * len(g.token_ids) for g in expected)


def test_repeat_and_alpha_knob(model, tok, executor):
    decisions = [1, 2, 1, 1, 2, 1]
    routed = RoutedModel(model, tok, forcing_routers(decisions))
    same_generations(routed.generate(PROMPTS[:3], NEW_TOKENS),
                     executor.generate(PROMPTS[:3], [decisions] * 3, max_new_tokens=NEW_TOKENS))
    # the search's rules by default: at most 2 consecutive skips
    assert routed.route(PROMPTS[:2], alpha=-1.0) == [LayerPath.parse("SSESSE")] * 2
    free = RoutedModel(model, tok, forcing_routers(decisions), rules=UNCONSTRAINED)
    assert free.route(PROMPTS[:2], alpha=-1.0) == [LayerPath([0] * L)] * 2
    assert routed.route(PROMPTS[:2], alpha=1.0) == [LayerPath([2] * L)] * 2
    assert routed.route(PROMPTS[:2], alpha=0.5) == [LayerPath.default(L)] * 2  # execute direction
    with pytest.raises(ValueError, match="alpha"):
        RoutedModel(model, tok, forcing_routers(decisions), alpha=1.5)


def input_dependent_routers(executor, ids, block: int) -> tuple[Routers, list[int]]:
    """Routers executing every block except ``block``, which skips exactly when the mean GELU
    of a projection of the prompt's pooled windows exceeds the median over the prompts (so half
    of the prompts skip it)."""
    routers = forcing_routers([1] * L)
    feats, wmask = extract_features(executor, ids, [LayerPath.default(L)] * len(ids), W)
    u = torch.randn(D, generator=torch.Generator().manual_seed(0))
    act = torch.nn.functional.gelu(feats[:, block] @ u)  # [B, W]
    h = (act * wmask).sum(1) / wmask.sum(1)
    ranked = h.sort().values
    mid = len(ranked) // 2
    threshold = float(ranked[mid - 1] + ranked[mid]) / 2  # between the two middle prompts
    assert float(ranked[mid] - ranked[mid - 1]) > 1e-3, "need a margin around the threshold"
    router = routers.routers[block]
    with torch.no_grad():
        router.fc1.weight.zero_()
        router.fc1.weight[0] = u
        router.fc2.weight.zero_()
        router.fc2.bias.zero_()
        router.fc2.weight[0, 0] = 100.0  # skip logit = 100 (h - threshold)
        router.fc2.bias[0] = -100.0 * threshold
    expected = [0 if float(v) > threshold else 1 for v in h]
    return routers, expected


def test_rows_decide_independently_in_a_mixed_batch(model, tok, executor):
    block = 2
    ids = executor.encode(PROMPTS)
    routers, expected = input_dependent_routers(executor, ids, block)
    assert 0 < sum(d == 0 for d in expected) < len(PROMPTS), "the rule must split the prompts"
    routed = RoutedModel(model, tok, routers)
    paths = routed.route(PROMPTS)
    assert [p[block] for p in paths] == expected
    assert all(p[i] == 1 for p in paths for i in range(L) if i != block)
    batched = routed.generate(PROMPTS, NEW_TOKENS)
    for row, prompt in enumerate(PROMPTS):
        same_generations([batched[row]], routed.generate([prompt], NEW_TOKENS))
        same_generations([batched[row]],
                         executor.generate([prompt], [paths[row]], max_new_tokens=NEW_TOKENS))
    same_generations(routed.generate(PROMPTS, NEW_TOKENS, batch_size=2), batched)


def test_routers_must_fit_the_model(model, tok):
    with pytest.raises(ValueError, match="routers are for L=5, d=64 but the model has L=6"):
        RoutedModel(model, tok, Routers(L - 1, D))
    with pytest.raises(TypeError, match="not one string"):
        RoutedModel(model, tok, forcing_routers([1] * L)).generate("hello", 2)
