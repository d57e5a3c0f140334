"""Pooling over the question: the template's shared tokens are excluded, and the feature pass
and routed inference pool exactly the same tokens."""

from __future__ import annotations

import torch

from drllm.inference import RoutedModel
from drllm.models.executor import PathExecutor
from drllm.models.tiny import tiny_model, tiny_tokenizer
from drllm.paths import LayerPath
from drllm.routers.decision import RouterMeta
from drllm.routers.features import extract_features, permissive_constraints
from drllm.routers.module import Routers
from drllm.routers.pooling import PoolingSpec, span_mask

L, D, W = 5, 64, 4


def chat(tok, question: str) -> str:
    return tok.apply_chat_template([{"role": "user", "content": question}],
                                   add_generation_prompt=True, tokenize=False)


def test_spans_strip_the_template_only() -> None:
    tok = tiny_tokenizer()
    spec = PoolingSpec.from_tokenizer(tok, "question")
    question = "What is 7 times 6?"
    ids = tok(chat(tok, question), add_special_tokens=False)["input_ids"]
    (lead, trail), = spec.spans([ids])
    assert tok.decode(ids[lead:len(ids) - trail]) == question
    plain = tok("Once upon a time", add_special_tokens=False)["input_ids"]
    assert spec.spans([plain]) == [(0, 0)]  # no template: pool everything
    assert PoolingSpec().spans([ids]) is None
    assert PoolingSpec.from_dict(spec.to_dict()) == spec
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    got = span_mask(mask, [(1, 1), (2, 0)])
    assert got.int().tolist() == [[0, 0, 0, 1, 1, 0], [0, 0, 1, 1, 1, 1]]


def test_feature_pass_and_routed_inference_pool_the_same_tokens() -> None:
    model, tok = tiny_model("llama", L, D, seed=3), tiny_tokenizer()
    executor = PathExecutor(model, tok, permissive_constraints(L))
    prompts = [chat(tok, "What is 7 times 6?"), chat(tok, "Name a color, please."),
               "Once upon a time"]
    ids = executor.encode(prompts)
    spec = PoolingSpec.from_tokenizer(tok, "question")
    torch.manual_seed(0)
    routers = Routers(L, D, bottleneck=8, windows=W)
    with torch.no_grad():
        for r in routers.routers:  # input-dependent logits, execute always wins
            r.fc2.bias.copy_(torch.tensor([0.0, 100.0, 0.0]))
    routers.meta = RouterMeta(pooling=spec)
    features, wmask = extract_features(executor, ids, [LayerPath.default(L)] * len(ids), W, spec)
    offline = routers(features, wmask)  # [B, L, 3]: what training sees
    seen: list[torch.Tensor] = []
    forward = routers.forward_hidden

    def recording(i, hidden, mask):
        out = forward(i, hidden, mask)
        seen.append(out.detach().clone())
        return out

    routers.forward_hidden = recording  # type: ignore[method-assign]
    routed = RoutedModel(model, tok, routers, gate=None)
    assert routed.route(prompts) == [LayerPath.default(L)] * len(prompts)
    online = torch.stack(seen, dim=1)  # [B, L, 3]: what inference decides from
    torch.testing.assert_close(online, offline, atol=1e-4, rtol=1e-4)
    # the whole-prompt pooling gives other logits on the chat prompts (so the test can fail)
    whole, whole_mask = extract_features(executor, ids, [LayerPath.default(L)] * len(ids), W)
    assert not torch.allclose(routers(whole, whole_mask)[:2], offline[:2], atol=1e-3)
    torch.testing.assert_close(routers(whole, whole_mask)[2], offline[2], atol=1e-5, rtol=1e-5)
