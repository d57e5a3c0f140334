"""The executor benchmark's pieces (paths, FLOP counts) and one end-to-end run on a tiny model."""

from __future__ import annotations

import json

import pytest

from drllm.bench.executor import (
    block_matmul_flops,
    random_skip_paths,
    run_executor_benchmark,
    spread_skip_path,
    useful_flops,
)
from drllm.jobs.bench import BENCHMARKS
from drllm.models.loading import LoadedModel
from drllm.models.tiny import tiny_model, tiny_tokenizer
from drllm.paths import LayerPath, validate_path


def test_paths_are_valid_skip_only_and_mixed():
    paths = random_skip_paths(30, 16, seed=0)
    assert len(paths) == 16 and len(set(paths)) > 8
    for path in paths:
        validate_path(path, 30)
        assert set(path) <= {0, 1}
    assert paths == random_skip_paths(30, 16, seed=0)
    skip = spread_skip_path(30, 6)
    validate_path(skip, 30)
    assert isinstance(skip, LayerPath) and skip.cost == 24 and skip[0] == 1
    with pytest.raises(ValueError):
        spread_skip_path(4, 4)


def test_flop_counts_known_answer():
    class Config:  # SmolLM2-135M shapes
        hidden_size, intermediate_size = 576, 1536
        num_attention_heads, num_key_value_heads, head_dim = 9, 3, 64

    linear = 576 * 576 * 2 + 2 * 576 * 192 + 3 * 576 * 1536
    assert block_matmul_flops(Config, 0) == 2 * linear
    assert block_matmul_flops(Config, 10) == 2 * linear + 4 * 576 * 10
    # 1 row, 3 prompt tokens, 2 new tokens -> 4 forward tokens, 1+2+3+4 keys, cost 5 blocks.
    assert useful_flops(Config, [3], [2], [5]) == 5 * (4 * 2 * linear + 10 * 4 * 576)


def test_benchmark_runs_end_to_end_on_a_tiny_model(shared_data):
    model = tiny_model("llama", num_layers=8)
    model.config.max_position_embeddings = 4096  # byte-level prompts are long
    loaded = LoadedModel(model=model, tokenizer=tiny_tokenizer(), model_id="tiny-llama",
                         num_layers=8, hidden_size=64, model_type="llama")
    result = run_executor_benchmark(loaded, data_root=shared_data, num_rows=4,
                                    max_new_tokens=3, skip_blocks=2, repeats=1)
    assert result["serial_match"] == 1.0 and result["hf_match"] == 1.0
    for key in ("batched_evals_per_s", "serial_evals_per_s", "speedup_vs_serial",
                "hf_batched_evals_per_s", "executor_default_evals_per_s", "overhead_ratio",
                "skip_time_ratio", "skip_cost_ratio", "useful_gflops_per_s",
                "matmul_peak_gflops", "efficiency"):
        assert result[key] > 0, key
    assert result["skip_cost_ratio"] < 1.0
    json.dumps(result)
    assert set(BENCHMARKS) >= {"executor"}
