"""The engine: a per-step scheduler over one executor, rows joining and leaving every step.

:meth:`Engine.submit` puts a request in the waiting queue. :meth:`Engine.step`:

1. **Admit** waiting requests in arrival order while the step's token budget
   (``max_batch_tokens``: one per running row, the prompt tokens of each row prefilled) and
   ``max_rows`` allow. A request with a reuse key goes through the cache manager
   (:mod:`drllm.engine.reuse`): a default request whose entry is known is answered at once; an
   edited one resumes from the entry (a verification pass from its first edited block) or, if
   the default path has not generated yet, waits for it (which is admitted in its place). Other
   rows are prefilled, sorted by length in buckets (:mod:`drllm.models.buckets`); a prompt
   longer than ``prefill_chunk`` is prefilled alone, one chunk per step, before it joins.
2. **Decode** one token for every running row (or verify drafts, when rows have a draft
   proposer), all paths mixed per block as the executor does (:mod:`drllm.models.forward`).
3. **Finish** rows at once: a row that stops (EOS, budget, stop string, grader) returns its
   result; its compute is dropped from the batch once finished rows are a share of it
   (:data:`~drllm.models.decoding.COMPACT_FRACTION`) or when new rows join.

Default-path rows with a reuse key keep the states entering every block while they generate
(:class:`~drllm.engine.reuse.Capture`); when they finish, their keys and values are read from
the batch's cache, so the entry costs no second pass.

Exactness: every row's tokens are those of a plain greedy generation along its path (padding
is masked and positions are per row, so neighbours and join time do not matter); pinned by
``tests/unit/test_engine.py``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch

from drllm.engine.batch import drop_rows, merge_states, slot_row_kv
from drllm.engine.prefill import ChunkedPrefill, prefill_group
from drllm.engine.request import EngineRequest, EngineResult, ReuseKey, Settings
from drllm.engine.reuse import CacheManager, Capture, ReuseOptions, default_generation
from drllm.models.buckets import plan_buckets
from drllm.models.decoding import (
    COMPACT_FRACTION, DecodeState, draft_cap, drafted_step, plain_step,
)
from drllm.models.drafts import Proposer, pool_proposer
from drllm.models.forward import plan_steps
from drllm.models.prefix import PathStates, PrefixEntry
from drllm.models.resume import ResumeRow, resume_start
from drllm.models.stopping import StopRule
from drllm.paths import LayerPath
from drllm.types import Generation

logger = logging.getLogger(__name__)


@dataclass
class EngineStats:
    """Counters of an engine's life.

    Attributes:
        steps: scheduler steps; decode_steps: forward calls decoding running rows.
        prefill_tokens, decode_tokens: token positions fed by prefill / verification passes
            and by decode steps.
        rows: rows generated (fresh or resumed); answered: requests answered from the cache;
            defaults: default-path rows generated for the cache (their states captured).
        prefill_s, decode_s: seconds in prefill (and verification) and in decode steps.
        peak_rows: most rows running at once.
    """

    steps: int = 0
    decode_steps: int = 0
    prefill_tokens: int = 0
    decode_tokens: int = 0
    rows: int = 0
    answered: int = 0
    defaults: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    peak_rows: int = 0


@dataclass(eq=False)
class _Row:
    """A row generating in the engine: the requests it answers and its progress."""

    request: EngineRequest
    rule: StopRule
    rids: list[int]
    tokens: list[int] = field(default_factory=list)
    reason: Optional[str] = None
    capture: Optional[Capture] = None
    resume: Optional[ResumeRow] = None
    states: Optional[PathStates] = None
    proposer: Optional[Proposer] = None


class Engine:
    """Continuous batching over a :class:`~drllm.models.executor.PathExecutor`.

    Args:
        executor: the executor (model, paths' constraints, stop ids).
        max_batch_tokens: token positions one step may feed (running rows count one each,
            prefilled rows their prompt); a single row larger than the budget still runs.
        max_rows: rows running at once at most.
        prefill_chunk: prompts longer than this are prefilled in chunks of it, one per step.
        reuse: the reuse levers (:class:`~drllm.engine.reuse.ReuseOptions`); requests with a
            reuse key use them.
    """

    def __init__(self, executor: Any, *, max_batch_tokens: int = 4096, max_rows: int = 64,
                 prefill_chunk: int = 1024, reuse: ReuseOptions = ReuseOptions()) -> None:
        for name, value in (("max_batch_tokens", max_batch_tokens), ("max_rows", max_rows),
                            ("prefill_chunk", prefill_chunk)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.ex = executor
        self.max_batch_tokens = int(max_batch_tokens)
        self.max_rows = int(max_rows)
        self.prefill_chunk = int(prefill_chunk)
        self.cache = CacheManager(executor, reuse)
        self.stats = EngineStats()
        self._rules: dict[Settings, StopRule] = {}
        self._waiting: deque[tuple[int, EngineRequest]] = deque()
        self._blocked: dict[ReuseKey, list[tuple[int, EngineRequest]]] = {}
        self._defaults: dict[ReuseKey, _Row] = {}  # default rows generating, by key
        self._chunked: list[tuple[_Row, ChunkedPrefill]] = []
        self._rows: list[_Row] = []  # running rows, aligned with the batch rows of _state
        self._state: Optional[DecodeState] = None
        self._plan: Optional[list] = None
        self._finished: list[EngineResult] = []
        self._next_id = 0

    # ------------------------------------------------------------------ requests in and out

    def submit(self, request: EngineRequest) -> int:
        """Queue a request (checked now); its id, returned with its result."""
        self.ex._paths([request.path], 1)  # legal under the constraints
        self.ex._check_row(self._next_id, request.ids, request.settings.max_new_tokens)
        rid = self._next_id
        self._next_id += 1
        self._waiting.append((rid, request))
        return rid

    @property
    def busy(self) -> bool:
        """Whether any request is waiting, blocked or running."""
        return bool(self._waiting or self._blocked or self._chunked or self._rows
                    or self._finished)

    def run(self, requests: Sequence[EngineRequest]) -> list[Generation]:
        """Submit ``requests``, step until they are all done; their generations in order.

        If anything raises (a bad request, a grader predicate, the model), every request in
        the engine is dropped (:meth:`abort`) before the error propagates, so the engine
        stays usable (the reuse cache is kept)."""
        out: dict[int, Generation] = {}
        try:
            ids = [self.submit(r) for r in requests]
            wanted = set(ids)
            while len(out) < len(ids):
                for result in self.step():
                    if result.request_id in wanted:
                        out[result.request_id] = result.generation
        except BaseException:
            self.abort()
            raise
        return [out[i] for i in ids]

    def abort(self) -> None:
        """Drop every waiting, blocked and running request (their results never come)."""
        self._waiting.clear()
        self._blocked.clear()
        self._defaults.clear()
        self._chunked.clear()
        self._rows, self._state, self._plan = [], None, None
        self._finished = []

    def _rule(self, settings: Settings) -> StopRule:
        rule = self._rules.get(settings)
        if rule is None:
            rule = self._rules[settings] = StopRule(
                self.ex.tokenizer, self.ex.eos_token_ids, settings.max_new_tokens,
                settings.stop_strings)
        return rule

    # ------------------------------------------------------------------ the step

    @torch.inference_mode()
    def step(self) -> list[EngineResult]:
        """One scheduler step: admit, decode, finish; the results of the requests that
        finished during it."""
        self.stats.steps += 1
        budget = self.max_batch_tokens - self._active_rows()
        budget = self._advance_chunked(budget)
        self._admit(budget)
        if self._state is not None and self._active_rows():
            self._decode()
        self._compact()
        out, self._finished = self._finished, []
        return out

    def _active_rows(self) -> int:
        return sum(row.reason is None for row in self._rows)

    def _admit(self, budget: int) -> None:
        fresh: list[_Row] = []
        resumed: list[tuple[_Row, ResumeRow]] = []
        rows = len(self._rows) + len(self._chunked)
        scheduled = False
        while self._waiting:
            rid, request = self._waiting[0]
            cost = len(request.ids)
            if rows >= self.max_rows or (cost > budget and (scheduled or self._active_rows())):
                break
            self._waiting.popleft()
            kind = self._place(rid, request, fresh, resumed)
            if kind is None:
                continue
            scheduled = True
            rows += 1
            budget -= min(cost, self.prefill_chunk)
        if fresh:
            self._prefill(fresh)
        if resumed:
            self._resume(resumed)

    def _place(self, rid: int, request: EngineRequest, fresh: list, resumed: list
               ) -> Optional[str]:
        """Route one admitted request; what it costs now (None: nothing to compute)."""
        key = request.reuse
        if key is None:
            return self._new_row(request, [rid], fresh)
        if key in self._defaults:  # its default path is generating
            if request.is_default:
                self._defaults[key].rids.append(rid)
            else:
                self._blocked.setdefault(key, []).append((rid, request))
            return None
        entry = self.cache.entry(key)
        if entry is not None:
            if request.is_default:
                self.stats.answered += 1
                gen = default_generation(entry, self.ex.num_layers)
                self._finished.append(EngineResult(rid, gen))
                return None
            row = _Row(request, self._rule(request.settings), [rid])
            resumed.append((row, self.cache.resume_row(entry, request.path, request.final)))
            return "resume"
        if request.is_default:
            return self._new_row(request, [rid], fresh, capture=True)
        self._blocked.setdefault(key, []).append((rid, request))
        default = EngineRequest(request.ids, (1,) * self.ex.num_layers, request.settings,
                                request.final, key)
        return self._new_row(default, [], fresh, capture=True)

    def _new_row(self, request: EngineRequest, rids: list[int], fresh: list,
                 capture: bool = False) -> str:
        row = _Row(request, self._rule(request.settings), rids)
        if capture:
            row.capture = Capture(self.ex.num_layers)
            self.stats.defaults += 1
            self._defaults[request.reuse] = row  # type: ignore[index]
        if len(request.ids) > self.prefill_chunk:
            self._chunked.append((row, ChunkedPrefill(request.ids, request.path, row.capture)))
            return "chunked"
        fresh.append(row)
        return "prefill"

    # ------------------------------------------------------------------ prefill

    def _prefill(self, rows: list[_Row]) -> None:
        """Prefill new rows, sorted by length in buckets, and join them to the batch."""
        t0 = time.perf_counter()
        rows = sorted(rows, key=lambda r: len(r.request.ids))
        groups = plan_buckets([len(r.request.ids) for r in rows], self.ex.bucket_overhead_tokens)
        for start, end in groups:
            group = rows[start:end]
            ids = [r.request.ids for r in group]
            self.stats.prefill_tokens += len(group) * max(map(len, ids))
            self._join(group, prefill_group(self.ex, ids, [r.request.path for r in group],
                                            [r.capture for r in group]))
        self.stats.prefill_s += time.perf_counter() - t0

    def _advance_chunked(self, budget: int) -> int:
        """Feed the next chunk of each long prompt being prefilled; join the complete ones."""
        for row, item in list(self._chunked):
            if budget <= 0 and (self._rows or item is not self._chunked[0][1]):
                break
            t0 = time.perf_counter()
            fed, state = item.advance(self.ex, self.prefill_chunk)
            self.stats.prefill_tokens += fed
            budget -= fed
            if state is not None:
                self._chunked.remove((row, item))
                self._join([row], state)
            self.stats.prefill_s += time.perf_counter() - t0
        return budget

    def _resume(self, items: list[tuple[_Row, ResumeRow]]) -> None:
        """Verification passes of edited rows from their entries; join those that continue."""
        t0 = time.perf_counter()
        rows = [r for r, _ in items]
        plans = [p for _, p in items]
        started = resume_start(self.ex, plans, [r.rule for r in rows],
                               keep_states=self.cache.options.reuse_paths)
        self.stats.prefill_tokens += sum(len(p.fed) for p in plans)
        for row, plan, tokens, reason, states in zip(rows, plans, started.tokens,
                                                     started.reasons, started.states):
            row.resume, row.states = plan, states
            if plan.pool:
                row.proposer = pool_proposer(plan.entry.drafts())
            if reason is not None:
                row.tokens = tokens
                self._finish(row, reason)
            else:
                row.tokens = tokens[:-1]
        if started.state is not None:
            self._join([rows[r] for r in started.keep], started.state)
        self.stats.prefill_s += time.perf_counter() - t0

    def _join(self, rows: list[_Row], state: DecodeState) -> None:
        """New rows join the running batch; their pending tokens (``state.next_tokens``) are
        emitted first (a resumed row's last verified token: checked again, same verdict)."""
        self.stats.rows += len(rows)
        firsts = state.next_tokens.tolist()
        self._emit(rows, [[t] for t in firsts], state)
        self._compact(force=True)
        if self._state is None:
            self._state, self._rows = state, list(rows)
        else:
            self._state = merge_states(self._state, state)
            self._rows = self._rows + list(rows)
        self._compact(force=True)
        self._plan = None
        self.stats.peak_rows = max(self.stats.peak_rows, len(self._rows))

    # ------------------------------------------------------------------ decode

    def _decode(self) -> None:
        t0 = time.perf_counter()
        state, rows = self._state, self._rows
        assert state is not None
        if self._plan is None:
            self._plan = plan_steps(state.decisions, self.ex.num_layers, self.ex.device)
        capture = [b for b, r in enumerate(rows) if r.capture is not None and r.reason is None]
        observe, seen = None, {}
        if capture:
            index = torch.tensor(capture, device=self.ex.device)

            def observe(block: int, hidden: torch.Tensor) -> None:
                seen[block] = hidden[:, 0].index_select(0, index)

        drafts = self._drafts(rows)
        if any(drafts):
            emitted = drafted_step(self.ex, state, self._plan, drafts, observe=observe)
            self.stats.decode_tokens += len(rows) * (1 + max(len(d) for d in drafts))
        else:
            plain_step(self.ex, state, self._plan, observe=observe)
            emitted = [[t] for t in state.next_tokens.tolist()]
            self.stats.decode_tokens += len(rows)
        if capture:
            stacked = torch.stack([seen[b] for b in range(self.ex.num_layers)])  # [L, n, d]
            for k, b in enumerate(capture):
                rows[b].capture.steps.append(stacked[:, k])  # type: ignore[union-attr]
        self.stats.decode_steps += 1
        self._emit(rows, emitted, state)
        self.stats.decode_s += time.perf_counter() - t0

    def _drafts(self, rows: list[_Row]) -> list[tuple[int, ...]]:
        if not any(r.proposer is not None for r in rows):
            return [()] * len(rows)
        cap = draft_cap(len(rows))
        out = []
        for row in rows:
            if row.reason is not None or row.proposer is None:
                out.append(())
                continue
            room = row.rule.max_new_tokens - len(row.tokens) - 1
            out.append(tuple(row.proposer(row.tokens)[: min(cap, room)]))
        return out

    def _emit(self, rows: list[_Row], emitted: list[list[int]], state: DecodeState) -> None:
        """Append each running row's new tokens; finish the rows that stop."""
        for b, (row, tokens) in enumerate(zip(rows, emitted)):
            if row.reason is not None:
                continue
            for token in tokens:
                row.tokens.append(token)
                reason = row.rule.check(row.tokens, row.request.final)
                if reason is not None:
                    self._finish(row, reason, state, b)
                    break

    def _compact(self, force: bool = False) -> None:
        """Drop finished rows from the batch (when a share of it, or ``force``)."""
        if self._state is None:
            return
        done = sum(r.reason is not None for r in self._rows)
        if not done or (not force and done < COMPACT_FRACTION * len(self._rows)):
            return
        if done == len(self._rows):
            self._state, self._rows, self._plan = None, [], None
            return
        drop_rows(self._state, [r.reason is None for r in self._rows])
        self._rows = [r for r in self._rows if r.reason is None]
        self._plan = None

    # ------------------------------------------------------------------ finishing

    def _finish(self, row: _Row, reason: str, state: Optional[DecodeState] = None,
                b: int = 0) -> None:
        """A row stopped: its result goes out for every request it answers, and what it
        leaves (a default path's entry, a resumed row's lessons) goes to the cache."""
        row.reason = reason
        request = row.request
        gen = Generation(
            text=row.rule.final_text(row.tokens, reason), token_ids=tuple(row.tokens),
            layers_executed=LayerPath(request.path).cost * len(row.tokens),
            prompt_tokens=len(request.ids), finish_reason=reason,
        )
        key = request.reuse
        if row.capture is not None and key is not None:
            assert state is not None
            self.cache.store_default(key, self._entry(row, gen, state, b), gen)
            self._defaults.pop(key, None)
            self._waiting.extendleft(reversed(self._blocked.pop(key, [])))
        if row.resume is not None and key is not None:
            self.cache.resumed(key, row.resume, gen, row.states)
        for rid in row.rids:
            self._finished.append(EngineResult(rid, gen))

    def _entry(self, row: _Row, gen: Generation, state: DecodeState, b: int) -> PrefixEntry:
        """The default row's entry: the states it captured, its keys and values read from
        the batch's cache (every key column the row fed: prompt + response but its last)."""
        hidden = row.capture.hidden()  # type: ignore[union-attr]
        cols = state.valid[b, : state.length].nonzero().flatten()
        fed = len(row.request.ids) + len(row.tokens) - 1
        assert hidden.shape[1] == fed == cols.numel(), (hidden.shape, fed, cols.numel())
        kv = [slot_row_kv(state.cache, block, b, cols) for block in range(self.ex.num_layers)]
        row.capture = None
        return PrefixEntry(
            prompt=row.request.ids, tokens=gen.token_ids, reason=gen.finish_reason,
            text=gen.text, hidden=hidden, keys=torch.stack([k for k, _ in kv]),
            values=torch.stack([v for _, v in kv]),
        )
