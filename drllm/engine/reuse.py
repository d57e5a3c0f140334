"""The engine's cache manager: per-question reuse of the default path's work, exact.

A search asks one question along dozens of paths, each one to three edits from the default
path. Per :class:`~drllm.engine.request.ReuseKey` (prompt, settings, grader stop rule) the
manager keeps a :class:`~drllm.models.prefix.PrefixEntry`: the default response and the
states entering every block over prompt + response, captured while the default path itself
generated (the engine's capture, :class:`Capture`). An edited request then resumes from it
(:mod:`drllm.models.resume`): from its first edited block, or from a stored edited path that
shares more leading blocks (``reuse_paths``), verifying the default response as a draft
(``draft``) and later drafts from other paths' responses (``draft_pool``). Entries live in a
:class:`~drllm.models.prefix.PrefixCache` within a memory budget; the default generation of an
evicted entry is kept, and the entry is rebuilt by one teacher-forced pass if asked again.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, Optional

import torch

from drllm.engine.request import FinalFn, ReuseKey
from drllm.models.drafts import accept
from drllm.models.prefix import PathStates, PrefixCache, PrefixEntry, record_prefixes
from drllm.models.resume import ResumeRow
from drllm.types import Generation

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReuseOptions:
    """The reuse levers (all exact; see :class:`drllm.distributed.config.WorkAvoidance`).

    Attributes:
        draft: verify the default response as a draft along edited paths.
        draft_tokens: draft tokens verified at most (None: adaptive, whole response first).
        draft_pool: with ``draft``, later decode steps verify other paths' responses.
        reuse_paths: keep edited paths' prompt states for paths sharing more leading blocks.
        paths_per_question: edited paths' states kept per question at most.
        cache_bytes: memory budget of the entries (bytes).
        max_defaults: default generations kept (after their entries are evicted).
    """

    draft: bool = False
    draft_tokens: Optional[int] = None
    draft_pool: bool = True
    reuse_paths: bool = True
    paths_per_question: int = 8
    cache_bytes: int = 1 << 30
    max_defaults: int = 4096


class Capture:
    """The default path's states of one row, gathered during its own generation.

    ``prompt[i]``: ``[P, d]`` entering block ``i`` at prefill; ``steps``: per decode step,
    ``[L, d]`` entering each block at the fed token.
    """

    def __init__(self, num_layers: int) -> None:
        self.prompt: list[Optional[torch.Tensor]] = [None] * num_layers
        self.steps: list[torch.Tensor] = []

    def hidden(self) -> torch.Tensor:
        """``[L, fed, d]``: the prompt's states, then each fed response token's."""
        prompt = torch.stack(self.prompt)  # type: ignore[arg-type]
        if not self.steps:
            return prompt.contiguous()
        return torch.cat([prompt, torch.stack(self.steps, dim=1)], dim=1).contiguous()


def default_generation(entry: PrefixEntry, num_layers: int) -> Generation:
    """The default path's generation an entry holds."""
    return Generation(text=entry.text, token_ids=entry.tokens,
                      layers_executed=num_layers * len(entry.tokens),
                      prompt_tokens=len(entry.prompt), finish_reason=entry.reason)


class CacheManager:
    """Entries per reuse key, resume plans for edited rows, and what their results teach.

    Args:
        stepper: the executor (teacher-forced rebuild of evicted entries).
        options: the reuse levers.
    """

    def __init__(self, stepper: Any, options: ReuseOptions = ReuseOptions()) -> None:
        self.stepper = stepper
        self.options = options
        self.prefixes = PrefixCache(int(options.cache_bytes))
        self._defaults: OrderedDict[ReuseKey, Generation] = OrderedDict()
        #: Edited rows resumed: how many, how many from another edited path's states, prompt
        #: blocks reused of all, draft tokens verified and accepted, entries rebuilt.
        self.counts: Counter[str] = Counter()

    def entry(self, key: ReuseKey) -> Optional[PrefixEntry]:
        """The key's entry: stored, or rebuilt (one teacher-forced pass) from the default
        generation of an evicted one; None if the default path has not generated yet."""
        found = self.prefixes.get(key)
        if found is not None:
            return found
        gen = self._defaults.get(key)
        if gen is None:
            return None
        entry = record_prefixes(self.stepper, [list(key.prompt)], [gen.token_ids],
                                [gen.finish_reason], [gen.text])[0]
        self.counts["rebuilt"] += 1
        self.prefixes.put(key, entry)
        return entry

    def store_default(self, key: ReuseKey, entry: PrefixEntry, gen: Generation) -> None:
        """Keep the default path's entry (captured during its generation) and generation."""
        self.prefixes.put(key, entry)
        self._defaults[key] = gen
        self._defaults.move_to_end(key)
        while len(self._defaults) > self.options.max_defaults:
            self._defaults.popitem(last=False)

    def resume_row(self, entry: PrefixEntry, path: tuple[int, ...],
                   final: Optional[FinalFn]) -> ResumeRow:
        """How an edited row resumes: from the stored path sharing the most leading blocks
        with it (no draft), or from the default path with the default response as a draft
        while verifications of this question accept tokens (:meth:`PrefixEntry.drafting_pays`).
        """
        opt = self.options
        pool = opt.draft and opt.draft_pool
        base, start = entry.base_for(path) if opt.reuse_paths else (None, 0)
        if base is not None and not (opt.draft and entry.drafting_pays()):
            return ResumeRow(path, entry, 0, final, pool=pool, base=base, start=start)
        draft = 0
        if opt.draft:
            draft = entry.draft_length()
            if opt.draft_tokens is not None:
                draft = min(draft, opt.draft_tokens)
        return ResumeRow(path, entry, draft, final, pool=pool)

    def resumed(self, key: ReuseKey, row: ResumeRow, gen: Generation,
                states: Optional[PathStates]) -> None:
        """What a finished resumed row teaches the entry: its response (a draft for later
        rows), how much of its draft was accepted, its prompt states."""
        entry = row.entry
        entry.remember(gen.token_ids)
        counts = self.counts
        counts["rows"] += 1
        counts["from_path"] += row.base is not None
        counts["prompt_blocks_reused"] += row.begin
        counts["prompt_blocks"] += len(row.path)
        if row.draft:
            accepted = accept(gen.token_ids, entry.tokens[: row.draft])
            entry.note_draft(accepted)
            counts["draft_tokens"] += row.draft
            counts["draft_accepted"] += accepted
        if states is not None:
            entry.add_path(states, self.options.paths_per_question)
        self.prefixes.refit(key)

    def stats(self) -> dict[str, Any]:
        return {"prefix_cache": self.prefixes.stats(), "resumed": dict(self.counts)}

    def clear(self) -> None:
        self.prefixes.clear()
        self._defaults.clear()
