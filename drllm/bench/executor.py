"""Throughput of the edited-path executor on a real model, against the baselines it replaces.

Measured on one batch of ARC-Easy chat prompts (greedy, ``max_new_tokens`` new tokens):

* ``batched``: the executor, one batch, each row with its own random valid skip-only path;
* ``serial``: the published method on the same (prompt, path) pairs: one ``model.generate``
  per pair on the model whose layer list is replaced by the path (correct for skip-only paths);
* ``hf_batched``: stock ``model.generate`` on the batch (all-execute) and ``executor_default``:
  the executor on the same batch, all-execute (their ratio is the executor's overhead);
* ``skip``: the executor with every row skipping the same ``skip_blocks`` blocks, whose time
  and cost (``layers_executed``) are reported relative to all-execute;
* ``useful_gflops_per_s``: matmul FLOPs of the blocks actually executed (projections, MLP and
  attention scores/values over real tokens, prefill and decode; LM head excluded) divided by
  the batched run's time, against ``matmul_peak_gflops``: torch matmuls of the block's weight
  shapes on as many rows as the batch has prompt tokens, timed in the same process.

Each timing is the best of ``repeats`` interleaved rounds after one warm-up call each.
"""

from __future__ import annotations

import logging
import random
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from drllm.models.executor import PathExecutor
from drllm.paths import LayerPath, legal_actions

logger = logging.getLogger(__name__)


def arc_prompts(tokenizer: Any, data_root: str | Path, num_rows: int, seed: int) -> list[str]:
    """``num_rows`` ARC-Easy train questions rendered with the tokenizer's chat template."""
    from drllm.data import DatasetConfig, load_examples, render_prompt

    root = Path(data_root) / "ai2_arc"
    if not root.is_dir():
        raise FileNotFoundError(
            f"ARC data not found at {root.resolve()}; pass --data-root pointing at shared/data"
        )
    report = load_examples(
        DatasetConfig(name="arc_easy", path=str(root), num_examples=num_rows, seed=seed)
    )
    return [render_prompt(example, tokenizer) for example in report.examples]


def random_skip_paths(num_layers: int, count: int, seed: int, max_edits: int = 3) -> list[LayerPath]:
    """``count`` valid paths, each the default path after 0..``max_edits`` random skip edits."""
    rng = random.Random(seed)
    paths = []
    for _ in range(count):
        path = LayerPath.default(num_layers)
        for _ in range(rng.randint(0, max_edits)):
            skips = [a for a in legal_actions(path) if a.kind == "skip"]
            path = rng.choice(skips).apply(path)
        paths.append(path)
    return paths


def spread_skip_path(num_layers: int, skips: int) -> LayerPath:
    """The path skipping ``skips`` blocks spread evenly over the depth (never block 0)."""
    if not 0 < skips < num_layers:
        raise ValueError(f"skips must be in (0, {num_layers}), got {skips}")
    step = num_layers / (skips + 1)
    skipped = {round(step * (k + 1)) for k in range(skips)}
    return LayerPath(0 if i in skipped else 1 for i in range(num_layers))


def block_matmul_flops(config: Any, context: int) -> int:
    """Matmul FLOPs of one block for one token attending to ``context`` keys."""
    d = config.hidden_size
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    kv = config.num_key_value_heads * head_dim
    q = heads * head_dim
    linear = d * q + 2 * d * kv + q * d + 3 * d * config.intermediate_size
    return 2 * linear + 4 * q * context


def useful_flops(config: Any, prompt_tokens: Sequence[int], new_tokens: Sequence[int],
                 costs: Sequence[int]) -> int:
    """Block matmul FLOPs of greedy generation over real tokens (prefill + decode), per row
    ``cost`` blocks per forward pass."""
    total = 0
    per_token = block_matmul_flops(config, 0)
    per_key = block_matmul_flops(config, 1) - per_token
    for p, n, cost in zip(prompt_tokens, new_tokens, costs):
        tokens = p + max(n - 1, 0)  # prompt tokens, then each generated token but the last
        keys = tokens * (tokens + 1) // 2  # causal: token j attends to j + 1 keys
        total += cost * (tokens * per_token + keys * per_key)
    return total


def matmul_peak(config: Any, rows: int, dtype: torch.dtype) -> tuple[Callable[[], None], int]:
    """A callable running the block's seven projections (q, k, v, o, gate, up, down: the
    model's weight shapes, ``x @ W.T`` as ``nn.Linear`` does) on ``rows`` token rows, and the
    FLOPs it performs."""
    d, inter = config.hidden_size, config.intermediate_size
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    kv = config.num_key_value_heads * head_dim
    shapes = [(heads * head_dim, d), (kv, d), (kv, d), (d, heads * head_dim),
              (inter, d), (inter, d), (d, inter)]  # (out, in) per projection
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(out, inp, generator=gen, dtype=dtype) for out, inp in shapes]
    inputs = {inp: torch.randn(rows, inp, generator=gen, dtype=dtype) for _, inp in shapes}

    def run() -> None:
        for w in weights:
            torch.nn.functional.linear(inputs[w.shape[1]], w)

    return run, sum(2 * rows * out * inp for out, inp in shapes)


def best_times(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall time in seconds of each callable: one warm-up call each, then ``repeats``
    rounds calling every callable once per round (interleaved, so that load from other
    processes hits every measurement alike)."""
    for name, fn in fns.items():
        logger.info("warm-up %s", name)
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_index in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
        logger.info("round %d/%d: %s", round_index + 1, repeats,
                    {name: round(t[-1], 3) for name, t in times.items()})
    for name, t in times.items():
        logger.info("%s: best %.3f s, median %.3f s", name, min(t), statistics.median(t))
    return {name: min(t) for name, t in times.items()}


def serial_generate(model: nn.Module, ids: Sequence[Sequence[int]], paths: Sequence[LayerPath],
                    max_new_tokens: int) -> list[list[int]]:
    """The published method: per (prompt, skip-only path), ``model.generate`` with the model's
    layer list replaced by the executed blocks. New token ids per row (up to the first EOS)."""
    layers = model.model.layers
    eos = model.generation_config.eos_token_id
    eos = {eos} if isinstance(eos, int) else set(eos or ())
    outs = []
    try:
        for seq, path in zip(ids, paths):
            if any(d == 2 for d in path):
                raise ValueError("the serial baseline is only correct for skip-only paths")
            model.model.layers = nn.ModuleList([layers[i] for i, d in enumerate(path) if d])
            input_ids = torch.tensor([list(seq)], device=model.device)
            out = model.generate(
                input_ids, attention_mask=torch.ones_like(input_ids),
                max_new_tokens=max_new_tokens, do_sample=False,
            )
            outs.append(_until_eos(out[0, input_ids.shape[1] :].tolist(), eos))
    finally:
        model.model.layers = layers
    return outs


def _until_eos(tokens: list[int], eos: set[int]) -> list[int]:
    for i, t in enumerate(tokens):
        if t in eos:
            return tokens[: i + 1]
    return tokens


def hf_batched_generate(model: nn.Module, ex: PathExecutor, ids: Sequence[Sequence[int]],
                        max_new_tokens: int) -> list[list[int]]:
    """Stock ``model.generate`` on the left-padded batch (all-execute)."""
    input_ids, mask = ex.left_pad(ids)
    out = model.generate(input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                         do_sample=False)
    eos = set(ex.eos_token_ids)
    return [_until_eos(row, eos) for row in out[:, input_ids.shape[1] :].tolist()]


def run_executor_benchmark(
    loaded: Any = None,
    *,
    data_root: str | Path = "../shared/data",
    num_rows: int = 16,
    max_new_tokens: int = 10,
    skip_blocks: int = 6,
    repeats: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Run every measurement described in the module docstring; returns a JSON-able dict.

    Args:
        loaded: a :class:`drllm.models.loading.LoadedModel` (default: load SmolLM2).
        data_root: the shared data folder holding ``ai2_arc/ARC-Easy/train.parquet``.
        num_rows: rows in the batch (>= 16 for the reported numbers).
        max_new_tokens: new tokens per row.
        skip_blocks: blocks skipped by every row of the skip batch.
        repeats: timed runs per measurement (best is kept).
        seed: picks the ARC questions and the random paths.
    """
    if loaded is None:
        from drllm.models.loading import ModelSpec, load_model

        loaded = load_model(ModelSpec())
    model, tokenizer = loaded.model, loaded.tokenizer
    ex = PathExecutor(model, tokenizer)
    L = ex.num_layers
    prompts = arc_prompts(tokenizer, data_root, num_rows, seed)
    ids = ex.encode(prompts)
    paths = random_skip_paths(L, num_rows, seed)
    skip_path = spread_skip_path(L, skip_blocks)
    logger.info("%d ARC prompts, %d-%d tokens; %d distinct paths", len(ids),
                min(map(len, ids)), max(map(len, ids)), len(set(paths)))
    result: dict[str, Any] = {"model": loaded.model_id, "num_layers": L, "rows": num_rows,
                              "max_new_tokens": max_new_tokens, "threads": torch.get_num_threads(),
                              "prompt_tokens_mean": sum(map(len, ids)) / len(ids),
                              "prompt_tokens_max": max(map(len, ids))}
    runs: dict[str, Any] = {}

    def keep(name: str, fn: Callable[[], Any]) -> Callable[[], None]:
        def call() -> None:
            runs[name] = fn()

        return call

    peak_fn, peak_flops = matmul_peak(model.config, sum(map(len, ids)), ex.dtype)
    seconds = best_times({
        "batched": keep("batched", lambda: ex.generate(ids, paths, max_new_tokens=max_new_tokens)),
        "executor_default": keep("executor_default",
                                 lambda: ex.generate(ids, max_new_tokens=max_new_tokens)),
        "hf_batched": keep("hf_batched",
                           lambda: hf_batched_generate(model, ex, ids, max_new_tokens)),
        "skip": keep("skip", lambda: ex.generate(ids, [skip_path] * len(ids),
                                                 max_new_tokens=max_new_tokens)),
        "serial": keep("serial", lambda: serial_generate(model, ids, paths, max_new_tokens)),
        "matmul_peak": peak_fn,
    }, repeats)
    batched, default, skipped = runs["batched"], runs["executor_default"], runs["skip"]
    flops = useful_flops(model.config, [g.prompt_tokens for g in batched],
                         [len(g.token_ids) for g in batched], [p.cost for p in paths])
    t_batched, t_default = seconds["batched"], seconds["executor_default"]
    useful = flops / t_batched / 1e9
    peak = peak_flops / seconds["matmul_peak"] / 1e9
    result.update(
        batched_evals_per_s=num_rows / t_batched,
        serial_evals_per_s=num_rows / seconds["serial"],
        speedup_vs_serial=seconds["serial"] / t_batched,
        hf_batched_evals_per_s=num_rows / seconds["hf_batched"],
        executor_default_evals_per_s=num_rows / t_default,
        overhead_ratio=seconds["hf_batched"] / t_default,
        skip_time_ratio=seconds["skip"] / t_default,
        skip_cost_ratio=sum(g.layers_executed for g in skipped)
        / sum(g.layers_executed for g in default),
        useful_gflops_per_s=useful,
        matmul_peak_gflops=peak,
        efficiency=useful / peak,
        serial_match=sum(list(g.token_ids) == s for g, s in zip(batched, runs["serial"]))
        / num_rows,
        hf_match=sum(list(g.token_ids) == s for g, s in zip(default, runs["hf_batched"]))
        / num_rows,
        new_tokens_mean=sum(len(g.token_ids) for g in batched) / num_rows,
        path_cost_mean=sum(p.cost for p in paths) / num_rows,
        seconds=seconds,
    )
    return result
