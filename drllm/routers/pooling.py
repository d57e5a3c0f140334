"""Which prompt tokens the routers pool: the whole prompt, or the question only.

A chat prompt is the chat template's shared prefix (system prompt, ``<|im_start|>user\\n``), the
question, and the template's shared suffix (``<|im_end|>\\n<|im_start|>assistant\\n``). The
states over the shared tokens carry no information about the question, only about which blocks
ran before block ``i`` -- a fingerprint of the path the routers can memorise. With
``mode="question"`` a row pools only the tokens between the two:

* :meth:`PoolingSpec.from_tokenizer` renders a one-message chat around a sentinel and keeps
  the template's token ids before (``prefix``) and after (``suffix``) it;
* :meth:`PoolingSpec.spans` gives, per row, how many leading tokens match ``prefix`` and how
  many trailing tokens match ``suffix`` (a prompt without the template strips nothing; a row
  keeps at least one token);
* :func:`span_mask` turns a left-padded attention mask and the spans into the pooling mask.

The spec is stored with the features (``_features.json``) and in the router checkpoint, and the
feature pass and routed inference both pool through it, so they see the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import Tensor

POOL_MODES = ("prompt", "question")
_SENTINEL = "\x00drllm-question\x00"

Span = tuple[int, int]
"""Per row: ``(leading, trailing)`` real tokens excluded from pooling."""


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@dataclass(frozen=True)
class PoolingSpec:
    """What the routers pool.

    Attributes:
        mode: ``"prompt"`` (every prompt token) or ``"question"`` (the template's shared
            prefix and suffix excluded).
        prefix / suffix: the template's token ids around the question (``question`` only).
    """

    mode: str = "prompt"
    prefix: tuple[int, ...] = ()
    suffix: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in POOL_MODES:
            raise ValueError(f"pooling mode must be one of {list(POOL_MODES)}, got {self.mode!r}")
        object.__setattr__(self, "prefix", tuple(int(t) for t in self.prefix))
        object.__setattr__(self, "suffix", tuple(int(t) for t in self.suffix))

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, mode: str = "question") -> "PoolingSpec":
        """The spec of ``mode`` for ``tokenizer``'s chat template.

        Raises:
            ValueError: ``mode="question"`` and the tokenizer has no chat template.
        """
        if mode == "prompt":
            return cls()
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("pooling over the question needs a tokenizer with a chat template; "
                             "use pool=prompt for a base model")
        text = tokenizer.apply_chat_template([{"role": "user", "content": _SENTINEL}],
                                             add_generation_prompt=True, tokenize=False)
        before, _, after = text.partition(_SENTINEL)
        encode = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
        return cls(mode, tuple(encode(before)), tuple(encode(after)))

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]]) -> "PoolingSpec":
        if not data:
            return cls()
        return cls(str(data.get("mode", "prompt")), tuple(data.get("prefix", ())),
                   tuple(data.get("suffix", ())))

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "prefix": list(self.prefix), "suffix": list(self.suffix)}

    def spans(self, token_ids: Sequence[Sequence[int]]) -> Optional[list[Span]]:
        """Per row ``(leading, trailing)`` tokens to exclude; ``None`` for ``mode="prompt"``."""
        if self.mode == "prompt":
            return None
        out = []
        for ids in token_ids:
            ids = list(ids)
            lead = _common_prefix(ids, self.prefix)
            trail = _common_prefix(ids[::-1], self.suffix[::-1])
            if lead + trail >= len(ids):  # nothing left: pool the whole prompt
                lead = trail = 0
            out.append((lead, trail))
        return out


def span_mask(mask: Tensor, spans: Optional[Sequence[Span]]) -> Tensor:
    """The pooling mask ``[B, T]``: real tokens of ``mask`` minus each row's excluded span.

    Rows are real tokens wherever ``mask`` is nonzero (left padding or any other); ``spans``
    ``None`` returns ``mask`` unchanged.
    """
    if spans is None:
        return mask
    if len(spans) != mask.shape[0]:
        raise ValueError(f"{len(spans)} spans for {mask.shape[0]} rows")
    real = mask.to(torch.bool)
    rank = real.long().cumsum(dim=1) - 1
    n = real.sum(dim=1, keepdim=True)
    lead = torch.tensor([s[0] for s in spans], device=mask.device).unsqueeze(1)
    trail = torch.tensor([s[1] for s in spans], device=mask.device).unsqueeze(1)
    return real & (rank >= lead) & (rank < n - trail)
