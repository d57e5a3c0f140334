"""``bench gpu`` on CPU with the tiny Llama shape (what CI runs; GPUs run 1B/3B/8B)."""

from __future__ import annotations

import torch

from drllm.bench.gpu import IdTokenizer, _paths, build_model, run_shape


def test_tiny_shape_on_cpu_matches_hf_and_reports_the_split() -> None:
    torch.set_num_threads(1)
    result = run_shape("tiny", batch=3, prompt_tokens=16, max_new_tokens=5, device="cpu",
                       dtype_name="float32")
    assert result["rows_matching_hf"] == "3/3"
    for run in ("hf", "engine_execute", "engine_edited"):
        assert result[run]["evals_s"] > 0
    assert result["engine_execute"]["prefill_s"] > 0 and result["engine_execute"]["decode_s"] > 0
    assert result["num_layers"] == 4 and "largest_batch" not in result


def test_edited_paths_skip_and_repeat_and_eos_is_off() -> None:
    paths = _paths(8, 4, edited=True)
    assert [sum(p) for p in paths] == [6, 9, 7, 8]
    model = build_model("tiny", "cpu", torch.float32)
    assert model.generation_config.eos_token_id is None
    assert IdTokenizer().decode([3, 4]) == "3 4" and IdTokenizer()("3 4")["input_ids"] == [3, 4]
