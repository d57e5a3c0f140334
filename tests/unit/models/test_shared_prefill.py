"""Choices scored after one shared prefill equal a plain teacher-forced forward per choice."""

from __future__ import annotations

import pytest
import torch

from drllm.inference.scoring import fit_window, score_continuations
from drllm.models.executor import PathExecutor
from drllm.models.shared_prefill import score_after_prefix
from drllm.models.tiny import tiny_model, tiny_tokenizer
from drllm.paths import LayerPath


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "mistral"])
def test_shared_prefill_equals_plain_scoring(family: str) -> None:
    executor = PathExecutor(tiny_model(family, 4, 64, seed=1).eval(), tiny_tokenizer())
    g = torch.Generator().manual_seed(0)
    contexts = [torch.randint(5, 200, (n,), generator=g).tolist() for n in (7, 12, 7, 3)]
    rows = []
    for i, ctx in enumerate(contexts):
        path = LayerPath([1, 0, 2, 1] if i % 2 else [1, 1, 1, 1])
        for k in range(3):
            cont = torch.randint(5, 200, (1 + (i + k) % 4,), generator=g).tolist()
            rows.append((ctx, cont, path))
    got = score_after_prefix(executor, *zip(*rows), batch_size=3)
    want = score_continuations(executor, [fit_window(c, x, 10_000) for c, x, _ in rows],
                               [p for _, _, p in rows], 4, progress=False)
    assert got == pytest.approx([s for s, _ in want], abs=1e-4)


def test_bad_rows_are_named() -> None:
    executor = PathExecutor(tiny_model("llama", 4, 64, seed=1).eval(), tiny_tokenizer())
    with pytest.raises(ValueError, match="row 0"):
        score_after_prefix(executor, [[5]], [[]], [LayerPath.default(4)])
