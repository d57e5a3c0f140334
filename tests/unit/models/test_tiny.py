"""Tiny random HF models and the byte-level ChatML tokenizer (drllm.models.tiny)."""

from __future__ import annotations

import string

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from drllm.models.tiny import TINY_FAMILIES, tiny_model, tiny_tokenizer

PRINTABLE = string.printable  # letters, digits, punctuation, space, \t\n\r\x0b\x0c


def _chat_ids(tok, content: str) -> torch.Tensor:
    return tok.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True,
        return_tensors="pt", return_dict=True,
    )["input_ids"]


def _manual_greedy(model, ids: torch.Tensor, steps: int, eos: int) -> list[int]:
    """Greedy decoding by full recompute: argmax of the last position, no cache."""
    out: list[int] = []
    for _ in range(steps):
        with torch.no_grad():
            nxt = int(model(ids, use_cache=False).logits[0, -1].argmax())
        out.append(nxt)
        if nxt == eos:
            break
        ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return out


def test_tokenizer_vocabulary_and_special_ids() -> None:
    tok = tiny_tokenizer()
    assert len(tok) == 260
    assert (tok.pad_token, tok.pad_token_id) == ("<pad>", 0)
    assert (tok.unk_token, tok.unk_token_id) == ("<unk>", 1)
    assert (tok.bos_token, tok.bos_token_id) == ("<|im_start|>", 2)
    assert (tok.eos_token, tok.eos_token_id) == ("<|im_end|>", 3)
    assert tok.padding_side == "left"


def test_tokenizer_is_one_token_per_byte_and_round_trips_printable_ascii() -> None:
    tok = tiny_tokenizer()
    ids = tok.encode(PRINTABLE, add_special_tokens=False)
    assert len(ids) == len(PRINTABLE.encode())
    assert len(set(ids)) == len(PRINTABLE)
    assert tok.decode(ids) == PRINTABLE


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet=st.sampled_from(PRINTABLE), max_size=80))
def test_tokenizer_round_trips_any_ascii_text(text: str) -> None:
    tok = tiny_tokenizer()
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_tokenizer_is_deterministic_and_copies_are_independent() -> None:
    a, b = tiny_tokenizer(), tiny_tokenizer()
    a.padding_side = "right"
    assert b.padding_side == "left"
    assert a.encode("Hello, world!") == b.encode("Hello, world!")


def test_chat_template_renders_chatml() -> None:
    tok = tiny_tokenizer()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    no_prompt = tok.apply_chat_template(messages[1:], add_generation_prompt=False, tokenize=False)
    assert no_prompt == "<|im_start|>user\n2+2?<|im_end|>\n"
    ids = _chat_ids(tok, "2+2?")[0].tolist()
    # Special tokens are single ids, not spelled out byte by byte.
    assert ids[0] == tok.bos_token_id and ids.count(tok.eos_token_id) == 1
    assert tok.decode(ids) == tok.apply_chat_template(
        [{"role": "user", "content": "2+2?"}], add_generation_prompt=True, tokenize=False
    )


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_tiny_model_config_and_frozen(family: str) -> None:
    model = tiny_model(family, num_layers=3, hidden_size=32)
    cfg = model.config
    assert cfg.model_type == family
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == (3, 32, 64)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads) == (4, 2)
    assert cfg.vocab_size == len(tiny_tokenizer())
    assert cfg._attn_implementation == "sdpa"
    assert len(model.model.layers) == 3
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    gen = model.generation_config
    assert (gen.do_sample, gen.pad_token_id, gen.eos_token_id) == (False, 0, 3)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_generate_is_greedy_deterministic_and_not_degenerate(family: str) -> None:
    tok = tiny_tokenizer()
    ids = _chat_ids(tok, "What is 2+2?")
    model = tiny_model(family)
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16)
    new = out[0, ids.shape[1]:].tolist()
    # Same seed, fresh build -> token-identical output.
    again = tiny_model(family).generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16)
    assert again[0, ids.shape[1]:].tolist() == new
    # generate with the default generation_config is greedy: equals argmax by full recompute.
    assert new == _manual_greedy(model, ids, 16, tok.eos_token_id)
    assert len(set(new)) >= 3, f"degenerate greedy output {new}"


def test_seeds_and_families_give_different_weights() -> None:
    base = tiny_model("llama", seed=0).model.embed_tokens.weight
    assert torch.equal(base, tiny_model("llama", seed=0).model.embed_tokens.weight)
    assert not torch.equal(base, tiny_model("llama", seed=1).model.embed_tokens.weight)
    # Llama and Mistral share a parameter layout; the family offsets the seed.
    assert not torch.equal(base, tiny_model("mistral", seed=0).model.embed_tokens.weight)


def test_global_rng_is_untouched() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny_model("qwen3")
    assert torch.equal(torch.rand(3), expected)


def test_dtype() -> None:
    model = tiny_model("qwen2", dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model_type": "gpt2"}, "model_type='gpt2'"),
        ({"num_layers": 0}, "num_layers"),
        ({"hidden_size": 60}, "hidden_size=60"),
    ],
)
def test_bad_arguments_fail_with_the_argument_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_model(**kwargs)
