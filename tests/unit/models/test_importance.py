"""Block influence (``1 - cos(h_in, h_out)``) against stock HF hidden states, and known answers."""

from __future__ import annotations

import pytest
import torch

from drllm.models.executor import PathExecutor
from drllm.models.importance import layer_importance
from drllm.models.tiny import TINY_FAMILIES, tiny_model, tiny_tokenizer

PROMPTS = ["What is 3 + 4?", "The sky is", "Name a prime number larger than ten, please."]


def _ids(tok):
    return [tok.encode(p) for p in PROMPTS]


def _reference(model, tok) -> list[float]:
    """Per prompt, alone (no padding), from ``output_hidden_states`` and a hook on the last block."""
    layers = model.model.layers
    totals = torch.zeros(len(layers), dtype=torch.float64)
    for ids in _ids(tok):
        out_last = []
        handle = layers[-1].register_forward_hook(
            lambda _m, _a, o: out_last.append(o[0] if isinstance(o, tuple) else o))
        with torch.no_grad():
            hs = model(torch.tensor([ids]), output_hidden_states=True).hidden_states
        handle.remove()
        outs = [*hs[1:len(layers)], out_last[0]]
        for i in range(len(layers)):
            cos = torch.nn.functional.cosine_similarity(hs[i][0], outs[i][0], dim=-1)
            totals[i] += (1 - cos).mean()
    return (totals / len(PROMPTS)).tolist()


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_matches_hf_hidden_states_with_padding(family: str) -> None:
    model, tok = tiny_model(family, num_layers=4), tiny_tokenizer()
    got = layer_importance(PathExecutor(model, tok), _ids(tok), batch_size=3)
    assert got == pytest.approx(_reference(model, tok), abs=1e-5)


def test_an_identity_block_has_zero_influence() -> None:
    model, tok = tiny_model("llama", num_layers=4, seed=1), tiny_tokenizer()
    block = model.model.layers[2]
    with torch.no_grad():  # residual branches output zero: the block passes its input through
        block.self_attn.o_proj.weight.zero_()
        block.mlp.down_proj.weight.zero_()
    got = layer_importance(PathExecutor(model, tok), _ids(tok))
    assert got[2] == pytest.approx(0.0, abs=1e-6)
    assert min(got[i] for i in (0, 1, 3)) > 1e-3


def test_needs_prompts() -> None:
    model, tok = tiny_model("llama", num_layers=2), tiny_tokenizer()
    with pytest.raises(ValueError, match="at least one calibration prompt"):
        layer_importance(PathExecutor(model, tok), [])
