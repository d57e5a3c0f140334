"""Golden equivalences of the edited-path executor against stock Hugging Face generation.

Tiny random models of each family (Llama, Qwen2, Qwen3, Mistral); SmolLM2 in
tests/integration/test_smollm2.py.
"""

from __future__ import annotations

import pytest
import torch

from drllm.models import kv
from drllm.models.executor import PathExecutor
from drllm.models.tiny import TINY_FAMILIES, tiny_model, tiny_tokenizer
from drllm.testing.models import SAMPLE_PROMPTS
from drllm.paths import LayerPath
from drllm.testing.models import without_layers

FAMILIES = list(TINY_FAMILIES)
L = 6
PROMPTS = SAMPLE_PROMPTS
MIXED_PATHS = [
    LayerPath.parse("EERESE"),
    LayerPath.parse("SERRES"),
    LayerPath.parse("EEEEEE"),
    LayerPath.parse("RSSERE"),
]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _model(family: str, **overrides):
    model = tiny_model(family, num_layers=L)
    for key, value in overrides.items():
        setattr(model.config, key, value)
    return model


def _hf_generate(model, tok, prompts, max_new_tokens):
    """Stock greedy generate on a left-padded batch; per row, new tokens up to the first EOS."""
    enc = tok(prompts, return_tensors="pt", padding=True)
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    eos = model.generation_config.eos_token_id
    eos = {eos} if isinstance(eos, int) else set(eos)
    rows = []
    for seq in out[:, enc.input_ids.shape[1] :].tolist():
        row = []
        for t in seq:
            row.append(t)
            if t in eos:
                break
        rows.append(row)
    return rows


@pytest.mark.parametrize("family", FAMILIES)
def test_all_execute_matches_hf_generate(family, tok):
    model = _model(family)
    ex = PathExecutor(model, tok)
    ref = _hf_generate(model, tok, PROMPTS, max_new_tokens=16)
    outs = ex.generate(PROMPTS, max_new_tokens=16)
    assert [list(o.token_ids) for o in outs] == ref
    assert len({tuple(r) for r in ref}) == len(ref), "prompts should give distinct outputs"
    for o, prompt in zip(outs, PROMPTS):
        assert o.prompt_tokens == len(tok(prompt)["input_ids"])
        assert o.text == tok.decode(list(o.token_ids), skip_special_tokens=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_length_buckets_match_one_padded_batch(family, tok):
    """Prefill in per-length buckets (overhead 0: no padding at all) changes no output."""
    model = _model(family)
    bucketed = PathExecutor(model, tok, bucket_overhead_tokens=0)
    single = PathExecutor(model, tok, bucket_overhead_tokens=10**9)
    prompts = PROMPTS + ["2+3=", "The quick brown fox jumps over the lazy dog"]
    paths = MIXED_PATHS + [LayerPath.parse("RERESE"), LayerPath.parse("EESEER")]
    assert len({len(tok(p)["input_ids"]) for p in prompts}) == 5  # 5 buckets, one has 2 rows
    assert [list(o.token_ids) for o in bucketed.generate(prompts, max_new_tokens=12)] == (
        _hf_generate(model, tok, prompts, 12)
    )
    assert bucketed.generate(prompts, paths, max_new_tokens=12) == single.generate(
        prompts, paths, max_new_tokens=12
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_skip_path_matches_model_with_layers_removed(family, tok):
    model = _model(family)
    ex = PathExecutor(model, tok)
    path = LayerPath.parse("ESSEES")
    ref = _hf_generate(without_layers(model, path), tok, PROMPTS, max_new_tokens=12)
    outs = ex.generate(PROMPTS, [path] * len(PROMPTS), max_new_tokens=12)
    assert [list(o.token_ids) for o in outs] == ref
    default = ex.generate(PROMPTS, max_new_tokens=12)
    assert [o.token_ids for o in default] != [o.token_ids for o in outs], "skips must matter"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("prefill_tokens", [1, 9])
def test_cached_decoding_matches_full_recompute(family, prefill_tokens, tok):
    model = _model(family)
    ex = PathExecutor(model, tok)
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    full = ex.logits(enc.input_ids, enc.attention_mask, MIXED_PATHS)
    cached = ex.logits(
        enc.input_ids, enc.attention_mask, MIXED_PATHS, use_cache=True,
        prefill_tokens=prefill_tokens,
    )
    real = enc.attention_mask.bool()
    assert full.shape == (len(PROMPTS), enc.input_ids.shape[1], len(tok))
    torch.testing.assert_close(cached[real], full[real], atol=1e-4, rtol=1e-4)


def test_shared_repeat_slot_would_break_cache_equivalence(tok, monkeypatch):
    """Fault injection: the published code's bug (both passes of a repeat in one slot) is caught."""
    model = _model("llama")
    ex = PathExecutor(model, tok)
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    paths = [LayerPath.parse("EEREEE")] * len(PROMPTS)
    full = ex.logits(enc.input_ids, enc.attention_mask, paths)
    activate, update = kv.SlotKVCache.activate, kv.SlotKVCache.update

    def shared_activate(self, block, pass_index, rows=None):
        activate(self, block, 0, rows)
        self.second_pass = pass_index == 1

    def overwriting_update(self, key_states, value_states, *args, **kwargs):
        if self.second_pass:  # pass 1 overwrites the positions pass 0 just wrote
            self._active.length -= key_states.shape[2]
        return update(self, key_states, value_states, *args, **kwargs)

    monkeypatch.setattr(kv.SlotKVCache, "activate", shared_activate)
    monkeypatch.setattr(kv.SlotKVCache, "update", overwriting_update)
    buggy = ex.logits(enc.input_ids, enc.attention_mask, paths, use_cache=True, prefill_tokens=4)
    real = enc.attention_mask.bool()
    assert (buggy[real] - full[real]).abs().max() > 1e-2


@pytest.mark.parametrize("family", FAMILIES)
def test_row_in_mixed_batch_matches_row_alone(family, tok):
    model = _model(family)
    ex = PathExecutor(model, tok)
    batched = ex.generate(PROMPTS, MIXED_PATHS, max_new_tokens=12)
    for prompt, path, out in zip(PROMPTS, MIXED_PATHS, batched):
        alone = ex.generate([prompt], [path], max_new_tokens=12)[0]
        assert alone == out
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    logits = ex.logits(enc.input_ids, enc.attention_mask, MIXED_PATHS)
    for row, (prompt, path) in enumerate(zip(PROMPTS, MIXED_PATHS)):
        ids = torch.tensor([tok(prompt)["input_ids"]])
        single = ex.logits(ids, None, [path])[0]
        torch.testing.assert_close(logits[row, -ids.shape[1] :], single, atol=1e-4, rtol=1e-4)
    assert len({o.token_ids for o in batched}) == len(batched)


@pytest.mark.parametrize("family", FAMILIES)
def test_layers_executed_sums_cost_over_forward_passes(family, tok):
    ex = PathExecutor(_model(family), tok)
    outs = ex.generate(PROMPTS, MIXED_PATHS, max_new_tokens=7)
    for path, out in zip(MIXED_PATHS, outs):
        n = len(out.token_ids)
        assert n == 7 if out.finish_reason == "length" else out.finish_reason == "eos"
        assert out.layers_executed == path.cost * n
    assert sum(o.layers_executed for o in outs) > 0
    assert any(o.finish_reason == "length" for o in outs)


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_eos_stops_each_row_and_matches_hf(family, tok):
    model = _model(family)
    ex = PathExecutor(model, tok)
    free = ex.generate(PROMPTS, max_new_tokens=16)
    # Make the 4th token of row 0 an EOS: row 0 then stops early, the others go on (or stop
    # wherever they emit that token), exactly as stock generate does.
    eos = free[0].token_ids[3]
    assert eos not in free[0].token_ids[:3]
    model.generation_config.eos_token_id = [eos, tok.eos_token_id]
    ex = PathExecutor(model, tok)
    outs = ex.generate(PROMPTS, max_new_tokens=16)
    assert [list(o.token_ids) for o in outs] == _hf_generate(model, tok, PROMPTS, 16)
    assert outs[0].token_ids == free[0].token_ids[:4] and outs[0].finish_reason == "eos"
    assert outs[0].layers_executed == L * 4
    assert any(o.finish_reason == "length" for o in outs[1:])
    for o, f in zip(outs, free):
        assert o.token_ids == f.token_ids[: len(o.token_ids)]


def test_stop_strings_cut_text_per_row(tok):
    ex = PathExecutor(_model("llama"), tok)
    free = ex.generate(PROMPTS, MIXED_PATHS, max_new_tokens=16)
    text = free[2].text
    stop = text[5:7]
    assert stop and stop not in text[:6]
    outs = ex.generate(PROMPTS, MIXED_PATHS, max_new_tokens=16, stop_strings=[stop, "\x00never"])
    out = outs[2]
    assert out.finish_reason == "stop"
    assert out.text == text[: text.find(stop)]
    n = len(out.token_ids)
    assert out.token_ids == free[2].token_ids[:n] and n < 16
    assert stop in tok.decode(list(out.token_ids))
    assert stop not in tok.decode(list(out.token_ids[:-1]))
    assert out.layers_executed == MIXED_PATHS[2].cost * n
    for o, f in zip(outs, free):
        if stop not in f.text:
            assert o == f


def test_batch_size_chunks_match_one_batch(tok):
    ex = PathExecutor(_model("qwen2"), tok)
    prompts = PROMPTS * 2
    paths = MIXED_PATHS + MIXED_PATHS[::-1]
    assert ex.generate(prompts, paths, max_new_tokens=6, batch_size=3) == ex.generate(
        prompts, paths, max_new_tokens=6
    )


@pytest.mark.parametrize(
    "family,overrides",
    [
        ("mistral", {"sliding_window": 8}),
        ("qwen2", {"sliding_window": 8,
                   "layer_types": ["full_attention", "sliding_attention"] * 3}),
    ],
)
def test_sliding_window_matches_hf_generate(family, overrides, tok):
    model = _model(family, **overrides)
    if "layer_types" in overrides:  # the stock model reads these at construction
        model.model.has_sliding_layers = True
        for layer, kind in zip(model.model.layers, overrides["layer_types"]):
            layer.self_attn.layer_type = kind
            layer.self_attn.sliding_window = 8 if kind == "sliding_attention" else None
    ex = PathExecutor(model, tok)
    assert ex.generate(PROMPTS, max_new_tokens=12) == ex.generate(PROMPTS, max_new_tokens=12)
    outs = ex.generate(PROMPTS, max_new_tokens=12)
    assert [list(o.token_ids) for o in outs] == _hf_generate(model, tok, PROMPTS, 12)
    full_window = PathExecutor(_model(family), tok).generate(PROMPTS, max_new_tokens=12)
    assert [o.token_ids for o in outs] != [o.token_ids for o in full_window]


def test_eager_attention_matches_hf_generate(tok):
    model = _model("llama")
    model.set_attn_implementation("eager")
    assert model.config._attn_implementation == "eager"
    ex = PathExecutor(model, tok)
    outs = ex.generate(PROMPTS, max_new_tokens=12)
    assert [list(o.token_ids) for o in outs] == _hf_generate(model, tok, PROMPTS, 12)
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    full = ex.logits(enc.input_ids, enc.attention_mask, MIXED_PATHS)
    cached = ex.logits(enc.input_ids, enc.attention_mask, MIXED_PATHS, use_cache=True)
    real = enc.attention_mask.bool()
    torch.testing.assert_close(cached[real], full[real], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_length_bucket_whose_rows_skip_every_block(family, tok):
    """A bucket where every row skips every block writes no cache slot at all. The merged
    cache must still be as wide as the longest prompt (routed inference at a low alpha makes
    such rows; this crashed with a tensor-size mismatch when that bucket was the longest)."""
    from drllm.paths import PathConstraints

    model = _model(family)
    anything = PathConstraints(max_consecutive_skips=L, min_executed=0)
    bucketed = PathExecutor(model, tok, anything, bucket_overhead_tokens=0)
    prompts = ["2+3=", "Hi", "The quick brown fox jumps over the lazy dog"]
    paths = [LayerPath.parse("EEEEEE"), LayerPath.parse("SSSSSS"), LayerPath.parse("SSSSSS")]
    batched = bucketed.generate(prompts, paths, max_new_tokens=6)
    alone = [bucketed.generate([p], [q], max_new_tokens=6)[0] for p, q in zip(prompts, paths)]
    assert batched == alone
    # Only the shortest bucket executes: the longest one has no slot, so widths differ.
    mixed = [LayerPath.parse("SSSSSS"), LayerPath.parse("ESESEE"), LayerPath.parse("SSSSSS")]
    assert bucketed.generate(prompts, mixed, max_new_tokens=6) == [
        bucketed.generate([p], [q], max_new_tokens=6)[0] for p, q in zip(prompts, mixed)]
