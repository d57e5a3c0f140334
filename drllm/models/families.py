"""Model families: where a Hugging Face causal LM keeps the parts the edited-path executor drives.

The executor never copies modeling code. It calls the model's own modules in its own order:
``embed_tokens`` -> per-block stock decoder layers (skipped, run once, or run twice) ->
``final_norm`` -> ``lm_head``, with rotary ``(cos, sin)`` from ``rotary_emb`` and a KV cache
passed through the layer's cache keyword. A :class:`ModelFamily` says where those parts live and
what a layer call needs (cache keyword name, per-block sliding window), keyed by
``config.model_type`` in :data:`FAMILIES`.

Supported: ``llama`` (SmolLM2 is a Llama), ``qwen2``, ``qwen3``, ``mistral``. Adding a family
whose decoder follows the same layout is one registration line.
"""

from __future__ import annotations

import inspect
import logging

from torch import nn

from drllm.registry import Registry

logger = logging.getLogger(__name__)

#: Attention implementations whose masks the executor builds (4D bool for sdpa, additive for eager).
SUPPORTED_ATTENTION = ("sdpa", "eager")

#: Names the stock layers have used for their KV-cache keyword across transformers releases.
_CACHE_KWARGS = ("cache", "past_key_values", "past_key_value")

_EXECUTOR_NEEDS = (
    "a causal LM with `model.model.embed_tokens`, `model.model.layers` (decoder blocks called as "
    "`layer(hidden, attention_mask=..., position_ids=..., position_embeddings=(cos, sin), "
    "<cache>=..., use_cache=...)`), `model.model.norm`, `model.model.rotary_emb` and "
    "`model.lm_head`"
)


class UnsupportedArchitectureError(ValueError):
    """The model's architecture is not registered or lacks what the executor drives."""


class ModelFamily:
    """Accessors for a decoder-only HF causal LM laid out as ``model.model.{embed_tokens, layers,
    norm, rotary_emb}`` plus ``model.lm_head`` (the Llama layout).

    Subclasses override only what differs (e.g. sliding-window attention).
    """

    name: str = "llama"

    def decoder(self, model: nn.Module) -> nn.Module:
        """The base model (``model.model``) holding embeddings, layers, norm and rotary."""
        return model.model

    def embed_tokens(self, model: nn.Module) -> nn.Module:
        """Token embedding: ``[B, T]`` ids -> ``[B, T, d]``."""
        return self.decoder(model).embed_tokens

    def layers(self, model: nn.Module) -> nn.ModuleList:
        """The ``L`` stock decoder blocks, in order."""
        return self.decoder(model).layers

    def final_norm(self, model: nn.Module) -> nn.Module:
        """Norm before the LM head: ``[..., d]`` -> ``[..., d]``."""
        return self.decoder(model).norm

    def rotary_emb(self, model: nn.Module) -> nn.Module:
        """Rotary module: ``(x, position_ids [B, T]) -> (cos, sin)``, each ``[B, T, head_dim]``."""
        return self.decoder(model).rotary_emb

    def lm_head(self, model: nn.Module) -> nn.Module:
        """``[..., d]`` -> ``[..., V]`` logits."""
        return model.lm_head

    def sliding_window(self, model: nn.Module, block: int) -> int | None:
        """Sliding window of ``block`` (keys at distance ``< window``); None = full attention."""
        return None

    def cache_kwarg(self, model: nn.Module) -> str:
        """Name of the decoder layer's KV-cache keyword (``cache`` since transformers 5.2x)."""
        layer = self.layers(model)[0]
        params = inspect.signature(type(layer).forward).parameters
        for name in _CACHE_KWARGS:
            if name in params:
                return name
        raise UnsupportedArchitectureError(
            f"{type(layer).__name__}.forward takes none of the cache keywords {_CACHE_KWARGS}; "
            f"the executor needs {_EXECUTOR_NEEDS}"
        )

    def check(self, model: nn.Module) -> None:
        """Raise :class:`UnsupportedArchitectureError` if ``model`` lacks a part we drive."""
        getters = {
            "embed_tokens": self.embed_tokens,
            "layers": self.layers,
            "final_norm": self.final_norm,
            "rotary_emb": self.rotary_emb,
            "lm_head": self.lm_head,
        }
        for part, getter in getters.items():
            try:
                module = getter(model)
            except AttributeError as exc:
                raise UnsupportedArchitectureError(
                    f"{type(model).__name__} has no {part} where the {self.name!r} family looks "
                    f"({exc}); the executor needs {_EXECUTOR_NEEDS}"
                ) from None
            if module is None:
                raise UnsupportedArchitectureError(f"{type(model).__name__}: {part} is None")
        if len(self.layers(model)) == 0:
            raise UnsupportedArchitectureError(f"{type(model).__name__} has no decoder layers")
        self.cache_kwarg(model)


FAMILIES: Registry[type[ModelFamily]] = Registry("model family")


@FAMILIES.register("llama")
class LlamaFamily(ModelFamily):
    """Llama and Llama-layout models (SmolLM2, TinyLlama, ...): full attention in every block."""

    name = "llama"


@FAMILIES.register("mistral")
class MistralFamily(ModelFamily):
    """Mistral: every block uses ``config.sliding_window`` (``None`` = full attention)."""

    name = "mistral"

    def sliding_window(self, model: nn.Module, block: int) -> int | None:
        return getattr(model.config, "sliding_window", None)


class _LayerTypesFamily(ModelFamily):
    """Families whose config lists ``layer_types`` (``full_attention`` / ``sliding_attention``)."""

    def sliding_window(self, model: nn.Module, block: int) -> int | None:
        config = model.config
        layer_types = getattr(config, "layer_types", None)
        if layer_types is None or layer_types[block] != "sliding_attention":
            return None
        return config.sliding_window


@FAMILIES.register("qwen2")
class Qwen2Family(_LayerTypesFamily):
    """Qwen2 / Qwen2.5: sliding window only on blocks marked ``sliding_attention``."""

    name = "qwen2"


@FAMILIES.register("qwen3")
class Qwen3Family(_LayerTypesFamily):
    """Qwen3 (dense): like Qwen2, plus per-head q/k norms inside the stock attention module."""

    name = "qwen3"


def get_family(model: nn.Module) -> ModelFamily:
    """The :class:`ModelFamily` for ``model`` (looked up by ``model.config.model_type``), checked.

    Raises:
        UnsupportedArchitectureError: unknown ``model_type``, a missing part, or an attention
            implementation whose masks the executor cannot build.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise UnsupportedArchitectureError(
            f"model_type {model_type!r} ({type(model).__name__}) is not supported by the executor; "
            f"supported model types: {', '.join(FAMILIES.names())}. The executor needs "
            f"{_EXECUTOR_NEEDS}; register a ModelFamily in drllm.models.families.FAMILIES to "
            f"add one"
        )
    family = FAMILIES.get(model_type)()
    family.check(model)
    attn = getattr(config, "_attn_implementation", None) or "eager"
    if attn not in SUPPORTED_ATTENTION:
        raise UnsupportedArchitectureError(
            f"attention implementation {attn!r} is not supported; load the model with "
            f"attn_implementation in {SUPPORTED_ATTENTION} (the executor builds 4D masks for them)"
        )
    return family
