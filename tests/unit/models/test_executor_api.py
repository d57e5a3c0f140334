"""Executor contract beyond the golden equivalences: validation, block hook, cache, masks."""

from __future__ import annotations

import pytest
import torch

from drllm.models.buckets import plan_buckets
from drllm.models.executor import PathExecutor
from drllm.models.kv import SlotKVCache
from drllm.models.masks import build_mask
from drllm.models.tiny import tiny_model, tiny_tokenizer
from drllm.paths import InvalidPathError, LayerPath, PathConstraints

L = 6
PROMPTS = ["The quick brown fox", "2+2=", "Once upon a time there was a"]
PATHS = [LayerPath.parse("EERESE"), LayerPath.parse("SERRES"), LayerPath.parse("RSSERE")]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def ex(tok):
    return PathExecutor(tiny_model("llama", num_layers=L), tok)


def test_attributes(ex):
    assert ex.num_layers == L and ex.hidden_size == 64
    assert ex.device == torch.device("cpu") and ex.dtype == torch.float32
    assert ex.eos_token_ids == frozenset({3})


@pytest.mark.parametrize(
    "bad,match",
    [
        ([1] * (L - 1), "row 1 .*5 decisions but the model has 6 blocks"),
        ([1, 1, 3, 1, 1, 1], "row 1 .*decision 3"),
        ([1, 0, 0, 0, 1, 1], "row 1 .*skips 3 consecutive blocks"),
    ],
)
def test_invalid_paths_rejected_naming_the_row(ex, bad, match):
    with pytest.raises(InvalidPathError, match=match):
        ex.generate(PROMPTS[:2], [LayerPath.default(L), bad], max_new_tokens=2)
    with pytest.raises(ValueError, match=match):
        ex.logits(torch.tensor([[5, 6], [7, 8]]), None, [LayerPath.default(L), bad])


def test_path_count_and_constraints(tok):
    ex = PathExecutor(tiny_model("llama", num_layers=L), tok, PathConstraints(max_cost_factor=1.0))
    with pytest.raises(ValueError, match="got 1 paths for 2 prompts"):
        ex.generate(PROMPTS[:2], [LayerPath.default(L)], max_new_tokens=2)
    with pytest.raises(InvalidPathError, match="row 0 .*exceeds the cap 6"):
        ex.generate(PROMPTS[:1], [LayerPath.parse("EEREEE")], max_new_tokens=2)


def test_invalid_prompts_rejected(ex):
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        ex.generate(["hi", ""], max_new_tokens=2)
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        ex.generate([[]], max_new_tokens=2)
    with pytest.raises(ValueError, match="prompt 1 has 600 tokens.*max_position_embeddings=512"):
        ex.generate([[5], [5] * 600], max_new_tokens=2)
    with pytest.raises(ValueError, match="prompt 0 has 500 tokens; with max_new_tokens=20"):
        ex.generate([[5] * 500], max_new_tokens=20)
    with pytest.raises(ValueError, match="prompt 0: token id 9999 outside the vocabulary"):
        ex.generate([[5, 9999]], max_new_tokens=2)
    with pytest.raises(TypeError, match="not one string"):
        ex.encode("hello")
    with pytest.raises(TypeError, match="mix strings and token-id"):
        ex.generate(["hi", [5, 6]], max_new_tokens=2)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        ex.generate(["hi"], max_new_tokens=0)
    with pytest.raises(ValueError, match="row 1 has no real token"):
        ex.logits(torch.tensor([[5, 6], [7, 8]]), torch.tensor([[1, 1], [0, 0]]), None)
    assert ex.generate([], max_new_tokens=2) == []


def test_text_and_ids_prompts_agree(ex, tok):
    ids = [tok(p)["input_ids"] for p in PROMPTS]
    assert ex.encode(PROMPTS) == ids
    by_text = ex.generate(PROMPTS, PATHS, max_new_tokens=5)
    assert by_text == ex.generate(ids, PATHS, max_new_tokens=5)


def test_block_hook_decisions_equal_fixed_path(ex):
    seen = []

    def hook(block, hidden, mask):
        seen.append((block, tuple(hidden.shape), mask.sum().item()))
        return [p[block] for p in PATHS]

    routed = ex.generate(PROMPTS, max_new_tokens=6, block_hook=hook)
    fixed = ex.generate(PROMPTS, PATHS, max_new_tokens=6)
    assert routed == fixed
    widths = {shape[1] for _, shape, _ in seen}
    assert [b for b, _, _ in seen] == list(range(L)) and len(widths) == 1
    assert all(shape[0] == 3 and shape[2] == 64 for _, shape, _ in seen)
    n_real = sum(len(ex.encode([p])[0]) for p in PROMPTS)
    assert all(n == n_real for _, _, n in seen)
    # The hook sees the states entering each block: they agree with a fixed-path prefill.
    ids = [ex.encode([p])[0] for p in PROMPTS]
    states = {}
    width = max(map(len, ids))
    input_ids = torch.tensor([[0] * (width - len(s)) + s for s in ids])
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in ids])

    def observe(block, hidden, m):
        states[block] = hidden.clone()

    out = ex.prefill_states(input_ids, mask, PATHS, block_hook=observe)
    assert out.paths == tuple(PATHS) and out.hidden.shape == (3, width, 64)
    torch.testing.assert_close(states[0], ex.model.model.embed_tokens(input_ids))
    chosen = ex.prefill_states(input_ids, mask, None, block_hook=lambda b, h, m: torch.tensor(
        [p[b] for p in PATHS]))
    assert chosen.paths == tuple(PATHS)
    torch.testing.assert_close(chosen.hidden, out.hidden)
    routed_logits = ex.logits(input_ids, mask, None,
                              block_hook=lambda b, h, m: [p[b] for p in PATHS])
    torch.testing.assert_close(routed_logits, ex.logits(input_ids, mask, PATHS))


def test_block_hook_invalid_decisions_rejected(ex):
    with pytest.raises(InvalidPathError, match="row 1, block 0: decision 5"):
        ex.generate(PROMPTS, max_new_tokens=2, block_hook=lambda b, h, m: [1, 5, 1])
    with pytest.raises(InvalidPathError, match="returned 2 decisions for block 0"):
        ex.generate(PROMPTS, max_new_tokens=2, block_hook=lambda b, h, m: [1, 1])
    with pytest.raises(InvalidPathError, match="row 2: the block hook chose path SSSEEE"):
        ex.generate(PROMPTS, max_new_tokens=2,
                    block_hook=lambda b, h, m: [1, 1, 0] if b < 3 else None)


def test_finished_rows_leave_the_batch(ex, monkeypatch):
    """A row that stops early is dropped from later forward passes and from the cache."""
    free = ex.generate(PROMPTS, PATHS, max_new_tokens=8)
    stop = free[1].text[:2]
    assert stop not in free[0].text and stop not in free[2].text
    batch_sizes = []
    run = ex.runner.run

    def spy(hidden, *args, **kwargs):
        batch_sizes.append(hidden.shape[0])
        return run(hidden, *args, **kwargs)

    monkeypatch.setattr(ex.runner, "run", spy)
    outs = ex.generate(PROMPTS, PATHS, max_new_tokens=8, stop_strings=[stop])
    assert outs[1].finish_reason == "stop" and outs[1].text == ""
    k = len(outs[1].token_ids)
    assert batch_sizes == [3] * k + [2] * (8 - k)  # one forward pass per token
    assert outs[0] == free[0] and outs[2] == free[2]


def test_slot_cache_compaction_and_growth():
    cache = SlotKVCache(capacity=2, grow=2)
    rows = {(0, 0): torch.tensor([0, 1, 2]), (0, 1): torch.tensor([1, 2]),
            (1, 0): torch.tensor([0])}
    for step in range(3):  # 3 positions: grows past capacity 2
        for (block, pass_index), r in rows.items():
            cache.activate(block, pass_index, r)
            k = torch.stack([torch.full((1, 1, 2), 10.0 * row + step) for row in r.tolist()])
            keys, values = cache.update(k, -k, block)
            assert keys.shape == (len(r), 1, step + 1, 2)
    assert cache.get_seq_length() == 3 and len(cache) == 3
    cache.compact(torch.tensor([False, True, True]))
    assert len(cache) == 2 and cache.slot_rows(1, 0) is None
    assert cache.slot_rows(0, 0).tolist() == [0, 1] and cache.slot_rows(0, 1).tolist() == [0, 1]
    cache.activate(0, 1)
    keys, values = cache.update(torch.zeros(2, 1, 1, 2), torch.zeros(2, 1, 1, 2))
    assert keys[:, 0, :3, 0].tolist() == [[10.0, 11.0, 12.0], [20.0, 21.0, 22.0]]
    torch.testing.assert_close(values[:, :, :3], -keys[:, :, :3])
    with pytest.raises(RuntimeError, match="no active slot"):
        cache.update(torch.zeros(2, 1, 1, 2), torch.zeros(2, 1, 1, 2))


def test_masks_left_padding_window_and_formats():
    valid = torch.tensor([[False, True, True, True], [True, True, True, True]])
    mask = build_mask(valid, 4, window=None, attn_implementation="sdpa", dtype=torch.float32,
                      all_valid=False)
    assert mask.shape == (2, 1, 4, 4) and mask.dtype == torch.bool
    assert mask[0, 0].tolist() == [
        [True, False, False, False],  # pad query: itself only, never an empty row
        [False, True, False, False],
        [False, True, True, False],
        [False, True, True, True],
    ]
    assert mask[1, 0].tolist() == torch.ones(4, 4).tril().bool().tolist()
    windowed = build_mask(valid[1:], 4, window=2, attn_implementation="sdpa",
                          dtype=torch.float32, all_valid=True)
    assert windowed[0, 0, 3].tolist() == [False, False, True, True]
    eager = build_mask(valid, 1, window=None, attn_implementation="eager", dtype=torch.float32,
                       all_valid=False)
    assert eager.shape == (2, 1, 1, 4) and eager[0, 0, 0, 0] == torch.finfo(torch.float32).min
    assert eager[0, 0, 0, 1:].tolist() == [0.0, 0.0, 0.0]
    for q in (1, 4):
        assert build_mask(valid[1:], q, window=None, attn_implementation="sdpa",
                          dtype=torch.float32, all_valid=True) is None


def test_plan_buckets_known_answers():
    assert plan_buckets([], 10) == []
    assert plan_buckets([5, 5, 5], 0) == [(0, 3)]
    assert plan_buckets([1, 2, 3], 0) == [(0, 1), (1, 2), (2, 3)]
    assert plan_buckets([1, 2, 3], 10**6) == [(0, 3)]
    # 8 short + 8 long rows: splitting saves 8 * (200 - 100) = 800 positions > overhead 128.
    assert plan_buckets([100] * 8 + [200] * 8, 128) == [(0, 8), (8, 16)]
    assert plan_buckets([100] * 8 + [110] * 8, 128) == [(0, 16)]  # saves 80 < 128
    with pytest.raises(ValueError, match="ascending"):
        plan_buckets([3, 1], 0)


def test_slot_cache_concat_right_aligns_groups():
    def filled(rows_per_slot, length, base):
        cache = SlotKVCache(capacity=length)
        for key, rows in rows_per_slot.items():
            cache.activate(*key, torch.tensor(rows))
            k = torch.stack([torch.arange(length, dtype=torch.float32) + base + 100 * r
                             for r in rows])[:, None, :, None]
            cache.update(k, k + 0.5, key[0])
        return cache

    a = filled({(0, 0): [0, 1], (0, 1): [1]}, 2, 0)  # 2 rows, 2 positions, row 1 repeats
    b = filled({(0, 0): [0, 1, 2], (1, 0): [2]}, 3, 1000)  # 3 rows, 3 positions
    merged = SlotKVCache.concat([(a, 2), (b, 3)], capacity=8)
    assert merged.slot_rows(0, 0).tolist() == [0, 1, 2, 3, 4]
    assert merged.slot_rows(0, 1).tolist() == [1]
    assert merged.slot_rows(1, 0).tolist() == [4]
    assert merged.get_seq_length() == 3
    merged.activate(0, 0)
    keys, values = merged.update(torch.zeros(5, 1, 1, 1), torch.zeros(5, 1, 1, 1))
    assert keys[:, 0, :, 0].tolist() == [
        [0.0, 0.0, 1.0, 0.0],  # group a: one zero pad column, then its 2 positions
        [0.0, 100.0, 101.0, 0.0],
        [1000.0, 1001.0, 1002.0, 0.0],
        [1100.0, 1101.0, 1102.0, 0.0],
        [1200.0, 1201.0, 1202.0, 0.0],
    ]
    assert values[1, 0, 1:3, 0].tolist() == [100.5, 101.5]
