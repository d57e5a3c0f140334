"""The search job's prior plan: uniform is no prior, layer importance is measured once on the
first calibration prompts (in process here) and shared by every tree."""

from __future__ import annotations

import pytest

from drllm.distributed.prior_plan import build_prior_plan
from drllm.models.executor import PathExecutor
from drllm.models.importance import layer_importance
from drllm.models.loading import ModelSpec
from drllm.models.tiny import tiny_model, tiny_tokenizer
from drllm.search import BlockPrior, MCTSConfig
from drllm.types import Example


def _examples(n: int) -> list[Example]:
    return [Example(f"q{i}", "toy", "train", f"What is {i} + {i}?",
                    ({"role": "user", "content": f"What is {i} + {i}?"},), str(2 * i), "exact")
            for i in range(n)]


def test_uniform_plan_is_no_prior() -> None:
    plan = build_prior_plan(MCTSConfig(), _examples(2), lambda e: e.prompt, model_spec=None)
    assert plan(_examples(1)[0]) is None and plan.describe()["prior"] == "uniform"


def test_layer_importance_is_measured_on_the_first_prompts(tmp_path) -> None:
    model, tok = tiny_model("llama", num_layers=4), tiny_tokenizer()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    examples = _examples(5)
    plan = build_prior_plan(MCTSConfig(prior="layer_importance"), examples, lambda e: e.prompt,
                            model_spec=ModelSpec(name=str(tmp_path)), calibration_examples=3,
                            in_process=True)
    executor = PathExecutor(model, tok)
    want = layer_importance(executor, executor.encode([e.prompt for e in examples[:3]]))
    assert plan.importance == pytest.approx(want, abs=1e-5)
    assert plan.calibration_examples == 3
    assert isinstance(plan(examples[4]), BlockPrior) and plan(examples[0]) is plan(examples[4])


def test_router_prior_needs_a_checkpoint() -> None:
    with pytest.raises(ValueError, match="needs prior.checkpoint"):
        build_prior_plan(MCTSConfig(prior="router"), _examples(2), lambda e: e.prompt,
                         model_spec=None)
