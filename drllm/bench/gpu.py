"""``gpu``: the engine against stock HF ``generate`` on Llama-shaped models with random weights.

Models are built from configs (no download): the 1B, 3B and 8B Llama-3 shapes, SmolLM2-135M's
shape (the embedded model's cost per step on a CPU, ``--shapes smollm2 --device cpu``) and a
tiny one for CI; weights are random (bf16 on a GPU). Greedy generation with EOS
suppressed, so every row generates exactly ``max_new_tokens`` tokens from a random prompt of
``prompt_tokens`` tokens. Per shape and batch:

* ``hf``: one ``model.generate`` call on the batch (stock HF, static batch);
* ``engine_execute``: the engine (:mod:`drllm.engine`), every row on the default path;
* ``engine_edited``: the engine, rows on skip / repeat paths (a quarter skip two blocks, a
  quarter repeat one, a quarter both, a quarter default);

with evals/s (rows per second), the engine's prefill/decode split, peak GPU memory, and the
largest batch of the engine that fits (doubling until out of memory, GPU only). Needs neither
Ray nor Hydra: ``python -m drllm.bench.gpu`` works where only torch and transformers are.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

#: Llama-3 shapes (hidden, intermediate, layers, heads, kv heads, vocab).
SHAPES = {
    "tiny": (64, 128, 4, 4, 2, 512),
    "smollm2": (576, 1536, 30, 9, 3, 49152),  # SmolLM2-135M (Llama architecture)
    "1b": (2048, 8192, 16, 32, 8, 128256),
    "3b": (3072, 8192, 28, 24, 8, 128256),
    "8b": (4096, 14336, 32, 32, 8, 128256),
}


class IdTokenizer:
    """Token ids as text (``"17 4 9"``): what the executor needs of a tokenizer when prompts
    are given as ids and no stop string or grader reads the text."""

    pad_token_id = 0
    eos_token_id = None

    def decode(self, ids: Any, skip_special_tokens: bool = True) -> str:
        return " ".join(str(int(i)) for i in ids)

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": [int(t) for t in text.split()]}


def build_model(shape: str, device: str, dtype: Any, seed: int = 0) -> Any:
    """A ``LlamaForCausalLM`` of ``shape`` with random weights, in eval mode, EOS off."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, inter, layers, heads, kv, vocab = SHAPES[shape]
    config = LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv, vocab_size=vocab,
                         max_position_embeddings=8192, rope_theta=500000.0,
                         tie_word_embeddings=shape in ("tiny", "smollm2", "1b", "3b"),
                         attn_implementation="sdpa", bos_token_id=None, eos_token_id=None,
                         pad_token_id=0)
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model.eval()


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _paths(num_layers: int, batch: int, edited: bool) -> list[tuple[int, ...]]:
    out = []
    for i in range(batch):
        path = [1] * num_layers
        if edited and i % 4 in (0, 2):
            path[1] = path[2] = 0  # skip two blocks
        if edited and i % 4 in (1, 2):
            path[num_layers - 2] = 2  # repeat one
        out.append(tuple(path))
    return out


def _engine_run(ex: Any, prompts: list, paths: list, max_new_tokens: int, device: str) -> dict:
    import torch

    from drllm.engine import Engine, EngineRequest, Settings

    engine = Engine(ex, max_rows=len(prompts), max_batch_tokens=1 << 30,
                    prefill_chunk=1 << 20)
    settings = Settings(max_new_tokens)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    start = time.perf_counter()
    gens = engine.run([EngineRequest(tuple(p), path, settings)
                       for p, path in zip(prompts, paths)])
    _sync(device)
    wall = time.perf_counter() - start
    return {"evals_s": round(len(prompts) / wall, 3), "seconds": round(wall, 3),
            "prefill_s": round(engine.stats.prefill_s, 3),
            "decode_s": round(engine.stats.decode_s, 3),
            "peak_gib": _peak(device), "tokens": [g.token_ids for g in gens]}


def _hf_run(model: Any, prompts: list, max_new_tokens: int, device: str) -> dict:
    import torch

    ids = torch.tensor(prompts, device=device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                             max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=None, pad_token_id=0)
    _sync(device)
    wall = time.perf_counter() - start
    return {"evals_s": round(len(prompts) / wall, 3), "seconds": round(wall, 3),
            "peak_gib": _peak(device),
            "tokens": [tuple(r) for r in out[:, ids.shape[1]:].tolist()]}


def _peak(device: str) -> float | None:
    import torch

    if not device.startswith("cuda"):
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


def _largest_batch(ex: Any, prompt_tokens: int, max_new_tokens: int, device: str,
                   start: int, cap: int) -> int | None:
    """The largest power-of-two batch (from ``start``, at most ``cap``) the engine runs."""
    import torch

    if not device.startswith("cuda"):
        return None
    best, batch = None, start
    while batch <= cap:
        try:
            prompts = torch.randint(1, ex.vocab_size, (batch, prompt_tokens)).tolist()
            _engine_run(ex, prompts, _paths(ex.num_layers, batch, False), max_new_tokens,
                        device)
            best = batch
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
        batch *= 2
    return best


def run_shape(shape: str, *, batch: int, prompt_tokens: int, max_new_tokens: int,
              device: str, dtype_name: str, probe_cap: int = 0, seed: int = 0) -> dict[str, Any]:
    """Every measurement of one shape; one JSON-able dict."""
    import torch

    from drllm.models.executor import PathExecutor

    dtype = getattr(torch, dtype_name)
    model = build_model(shape, device, dtype, seed)
    ex = PathExecutor(model, IdTokenizer())
    ex.eos_token_ids = frozenset()
    gen = torch.Generator().manual_seed(seed)
    prompts = torch.randint(1, ex.vocab_size, (batch, prompt_tokens), generator=gen).tolist()
    warm = prompts[:1]
    _hf_run(model, warm, 2, device)
    _engine_run(ex, warm, _paths(ex.num_layers, 1, False), 2, device)
    hf = _hf_run(model, prompts, max_new_tokens, device)
    execute = _engine_run(ex, prompts, _paths(ex.num_layers, batch, False), max_new_tokens,
                          device)
    edited = _engine_run(ex, prompts, _paths(ex.num_layers, batch, True), max_new_tokens,
                         device)
    same = sum(a == b for a, b in zip(hf.pop("tokens"), execute.pop("tokens")))
    edited.pop("tokens")
    result = {
        "shape": shape, "device": device, "dtype": dtype_name, "batch": batch,
        "prompt_tokens": prompt_tokens, "max_new_tokens": max_new_tokens,
        "num_layers": ex.num_layers, "hf": hf, "engine_execute": execute,
        "engine_edited": edited,
        "speedup_execute_vs_hf": round(execute["evals_s"] / hf["evals_s"], 3),
        "rows_matching_hf": f"{same}/{batch}",
    }
    if probe_cap:
        result["largest_batch"] = _largest_batch(ex, prompt_tokens, max_new_tokens, device,
                                                 batch, probe_cap)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m drllm.jobs.bench gpu``."""
    parser.add_argument("--shapes", default=None,
                        help="comma-separated shapes of %s (default: 1b,3b,8b on a GPU, "
                             "tiny on CPU)" % ",".join(SHAPES))
    parser.add_argument("--batch", type=int, default=None, help="rows (default: 32 GPU, 4 CPU)")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="generated tokens per row (default: 128 GPU, 8 CPU)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if any)")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on GPU, float32 CPU")
    parser.add_argument("--probe-cap", type=int, default=None,
                        help="largest batch probed (GPU; 0: no probe; default 1024)")


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Run every shape; print one JSON line per shape (the return value holds them all)."""
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.startswith("cuda")
    shapes = (args.shapes or ("1b,3b,8b" if gpu else "tiny")).split(",")
    out = {}
    for shape in shapes:
        result = run_shape(
            shape, batch=args.batch or (32 if gpu else 4), prompt_tokens=args.prompt_tokens,
            max_new_tokens=args.max_new_tokens or (128 if gpu else 8), device=device,
            dtype_name=args.dtype or ("bfloat16" if gpu else "float32"),
            probe_cap=(1024 if gpu else 0) if args.probe_cap is None else args.probe_cap)
        print(json.dumps(result, sort_keys=True), flush=True)
        out[shape] = result
        if gpu:
            torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m drllm.bench.gpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    main()
