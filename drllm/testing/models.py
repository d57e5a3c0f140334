"""Test doubles that hold a model: a picklable loader of a tiny random HF model.

Imports torch only when a loader is called.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from drllm.models.loading import LoadedModel
from drllm.models.tiny import tiny_model, tiny_tokenizer


@dataclass(frozen=True)
class TinyModelLoader:
    """Picklable loader of a tiny random model (:mod:`drllm.models.tiny`) for dry runs and tests.

    Pass as ``EvaluatorSpec(ExecutorEvaluator, {"model": TinyModelLoader(...)})``; every actor builds
    the same seeded weights.
    """

    model_type: str = "llama"
    num_layers: int = 4
    hidden_size: int = 64
    seed: int = 0

    def __call__(self) -> Any:
        model = tiny_model(self.model_type, self.num_layers, self.hidden_size, self.seed)
        return LoadedModel(
            model=model, tokenizer=tiny_tokenizer(),
            model_id=f"tiny-{self.model_type}-L{self.num_layers}-d{self.hidden_size}-s{self.seed}",
            num_layers=self.num_layers, hidden_size=self.hidden_size, model_type=self.model_type,
        )
