"""Model-family registry: lookup by model_type, accessors, sliding windows, clear rejections."""

from __future__ import annotations

import pytest
from transformers import GPT2Config, GPT2LMHeadModel

from drllm.models.families import (
    FAMILIES,
    ModelFamily,
    UnsupportedArchitectureError,
    get_family,
)
from drllm.models.tiny import TINY_FAMILIES, tiny_model


def test_registered_families():
    assert FAMILIES.names() == ["llama", "mistral", "qwen2", "qwen3"]


@pytest.mark.parametrize("model_type", TINY_FAMILIES)
def test_accessors_return_the_stock_modules(model_type):
    model = tiny_model(model_type, num_layers=3)
    family = get_family(model)
    assert isinstance(family, ModelFamily) and family.name == model_type
    assert family.layers(model) is model.model.layers and len(family.layers(model)) == 3
    assert family.embed_tokens(model) is model.model.embed_tokens
    assert family.final_norm(model) is model.model.norm
    assert family.rotary_emb(model) is model.model.rotary_emb
    assert family.lm_head(model) is model.lm_head
    assert family.cache_kwarg(model) == "cache"  # transformers 5.2x renamed past_key_values
    assert [family.sliding_window(model, i) for i in range(3)] == [None] * 3


def test_sliding_windows_per_family():
    mistral = tiny_model("mistral", num_layers=2)
    mistral.config.sliding_window = 16
    assert [get_family(mistral).sliding_window(mistral, i) for i in range(2)] == [16, 16]
    qwen = tiny_model("qwen2", num_layers=2)
    qwen.config.sliding_window = 16
    qwen.config.layer_types = ["full_attention", "sliding_attention"]
    assert [get_family(qwen).sliding_window(qwen, i) for i in range(2)] == [None, 16]


def test_unsupported_model_type_lists_supported_ones():
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64,
                                       bos_token_id=0, eos_token_id=0))
    with pytest.raises(UnsupportedArchitectureError, match="'gpt2'.*llama, mistral, qwen2, qwen3"):
        get_family(model)
    assert issubclass(UnsupportedArchitectureError, ValueError)


def test_missing_part_and_attention_rejected():
    model = tiny_model("llama", num_layers=2)
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(UnsupportedArchitectureError, match="'flash_attention_2' is not supported"):
        get_family(model)
    model.config._attn_implementation = "sdpa"
    del model.model.rotary_emb
    with pytest.raises(UnsupportedArchitectureError, match="no rotary_emb"):
        get_family(model)
