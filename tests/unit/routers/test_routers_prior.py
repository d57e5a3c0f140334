"""Router probabilities along the default path (the MCTS router prior)."""

from __future__ import annotations

import pytest
import torch

from drllm.inference import path_probs, router_path_probs
from drllm.models.executor import PathExecutor
from drllm.models.loading import LoadedModel
from drllm.models.tiny import tiny_model, tiny_tokenizer
from drllm.paths import LayerPath
from drllm.routers.checkpoint import RouterCheckpointError
from drllm.routers.features import extract_features, left_pad, permissive_constraints
from drllm.routers.module import Routers

L, D, W = 6, 64, 4
MODEL_ID = "tiny-qwen3-L6"
PROMPTS = [
    "<|im_start|>user\nWhat is 7 times 6?<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time",
    "zz",
    "<|im_start|>user\nName a color.<|im_end|>\n<|im_start|>assistant\n",
    "The capital of France is",
]


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    return LoadedModel(tiny_model("qwen3", L, D, seed=11), tiny_tokenizer(), MODEL_ID, L, D,
                       "qwen3")


@pytest.fixture(scope="module")
def executor(loaded) -> PathExecutor:
    return PathExecutor(loaded.model, loaded.tokenizer, permissive_constraints(L))


@pytest.fixture(scope="module")
def ids(executor) -> list[list[int]]:
    return executor.encode(PROMPTS)


@pytest.fixture(scope="module")
def routers() -> Routers:
    """Seeded routers with non-zero biases (probabilities far from uniform and input-dependent)."""
    torch.manual_seed(5)
    out = Routers(L, D, bottleneck=16, windows=W)
    with torch.no_grad():
        for r in out.routers:
            r.fc1.weight.mul_(4.0)
            r.fc2.bias.normal_(0.0, 1.0)
    return out.eval()


@pytest.fixture(scope="module")
def routers_dir(routers, tmp_path_factory):
    directory = tmp_path_factory.mktemp("routers")
    routers.save_pretrained(directory, base_model_id=MODEL_ID)
    return directory


def test_probabilities_are_the_routers_on_the_default_path_features(
    routers, routers_dir, loaded, executor, ids
):
    probs = router_path_probs(routers_dir, loaded, ids, batch_size=2)
    assert len(probs) == len(PROMPTS) and all(len(p) == L for p in probs)
    assert all(len(block) == 3 for p in probs for block in p)
    got = torch.tensor(probs)  # [N, L, 3]
    torch.testing.assert_close(got.sum(-1), torch.ones(len(PROMPTS), L))
    assert bool((got > 0).all())
    # the same as the routers on the feature pass's features along the default path
    features, wmask = extract_features(executor, ids, [LayerPath.default(L)] * len(ids), W)
    with torch.no_grad():
        ref = torch.softmax(routers(features, wmask), dim=-1)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    # and as router i on the raw states entering block i (the routed-inference hook's view)
    seen: dict[int, torch.Tensor] = {}

    def hook(block, hidden, mask):
        seen[block] = torch.softmax(routers.forward_hidden(block, hidden, mask), dim=-1)

    batch, mask = left_pad(ids, executor.pad_token_id)
    with torch.no_grad():
        executor.prefill_states(batch, mask, block_hook=hook)
    torch.testing.assert_close(got, torch.stack([seen[i] for i in range(L)], dim=1),
                               rtol=1e-4, atol=1e-5)
    # probabilities depend on the prompt (a real signal, not a constant prior)
    assert not torch.allclose(got[0], got[1], atol=1e-3)


def test_a_row_batched_with_others_equals_it_run_alone(routers, executor, ids):
    batched = torch.tensor(path_probs(routers, executor, ids, batch_size=len(ids)))
    for row, seq in enumerate(ids):
        alone = torch.tensor(path_probs(routers, executor, [seq]))
        torch.testing.assert_close(batched[row], alone[0], rtol=1e-4, atol=1e-5)
    # chunking and length grouping keep the input order
    torch.testing.assert_close(torch.tensor(path_probs(routers, executor, ids, batch_size=2)),
                               batched, rtol=1e-4, atol=1e-5)
    assert path_probs(routers, executor, []) == []


def test_the_checkpoint_must_fit_the_model(routers_dir, loaded, executor, ids, tmp_path):
    # an executor carries no model id: L and d are checked, the id only when given
    assert len(router_path_probs(routers_dir, executor, ids[:1])) == 1
    with pytest.raises(RouterCheckpointError, match="model id"):
        router_path_probs(routers_dir, executor, ids[:1], model_id="someone-else")
    other = LoadedModel(loaded.model, loaded.tokenizer, "someone-else", L, D, "qwen3")
    with pytest.raises(RouterCheckpointError, match=r"model id 'tiny-qwen3-L6' but the model "
                                                    r"has model id 'someone-else'"):
        router_path_probs(routers_dir, other, ids[:1])
    assert len(router_path_probs(routers_dir, other, ids[:1], check_model_id=False)) == 1
    Routers(L - 1, D, bottleneck=16, windows=W).save_pretrained(tmp_path / "short",
                                                                base_model_id=MODEL_ID)
    with pytest.raises(RouterCheckpointError, match=r"blocks \(L\) 5 but the model has "
                                                    r"blocks \(L\) 6"):
        router_path_probs(tmp_path / "short", loaded, ids[:1])
    with pytest.raises(TypeError, match="token-id"):
        router_path_probs(routers_dir, loaded, PROMPTS[:1])
    with pytest.raises(ValueError, match="no tokens"):
        router_path_probs(routers_dir, loaded, [[]])
