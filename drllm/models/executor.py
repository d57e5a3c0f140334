"""The edited-path executor: batched greedy generation where every row has its own layer path.

A :class:`PathExecutor` wraps a frozen HF causal LM (Llama, Qwen2, Qwen3, Mistral families; see
:mod:`drllm.models.families`) and drives its **stock** decoder layers:

* each row of a batch carries a path of per-block decisions (0 skip, 1 execute, 2 repeat);
  per-block micro-batching runs together the rows that execute a block, then the rows that
  repeat it (:mod:`drllm.models.forward`);
* one KV-cache slot per (block, pass), holding only that step's rows (:mod:`drllm.models.kv`);
* left padding: each row's positions start at 0 at its first real token, pad keys are masked;
* decisions are fixed per sequence during prefill, optionally by a per-block hook that sees the
  states entering each block (routed inference), and reused at every decode step;
* each row stops on its own (EOS, ``max_new_tokens``, stop strings); finished rows leave the
  batch and the cache, so they stop costing compute.

Equivalences pinned by ``tests/unit/test_executor*.py``: the all-execute path matches
``model.generate`` greedy token for token; a skip path matches the model with those layers
removed; cached incremental decoding matches a cacheless full recompute; a row in a mixed batch
matches the same row run alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from drllm.models.buckets import plan_buckets
from drllm.models.decoding import COMPACT_FRACTION, decode, prefill
from drllm.models.families import get_family
from drllm.models.forward import BlockHook, BlockRunner
from drllm.models.kv import SlotKVCache
from drllm.models.prefix import PathStates, PrefixEntry, record_prefixes
from drllm.models.resume import ResumeRow, generate_resumed
from drllm.models.stopping import FinalFn, StopRule
from drllm.paths import DEFAULT_CONSTRAINTS, InvalidPathError, LayerPath, PathConstraints, check_path
from drllm.types import Generation

logger = logging.getLogger(__name__)

#: Default cost of one extra prefill length bucket, in token positions, by device type (see
#: :mod:`drllm.models.buckets`): small matrix products saturate a CPU early, a GPU late.
BUCKET_OVERHEAD_TOKENS = {"cpu": 128}
_DEFAULT_BUCKET_OVERHEAD = 4096


@dataclass(frozen=True)
class PrefillStates:
    """A cacheless forward pass over prompts along paths.

    Attributes:
        hidden: ``[B, T, d]`` last hidden states after the final norm.
        attention_mask: ``[B, T]`` 1 for real tokens, 0 for padding.
        paths: the path each row followed (the given ones, or those a block hook chose).
    """

    hidden: torch.Tensor
    attention_mask: torch.Tensor
    paths: tuple[LayerPath, ...]


class PathExecutor:
    """Greedy generation and forward passes of a frozen causal LM along per-row layer paths.

    Args:
        model: a HF causal LM of a registered family, in eval mode, attention ``sdpa`` or
            ``eager``.
        tokenizer: its tokenizer (used by :meth:`encode` and to decode outputs).
        constraints: rules every path must obey (checked before any compute).
        add_special_tokens: whether :meth:`encode` lets the tokenizer add its special tokens
            (BOS...). Off by default: callers pass text rendered by the chat template, which
            already holds them.
        bucket_overhead_tokens: modelled cost of one extra prefill length bucket, in token
            positions (:mod:`drllm.models.buckets`); None picks a default for the device
            (CPU 128, else 4096). A very large value disables bucketing.
        dense_steps: a step only some rows run still runs the whole batch and selects rows
            with ``torch.where`` (static shapes, for CUDA graphs on GPUs) instead of gathering
            a sub-batch. Same tokens either way.

    Attributes:
        num_layers: ``L`` decoder blocks.
        hidden_size: model width ``d``.
        device, dtype: where and in which dtype the model's parameters live.
        eos_token_ids: ids that end a row (all EOS ids of the generation config).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: object,
        constraints: PathConstraints = DEFAULT_CONSTRAINTS,
        *,
        add_special_tokens: bool = False,
        bucket_overhead_tokens: int | None = None,
        dense_steps: bool = False,
    ) -> None:
        family = get_family(model)
        if model.training:
            raise ValueError("the executor drives a frozen model; call model.eval() first")
        config = model.config
        self.model = model
        self.tokenizer = tokenizer
        self.constraints = constraints
        self.add_special_tokens = add_special_tokens
        self.dense_steps = bool(dense_steps)
        #: share of finished rows that triggers a cache compaction (see decoding.COMPACT_FRACTION)
        self.compact_fraction = COMPACT_FRACTION
        self.family = family
        layers = family.layers(model)
        self.num_layers = len(layers)
        self.hidden_size = int(config.hidden_size)
        param = next(model.parameters())
        self.device = param.device
        self.dtype = param.dtype
        self.vocab_size = int(family.embed_tokens(model).weight.shape[0])
        if bucket_overhead_tokens is None:
            bucket_overhead_tokens = BUCKET_OVERHEAD_TOKENS.get(
                self.device.type, _DEFAULT_BUCKET_OVERHEAD
            )
        if bucket_overhead_tokens < 0:
            raise ValueError(f"bucket_overhead_tokens must be >= 0, got {bucket_overhead_tokens}")
        self.bucket_overhead_tokens = int(bucket_overhead_tokens)
        self.max_positions = getattr(config, "max_position_embeddings", None)
        self.embed = family.embed_tokens(model)
        self._norm = family.final_norm(model)
        self._lm_head = family.lm_head(model)
        self.runner = BlockRunner(
            layers,
            family.rotary_emb(model),
            [family.sliding_window(model, i) for i in range(self.num_layers)],
            family.cache_kwarg(model),
            getattr(config, "_attn_implementation", None) or "eager",
        )
        self.eos_token_ids = _eos_ids(model, tokenizer)
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_token_id = int(pad) if pad is not None else min(self.eos_token_ids, default=0)
        logger.debug(
            "PathExecutor: %s family, L=%d, d=%d, %s/%s, eos=%s",
            family.name, self.num_layers, self.hidden_size, self.device, self.dtype,
            sorted(self.eos_token_ids),
        )

    # ------------------------------------------------------------------ inputs and validation

    def encode(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of raw prompt texts (no chat template applied here; callers render)."""
        if isinstance(prompts, str):
            raise TypeError("encode takes a sequence of prompt strings, not one string")
        return [
            list(self.tokenizer(p, add_special_tokens=self.add_special_tokens)["input_ids"])
            for p in prompts
        ]

    def _prompt_ids(
        self, prompts: Sequence[str] | Sequence[Sequence[int]], max_new_tokens: int = 0
    ) -> list[list[int]]:
        if isinstance(prompts, (str, torch.Tensor)):
            raise TypeError(
                "prompts must be a sequence of strings or of token-id sequences "
                f"(got {type(prompts).__name__})"
            )
        kinds = {isinstance(p, str) for p in prompts}
        if len(kinds) > 1:
            raise TypeError("prompts mix strings and token-id sequences; pass one kind")
        ids = self.encode(prompts) if kinds == {True} else [[int(t) for t in p] for p in prompts]
        for row, seq in enumerate(ids):
            self._check_row(row, seq, max_new_tokens)
        return ids

    def _check_row(self, row: int, seq: Sequence[int], max_new_tokens: int) -> None:
        if not seq:
            raise ValueError(f"prompt {row} is empty (no tokens); every row needs at least one")
        bad = [t for t in seq if not 0 <= t < self.vocab_size]
        if bad:
            raise ValueError(
                f"prompt {row}: token id {bad[0]} outside the vocabulary [0, {self.vocab_size})"
            )
        needed = len(seq) + max_new_tokens
        if self.max_positions is not None and needed > self.max_positions:
            raise ValueError(
                f"prompt {row} has {len(seq)} tokens; with max_new_tokens={max_new_tokens} it "
                f"needs {needed} positions but the model supports max_position_embeddings="
                f"{self.max_positions}; shorten the prompt or lower max_new_tokens"
            )

    def _paths(self, paths: Sequence[LayerPath | Sequence[int]] | None, batch: int) -> list[list[int]]:
        """Validated paths as mutable ``[B][L]`` decision lists (all-execute when None)."""
        if paths is None:
            return [[1] * self.num_layers for _ in range(batch)]
        if isinstance(paths, torch.Tensor):
            paths = paths.tolist()
        if len(paths) != batch:
            raise ValueError(f"got {len(paths)} paths for {batch} prompts; pass one path per row")
        out = []
        for row, path in enumerate(paths):
            try:
                values = tuple(int(d) for d in path)
                reason = check_path(values, self.num_layers, self.constraints)
            except (TypeError, ValueError) as exc:
                reason = str(exc)
            if reason is not None:
                raise InvalidPathError(f"path for row {row} ({list(path)}): {reason}")
            out.append(list(values))
        return out

    def _final_paths(
        self, decisions: list[list[int]], row_ids: Sequence[int] | None = None
    ) -> tuple[LayerPath, ...]:
        """Paths after prefill (a hook may have chosen them), checked against the constraints.

        ``row_ids`` names the rows in error messages (default: their index in ``decisions``).
        """
        out = []
        for row, values in enumerate(decisions):
            path = LayerPath(values)
            reason = check_path(path, self.num_layers, self.constraints)
            if reason is not None:
                name = row if row_ids is None else row_ids[row]
                raise InvalidPathError(
                    f"row {name}: the block hook chose path {path.to_str()}, which is invalid: "
                    f"{reason}"
                )
            out.append(path)
        return tuple(out)

    def _tensor_batch(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [B, T], got shape {tuple(input_ids.shape)}")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape "
                f"{tuple(input_ids.shape)}"
            )
        counts = attention_mask.ne(0).sum(1).tolist()
        for row, n in enumerate(counts):
            if n == 0:
                raise ValueError(f"row {row} has no real token (attention_mask is all 0)")
        return input_ids.to(self.device), attention_mask.to(self.device)

    def left_pad(self, ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, T]`` left-padded input ids and attention mask on the model's device."""
        width = max(len(seq) for seq in ids)
        input_ids = torch.full((len(ids), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, seq in enumerate(ids):
            input_ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
        return input_ids.to(self.device), mask.to(self.device)

    # ------------------------------------------------------------------ forward passes

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[B, q, d]`` last hidden states -> ``[B, q, V]`` logits."""
        return self._lm_head(self._norm(hidden))

    @torch.inference_mode()
    def logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        paths: Sequence[LayerPath | Sequence[int]] | None,
        *,
        use_cache: bool = False,
        prefill_tokens: int = 1,
        block_hook: BlockHook | None = None,
    ) -> torch.Tensor:
        """Logits ``[B, T, V]`` of every position along per-row paths (teacher forcing).

        Args:
            input_ids: ``[B, T]`` token ids (left padding recommended; any padding works).
            attention_mask: ``[B, T]`` 1 real / 0 pad, or None for no padding.
            paths: one path per row (None = all-execute).
            use_cache: False: one cacheless forward over all ``T`` tokens (the reference).
                True: the first ``prefill_tokens`` tokens as one prefill chunk, then one token
                per call through the slot KV cache, exactly as generation decodes.
            prefill_tokens: size of the first chunk when ``use_cache`` (``1 <= .. <= T``).
            block_hook: per-block hook during the (first) chunk; see :data:`BlockHook`.
        """
        input_ids, attention_mask = self._tensor_batch(input_ids, attention_mask)
        decisions = self._paths(paths, input_ids.shape[0])
        valid = attention_mask.ne(0)
        positions = (attention_mask.long().cumsum(1) - 1).clamp_(min=0)
        all_valid = bool(valid.all())
        width = input_ids.shape[1]
        if not use_cache:
            hidden = self.runner.run(
                self.embed(input_ids), positions, valid, decisions, all_valid=all_valid,
                hook=block_hook, hook_mask=attention_mask,
            )
            self._final_paths(decisions)
            return self.head(hidden)
        if not 1 <= prefill_tokens <= width:
            raise ValueError(f"prefill_tokens must be in [1, {width}], got {prefill_tokens}")
        cache = SlotKVCache(capacity=width)
        bounds = [(0, prefill_tokens)] + [(t, t + 1) for t in range(prefill_tokens, width)]
        chunks = []
        for start, end in bounds:
            hidden = self.runner.run(
                self.embed(input_ids[:, start:end]), positions[:, start:end], valid[:, :end],
                decisions, all_valid=all_valid, cache=cache,
                hook=block_hook if start == 0 else None, hook_mask=attention_mask[:, start:end],
            )
            if start == 0:
                self._final_paths(decisions)
            chunks.append(self.head(hidden))
        return torch.cat(chunks, dim=1)

    @torch.inference_mode()
    def prefill_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        paths: Sequence[LayerPath | Sequence[int]] | None = None,
        block_hook: BlockHook | None = None,
    ) -> PrefillStates:
        """Cacheless forward over prompts: final-normed states and the paths followed.

        The hook sees, at each block ``i``, the states ``[B, T, d]`` entering block ``i`` and
        the ``[B, T]`` mask (the router feature pass reads them along a fixed path; routed
        inference returns decisions). Do not modify the tensors it is handed.
        """
        input_ids, attention_mask = self._tensor_batch(input_ids, attention_mask)
        decisions = self._paths(paths, input_ids.shape[0])
        valid = attention_mask.ne(0)
        positions = (attention_mask.long().cumsum(1) - 1).clamp_(min=0)
        hidden = self.runner.run(
            self.embed(input_ids), positions, valid, decisions, all_valid=bool(valid.all()),
            hook=block_hook, hook_mask=attention_mask,
        )
        return PrefillStates(self._norm(hidden), attention_mask, self._final_paths(decisions))

    # ------------------------------------------------------------------ generation

    @torch.inference_mode()
    def generate(
        self,
        prompts: Sequence[str] | Sequence[Sequence[int]],
        paths: Sequence[LayerPath | Sequence[int]] | None = None,
        *,
        max_new_tokens: int = 64,
        stop_strings: Sequence[str] = (),
        block_hook: BlockHook | None = None,
        batch_size: int | None = None,
        finals: Sequence[FinalFn | None] | None = None,
    ) -> list[Generation]:
        """Greedy generation, each row along its own path.

        Args:
            prompts: rendered prompt texts (encoded with :meth:`encode`) or token-id lists.
            paths: one path per prompt; None = all-execute (or whatever ``block_hook`` picks).
            max_new_tokens: token budget per row.
            stop_strings: a row stops once its text contains one; the text is cut before it.
            block_hook: per-block prefill hook (see :data:`BlockHook`). It sees the rows in
                the order given, in chunks of ``batch_size`` (blocks ``0..L-1`` per chunk).
            batch_size: rows per forward batch (None = all at once). Without a hook, chunks
                group prompts of similar length, and each batch is prefilled in length buckets,
                to limit padding. Outputs keep the input order.
            finals: per prompt, a grader predicate ending the row once no continuation can
                change its grade (finish reason ``"grader"``), or None.

        Returns:
            One :class:`~drllm.types.Generation` per prompt, in order. ``layers_executed`` is
            the path cost (blocks per forward pass) times the forward passes of the row (one
            per generated token).
        """
        rule = StopRule(self.tokenizer, self.eos_token_ids, max_new_tokens, stop_strings)
        ids = self._prompt_ids(prompts, max_new_tokens)
        decisions = self._paths(paths, len(ids))
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
        if not ids:
            return []
        if finals is not None and len(finals) != len(ids):
            raise ValueError(f"got {len(finals)} finals for {len(ids)} prompts")
        finals = list(finals) if finals is not None else [None] * len(ids)
        order = list(range(len(ids)))
        if batch_size is None or batch_size >= len(ids):
            chunks = [order]
        else:
            if block_hook is None:  # similar lengths together: less padding
                order.sort(key=lambda i: len(ids[i]))
            chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        results: list[Generation | None] = [None] * len(ids)
        for chunk in chunks:
            outs = self._generate_batch(
                [ids[i] for i in chunk], [decisions[i] for i in chunk], rule, block_hook, chunk,
                [finals[i] for i in chunk],
            )
            for i, out in zip(chunk, outs):
                results[i] = out
        return results  # type: ignore[return-value]

    def _generate_batch(
        self, ids: list[list[int]], decisions: list[list[int]], rule: StopRule,
        hook: BlockHook | None, row_ids: Sequence[int], finals: Sequence[FinalFn | None],
    ) -> list[Generation]:
        """Generate for one batch; ``row_ids`` name its rows in error messages.

        Without a hook, rows are prefilled sorted by length in length buckets; with one, in the
        given order as one group, so the hook sees the rows exactly as passed.
        """
        if hook is None:
            order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
            groups = plan_buckets([len(ids[i]) for i in order], self.bucket_overhead_tokens)
        else:
            order, groups = list(range(len(ids))), [(0, len(ids))]
        state = prefill(
            self, [ids[i] for i in order], [decisions[i] for i in order], rule.max_new_tokens,
            hook, groups, dense=self.dense_steps,
        )
        checked = self._final_paths(decisions, row_ids)
        paths = [checked[i] for i in order]
        tokens, reasons = decode(self, state, rule, finals=[finals[i] for i in order],
                                 dense=self.dense_steps, compact_fraction=self.compact_fraction)
        out: list[Generation | None] = [None] * len(ids)
        for pos, row in enumerate(order):
            out[row] = Generation(
                text=rule.final_text(tokens[pos], reasons[pos]),
                token_ids=tuple(tokens[pos]),
                layers_executed=paths[pos].cost * len(tokens[pos]),
                prompt_tokens=len(ids[row]),
                finish_reason=reasons[pos],
            )
        return out  # type: ignore[return-value]

    # ------------------------------------------------------------------ work avoidance

    def record_prefixes(
        self, prompts: Sequence[Sequence[int]], generations: Sequence[Generation]
    ) -> list[PrefixEntry]:
        """Prefix entries of default-path generations (see :mod:`drllm.models.prefix`)."""
        return record_prefixes(
            self, prompts, [g.token_ids for g in generations],
            [g.finish_reason for g in generations], [g.text for g in generations],
        )

    @torch.inference_mode()
    def generate_resumed(
        self,
        entries: Sequence[PrefixEntry],
        paths: Sequence[LayerPath | Sequence[int]],
        *,
        max_new_tokens: int = 64,
        stop_strings: Sequence[str] = (),
        draft_tokens: int | None = None,
        finals: Sequence[FinalFn | None] | None = None,
        draft_pool: bool = True,
    ) -> list[Generation]:
        """Greedy generation along edited paths from the default path's stored prefixes.

        The same tokens as :meth:`generate` on ``entry.prompt`` along each path (see
        :mod:`drllm.models.resume`): blocks before a path's first edit are reused, and up to
        ``draft_tokens`` tokens of the default response (None: all; 0: none) are verified in
        one teacher-forced pass; with ``draft_pool`` (and drafts on), later decode steps verify
        drafts taken from the entry's remembered responses. Each entry must come from a generation with the same
        ``max_new_tokens`` and ``stop_strings`` (and grader predicate).
        """
        rule = StopRule(self.tokenizer, self.eos_token_ids, max_new_tokens, stop_strings)
        decisions = self._paths(paths, len(entries))
        finals = list(finals) if finals is not None else [None] * len(entries)
        rows = []
        for entry, path, final in zip(entries, decisions, finals, strict=True):
            if all(d == 1 for d in path):
                raise ValueError("generate_resumed takes edited paths; the default path's "
                                 "output is the entry itself")
            self._check_row(len(rows), entry.prompt, max_new_tokens)
            draft = len(entry.tokens) - 1
            if draft_tokens is not None:
                draft = min(draft, draft_tokens)
            rows.append(ResumeRow(tuple(path), entry, draft, final,
                                  pool=draft_pool and draft_tokens != 0))
        return self.resume(rows, max_new_tokens=max_new_tokens, stop_strings=stop_strings)[0]

    @torch.inference_mode()
    def resume(
        self, rows: Sequence[ResumeRow], *, max_new_tokens: int = 64,
        stop_strings: Sequence[str] = (), keep_states: bool = False,
    ) -> tuple[list[Generation], list[PathStates | None]]:
        """Greedy generation of prepared :class:`~drllm.models.resume.ResumeRow` rows (each
        with its entry, base, draft length and grader predicate); the generations and, with
        ``keep_states``, each row's prompt states (else None)."""
        rule = StopRule(self.tokenizer, self.eos_token_ids, max_new_tokens, stop_strings)
        self._paths([row.path for row in rows], len(rows))  # legal under the constraints
        for i, row in enumerate(rows):
            if all(d == 1 for d in row.path):
                raise ValueError("resume takes edited paths; the default path's output is the "
                                 "entry itself")
            self._check_row(i, row.entry.prompt, max_new_tokens)
        tokens, reasons, states = generate_resumed(
            self, rows, rule, dense=self.dense_steps, compact_fraction=self.compact_fraction,
            keep_states=keep_states)
        gens = [
            Generation(text=rule.final_text(t, why), token_ids=tuple(t),
                       layers_executed=LayerPath(row.path).cost * len(t),
                       prompt_tokens=len(row.entry.prompt), finish_reason=why)
            for row, t, why in zip(rows, tokens, reasons)
        ]
        return gens, states


def _eos_ids(model: nn.Module, tokenizer: object) -> frozenset[int]:
    """EOS ids of the generation config (else the model config, else the tokenizer)."""
    candidates = [
        getattr(getattr(model, "generation_config", None), "eos_token_id", None),
        getattr(model.config, "eos_token_id", None),
        getattr(tokenizer, "eos_token_id", None),
    ]
    for value in candidates:
        if value is None:
            continue
        ids = [value] if isinstance(value, int) else list(value)
        if ids:
            return frozenset(int(i) for i in ids)
    logger.warning("no EOS token id found; rows stop only at max_new_tokens or stop strings")
    return frozenset()
