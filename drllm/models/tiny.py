"""Tiny random Hugging Face decoders and a matching tokenizer, built in-process (no downloads).

Used as test fixtures and for quick local runs: every architecture family the executor drives
(Llama, Qwen2, Qwen3, Mistral) can be instantiated in milliseconds from its config class, with
seeded weights, a byte-level tokenizer and a ChatML chat template shaped like SmolLM2's.

Example::

    from drllm.models.tiny import tiny_model, tiny_tokenizer
    tok = tiny_tokenizer()
    model = tiny_model("qwen3", num_layers=4)
    ids = tok.apply_chat_template([{"role": "user", "content": "2+2?"}],
                                  add_generation_prompt=True, return_tensors="pt")
"""

from __future__ import annotations

import functools
import logging

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

logger = logging.getLogger(__name__)

TINY_FAMILIES: tuple[str, ...] = ("llama", "qwen2", "qwen3", "mistral")

PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
BOS_TOKEN = "<|im_start|>"
EOS_TOKEN = "<|im_end|>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN)

# ChatML, as in SmolLM2-Instruct but without its default system prompt.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_ARCHITECTURES: dict[str, tuple[type[PretrainedConfig], type[PreTrainedModel]]] = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
}

NUM_HEADS = 4
NUM_KV_HEADS = 2
MAX_POSITIONS = 512
# Std of the random init. HF's default (0.02) gives near-uniform logits on a 64-wide model;
# 0.15 makes the next-token distribution peaked enough that greedy outputs vary along the
# generation, by prompt and by layer path, which the executor tests need to tell paths apart.
INIT_STD = 0.15


@functools.lru_cache(maxsize=1)
def _tiny_backend() -> Tokenizer:
    """Byte-level BPE without merges: one token per byte (256) after 4 special tokens."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for char in alphabet:
        vocab[char] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK_TOKEN))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    return backend


@functools.lru_cache(maxsize=1)
def _cached_tokenizer() -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=_tiny_backend(),
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        padding_side="left",
        chat_template=CHATML_TEMPLATE,
        model_max_length=MAX_POSITIONS,
    )


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A deterministic byte-level tokenizer with ChatML special tokens.

    Vocabulary: ``<pad>`` (0), ``<unk>`` (1), ``<|im_start|>`` (2, bos), ``<|im_end|>`` (3, eos),
    then the 256 byte symbols, 260 tokens in all. Any text (ASCII or not) round-trips through
    ``encode``/``decode``. Padding is on the left, as batched generation expects. No special
    tokens are added by ``encode``; the chat template writes them.

    Returns a fresh copy on each call (callers may mutate padding side etc. freely).
    """
    import copy

    return copy.deepcopy(_cached_tokenizer())


def tiny_config(
    model_type: str = "llama",
    num_layers: int = 4,
    hidden_size: int = 64,
) -> PretrainedConfig:
    """The HF config of a tiny model: 4 heads, 2 KV heads (GQA), MLP width 2x hidden.

    Args:
        model_type: one of :data:`TINY_FAMILIES`.
        num_layers: decoder blocks (L).
        hidden_size: model width d; must be divisible by 4 (the head count) and give an even
            head dimension (rotary embeddings).
    """
    if model_type not in _ARCHITECTURES:
        raise ValueError(
            f"model_type={model_type!r} is not a tiny family; use one of {TINY_FAMILIES}"
        )
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    if hidden_size % NUM_HEADS or (hidden_size // NUM_HEADS) % 2:
        raise ValueError(
            f"hidden_size={hidden_size} must be a multiple of {2 * NUM_HEADS} "
            f"({NUM_HEADS} heads with an even head dimension)"
        )
    tok = _cached_tokenizer()
    config_cls, _ = _ARCHITECTURES[model_type]
    kwargs = dict(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_KV_HEADS,
        head_dim=hidden_size // NUM_HEADS,
        max_position_embeddings=MAX_POSITIONS,
        initializer_range=INIT_STD,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    if model_type == "mistral":
        kwargs["sliding_window"] = None
    config = config_cls(**kwargs)
    config._attn_implementation = "sdpa"
    return config


def tiny_model(
    model_type: str = "llama",
    num_layers: int = 4,
    hidden_size: int = 64,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> PreTrainedModel:
    """A frozen, randomly initialised causal LM of the given family.

    Weights (N(0, 0.15) for matrices, HF defaults for norms and biases) depend only on
    ``(model_type, num_layers, hidden_size, seed)``; the global torch RNG is left untouched.
    The model is in eval mode with ``requires_grad=False`` everywhere, and its
    ``generation_config`` makes ``model.generate`` greedy with the tokenizer's pad/eos ids.

    Args:
        model_type: one of :data:`TINY_FAMILIES`.
        num_layers: decoder blocks (L).
        hidden_size: model width d.
        seed: init seed.
        dtype: parameter dtype.
    """
    config = tiny_config(model_type, num_layers, hidden_size)
    _, model_cls = _ARCHITECTURES[model_type]
    with torch.random.fork_rng(devices=[]):
        # Offset by family so that llama and mistral (same parameter layout) differ.
        torch.manual_seed(seed + 1_000_003 * TINY_FAMILIES.index(model_type))
        model = model_cls(config)
    model.to(dtype)
    model.eval()
    model.requires_grad_(False)
    tok = _cached_tokenizer()
    model.generation_config = GenerationConfig(
        do_sample=False,
        num_beams=1,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    logger.debug("built tiny %s: L=%d d=%d seed=%d", model_type, num_layers, hidden_size, seed)
    return model
