"""Test doubles that hold a model: a picklable loader of a tiny random HF model, and the
layer-removed reference model of a skip path. Imports torch."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from drllm.models.loading import LoadedModel
from drllm.models.tiny import tiny_model, tiny_tokenizer
from drllm.paths import LayerPath


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


def without_layers(model: Any, path: LayerPath) -> Any:
    """A deep copy of the HF ``model`` with the skipped blocks removed from ``model.model.layers``.

    The reference a skip-only path must match (``path`` holds only 0 and 1).
    """
    assert all(d in (0, 1) for d in path)
    keep = [i for i, d in enumerate(path) if d == 1]
    trimmed = copy.deepcopy(model)
    trimmed.model.layers = torch.nn.ModuleList([trimmed.model.layers[i] for i in keep])
    trimmed.config.num_hidden_layers = len(keep)
    if getattr(trimmed.config, "layer_types", None) is not None:
        trimmed.config.layer_types = [trimmed.config.layer_types[i] for i in keep]
    for new_idx, layer in enumerate(trimmed.model.layers):
        layer.self_attn.layer_idx = new_idx
    return trimmed


#: Prompts of mixed lengths and content for executor and engine equivalence tests (tiny models).
SAMPLE_PROMPTS = [
    "The quick brown fox jumps over",
    "2+2=",
    "Once upon a time, in a land far away, there lived",
    "Q: What is the capital of France?\nA:",
]
