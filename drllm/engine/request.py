"""What enters the engine and what comes out: frozen requests, typed reuse keys, results."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from drllm.types import Generation

#: ``final(text) -> bool``: no continuation of ``text`` can change the row's grade.
FinalFn = Callable[[str], bool]


@dataclass(frozen=True)
class Settings:
    """Generation settings of a request (greedy decoding).

    Attributes:
        max_new_tokens: generated tokens at most.
        stop_strings: the row stops once its text contains one; the text is cut before it.
    """

    max_new_tokens: int = 64
    stop_strings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        object.__setattr__(self, "stop_strings", tuple(self.stop_strings))


@dataclass(frozen=True)
class ReuseKey:
    """What one reuse-cache entry answers: one question's prompt under one stop rule.

    Two requests share the default path's states (and drafts, and edited paths' states) only
    if their keys are equal: the same prompt ids, generation settings and grader stop rule.

    Attributes:
        question: the example id (with a choice order, e.g. ``"q17/1"``); names the entry.
        prompt: the prompt token ids.
        settings: the generation settings.
        stop_rule: names the grader stop predicate (e.g. the grader and answer prefix), ""
            when the request has none.
    """

    question: str
    prompt: tuple[int, ...]
    settings: Settings
    stop_rule: str = ""


@dataclass(frozen=True)
class EngineRequest:
    """One greedy generation along one path.

    Attributes:
        ids: prompt token ids.
        path: ``L`` decisions (0 skip, 1 execute, 2 repeat).
        settings: generation settings.
        final: grader stop predicate (the row stops with reason ``"grader"``) or None.
        reuse: the reuse-cache key, or None (no reuse: a plain generation).
    """

    ids: tuple[int, ...]
    path: tuple[int, ...]
    settings: Settings = Settings()
    final: Optional[FinalFn] = None
    reuse: Optional[ReuseKey] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", tuple(int(t) for t in self.ids))
        object.__setattr__(self, "path", tuple(int(d) for d in self.path))
        if self.reuse is not None and (self.reuse.prompt != self.ids
                                       or self.reuse.settings != self.settings):
            raise ValueError("a request's reuse key must hold its own prompt and settings")

    @property
    def is_default(self) -> bool:
        return all(d == 1 for d in self.path)


@dataclass(frozen=True)
class EngineResult:
    """A finished request.

    Attributes:
        request_id: the id :meth:`Engine.submit` returned.
        generation: its generation (tokens, text, finish reason, blocks executed).
    """

    request_id: int
    generation: Generation
