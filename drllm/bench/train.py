"""Router-training benchmarks on synthetic features of a real model's shape, and the feature pass.

Defaults follow SmolLM2-135M (L = 30 blocks, d = 576) and the paper's recipe (W = 8 windows,
b = 128, batch 16, 25 epochs): 4,000 examples x 25 epochs = 6,250 optimizer steps. Features are
random fp16 windows (the storage dtype of the feature pass); labels are drawn with the paper's
label balance (~7.6 % skip, ~90 % execute, ~2.4 % repeat).

* :func:`run_train_benchmark` -- the in-process loop of :func:`drllm.routers.training.fit`
  (no Ray);
* :func:`run_ray_train_benchmark` -- ``python -m drllm.jobs.bench train``: the same training
  through Ray Train (``TorchTrainer``, one CPU worker with every CPU, start-up included), plus
  the feature-pass rate on SmolLM2 over ARC-Easy prompts (:func:`feature_pass_benchmark`).

Also here: synthetic supervision (:func:`random_path`, :func:`write_synthetic_shards`) and
:func:`write_feature_file`, used by the benchmarks and by tests of everything downstream of
the search.

FLOPs counted: the matmuls of forward + backward actually run per example
(:meth:`StackedRouters.train_flops_per_example`: about 2x the forward ``2 L b (W d + 3)``, not
3x, because the input features need no gradient).
"""

from __future__ import annotations

import logging
import os
import random
import time
from typing import Any, Sequence

import torch

from drllm.paths import DEFAULT_CONSTRAINTS, LayerPath, PathConstraints, edit_count, legal_actions
from drllm.routers.module import StackedRouters
from drllm.routers.training import TrainConfig, fit
from drllm.types import Example, SearchResult

logger = logging.getLogger(__name__)

PAPER_LABEL_BALANCE = (0.076, 0.900, 0.024)


def random_path(
    num_layers: int, rng: random.Random, edits: int = 3,
    constraints: PathConstraints = DEFAULT_CONSTRAINTS,
) -> LayerPath:
    """The default path after ``edits`` random legal MCTS edits (skips of 1-2 blocks, repeats)."""
    path = LayerPath.default(num_layers)
    for _ in range(edits):
        actions = legal_actions(path, constraints)
        if not actions:
            break
        path = rng.choice(actions).apply(path)
    return path


def synthetic_result(path: LayerPath, response: str = "") -> SearchResult:
    """A :class:`SearchResult` whose best path is ``path`` (reward 1, default reward 0)."""
    num_layers = len(path)
    return SearchResult(
        num_layers=num_layers, default_path=LayerPath.default(num_layers), default_reward=0.0,
        default_response="", best_path=path, best_reward=1.0, best_response=response,
        best_cost=path.cost, layers_saved=num_layers - path.cost, improved=True,
        good_paths=(path,), good_rewards=(1.0,), simulations=1, evaluations=1, memo_hits=0,
        stopped_early=False, solved=True, evaluated_depths=(edit_count(path),),
    )


def write_synthetic_shards(
    out_dir: str | os.PathLike[str],
    examples: Sequence[Example],
    prompts: Sequence[str],
    paths: Sequence[LayerPath],
    *,
    model_id: str,
    rows_per_shard: int = 64,
    writer_id: str = "synthetic",
) -> int:
    """Supervision shards with one row per example whose best path is the given one.

    For benchmarks and tests of everything downstream of the search (features, training,
    notebooks) without running it. Returns the rows written (examples already in ``out_dir``
    are skipped, as by any :class:`~drllm.shards.ShardWriter`).
    """
    from drllm.shards import ShardWriter, SupervisionRecord

    if not (len(examples) == len(prompts) == len(paths)) or not paths:
        raise ValueError(f"need as many prompts and paths as examples (>0), got "
                         f"{len(examples)}, {len(prompts)}, {len(paths)}")
    config = {"synthetic": True, "model_id": model_id}
    with ShardWriter(out_dir, writer_id=writer_id, num_layers=len(paths[0]), model_id=model_id,
                     config=config, rows_per_shard=rows_per_shard) as writer:
        for example, prompt, path in zip(examples, prompts, paths):
            writer.add(SupervisionRecord(example, synthetic_result(LayerPath(path)), model_id,
                                         prompt, 0.0))
    return writer.rows_written


def synthetic_features(
    num_examples: int, num_layers: int, hidden_size: int, windows: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random ``(features fp16 [N, L, W, d], labels [N, L], wmask [N, W])``.

    About one row in eight has a short prompt (fewer than ``windows`` valid windows).
    """
    gen = torch.Generator().manual_seed(seed)
    features = torch.empty(num_examples, num_layers, windows, hidden_size, dtype=torch.float16)
    chunk = max(1, 2**24 // (num_layers * windows * hidden_size))
    for start in range(0, num_examples, chunk):
        stop = min(num_examples, start + chunk)
        features[start:stop] = torch.randn(
            stop - start, num_layers, windows, hidden_size, generator=gen
        )
    probs = torch.tensor(PAPER_LABEL_BALANCE)
    labels = torch.multinomial(probs, num_examples * num_layers, replacement=True, generator=gen)
    labels = labels.view(num_examples, num_layers)
    valid = torch.full((num_examples,), windows)
    short = torch.rand(num_examples, generator=gen) < 0.125
    valid[short] = torch.randint(1, windows + 1, (int(short.sum()),), generator=gen)
    wmask = torch.arange(windows).unsqueeze(0) < valid.unsqueeze(1)
    return features, labels, wmask


def run_train_benchmark(
    num_examples: int = 4000,
    num_layers: int = 30,
    hidden_size: int = 576,
    windows: int = 8,
    epochs: int = 25,
    batch_size: int = 16,
    bottleneck: int = 128,
    val_fraction: float = 0.0,
    seed: int = 0,
    device: str | None = None,
) -> dict[str, Any]:
    """Train routers on synthetic features and report throughput.

    Returns:
        ``{"train_seconds", "examples_per_s", "steps", "steps_per_s", "ms_per_step",
        "train_gflops_per_s", "setup_seconds", "device", "torch_threads", ...shape}`` where
        ``train_seconds`` is the wall time of the epoch loop (excluding feature synthesis).
    """
    t0 = time.perf_counter()
    features, labels, wmask = synthetic_features(
        num_examples, num_layers, hidden_size, windows, seed
    )
    setup_seconds = time.perf_counter() - t0
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        bottleneck=bottleneck,
        windows=windows,
        seed=seed,
        val_fraction=val_fraction,
    )
    routers, history = fit(features, labels, wmask, cfg, device=device)
    steps = sum(e["train"]["steps"] for e in history.epochs)
    examples = sum(e["train"]["examples"] for e in history.epochs)
    train_seconds = history.seconds
    flops = StackedRouters.from_routers(routers).train_flops_per_example() * examples
    result = {
        "num_examples": num_examples,
        "num_layers": num_layers,
        "hidden_size": hidden_size,
        "windows": windows,
        "bottleneck": bottleneck,
        "epochs": epochs,
        "batch_size": batch_size,
        "steps": steps,
        "train_seconds": train_seconds,
        "examples_per_s": examples / train_seconds,
        "steps_per_s": steps / train_seconds,
        "ms_per_step": 1000.0 * train_seconds / steps,
        "train_gflops_per_s": flops / train_seconds / 1e9,
        "setup_seconds": setup_seconds,
        "device": str(device or ("cuda" if torch.cuda.is_available() else "cpu")),
        "torch_threads": torch.get_num_threads(),
        "final_train_loss": history.epochs[-1]["train"]["loss"],
    }
    logger.info("router training benchmark: %s", result)
    return result



def write_feature_file(
    features_dir: str | os.PathLike[str],
    features: torch.Tensor,
    labels: torch.Tensor,
    wmask: torch.Tensor,
    *,
    model_id: str,
    key: dict[str, Any],
    dtype: str = "float16",
    chunk_rows: int = 256,
) -> Any:
    """Store in-memory ``features [N, L, W, d]``, ``labels [N, L]``, ``wmask [N, W]`` as a
    committed features file (example ids ``s0``, ``s1``, ...; dataset ``synthetic``)."""
    from drllm.routers.feature_store import FeatureFileWriter, feature_table

    n, num_layers, windows, hidden_size = features.shape
    with FeatureFileWriter(features_dir, key, num_layers=num_layers, windows=windows,
                           hidden_size=hidden_size, dtype=dtype, model_id=model_id) as writer:
        for start in range(0, n, chunk_rows):
            rows = range(start, min(n, start + chunk_rows))
            writer.write(feature_table(
                example_ids=[f"s{i}" for i in rows], datasets=["synthetic"] * len(rows),
                num_tokens=wmask[start:rows.stop].sum(1).tolist(),
                labels=labels[start:rows.stop].numpy(), wmask=wmask[start:rows.stop].numpy(),
                features=features[start:rows.stop].numpy(), dtype=dtype,
            ))
        return writer.commit()


def _arc_shards(out_dir: str, data_root: str, num_rows: int, seed: int) -> tuple[Any, int]:
    """Shards of ``num_rows`` ARC-Easy prompts (SmolLM2 chat template), random valid paths."""
    from drllm.data import DatasetConfig, load_examples
    from drllm.data.prompts import render_prompt
    from drllm.models.loading import DEFAULT_MODEL, ModelSpec, load_tokenizer

    spec = ModelSpec()
    tokenizer = load_tokenizer(spec)
    report = load_examples(DatasetConfig(name="arc_easy", path=os.path.join(data_root, "ai2_arc"),
                                         num_examples=num_rows))
    examples = report.examples[:num_rows]
    if len(examples) < num_rows:
        raise ValueError(f"{data_root}/ai2_arc yielded {len(examples)} examples, need {num_rows}")
    num_layers = 30
    rng = random.Random(seed)
    prompts = [render_prompt(ex, tokenizer, style="chat") for ex in examples]
    paths = [random_path(num_layers, rng, edits=rng.randint(1, 4)) for _ in examples]
    write_synthetic_shards(out_dir, examples, prompts, paths, model_id=DEFAULT_MODEL)
    token_counts = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    return spec, sum(token_counts)


def feature_pass_benchmark(
    data_root: str, workdir: str, num_rows: int = 32, batch_size: int = 8, seed: int = 0
) -> dict[str, Any]:
    """The feature pass on SmolLM2 over ARC-Easy prompts through a one-actor Ray Data pool.

    Returns ``feature_rows_per_s`` (rows / wall time of the whole pass: Ray Data start-up and
    the actor's model load included), ``feature_rows_per_s_model`` (rows / time of the model
    calls alone, measured in this process with the actor's thread count) and the prompt
    token count.
    """
    from drllm.routers.features import FeatureConfig, FeatureExtractor, run_feature_pass
    from drllm.shards import read_shards

    shards = os.path.join(workdir, "arc_shards")
    spec, tokens = _arc_shards(shards, data_root, num_rows, seed)
    cfg = FeatureConfig(batch_size=batch_size)
    start = time.perf_counter()
    info = run_feature_pass(shards, os.path.join(workdir, "arc_features"), spec, cfg,
                            progress=False, force=True)
    wall = time.perf_counter() - start
    extractor = FeatureExtractor(spec, windows=cfg.windows, dtype=cfg.dtype,
                                 num_threads=cfg.num_cpus_per_actor)
    table = read_shards(shards, columns=["example_id", "dataset", "rendered_prompt", "best_path"])
    start = time.perf_counter()
    for offset in range(0, table.num_rows, batch_size):
        extractor(table.slice(offset, batch_size))
    model_seconds = time.perf_counter() - start
    return {
        "feature_rows": info.rows,
        "feature_prompt_tokens": tokens,
        "feature_pass_seconds": wall,
        "feature_rows_per_s": info.rows / wall,
        "feature_rows_per_s_model": info.rows / model_seconds,
    }


def run_ray_train_benchmark(
    data_root: str = "../shared/data",
    num_examples: int = 4000,
    num_layers: int = 30,
    hidden_size: int = 576,
    windows: int = 8,
    epochs: int = 25,
    batch_size: int = 16,
    bottleneck: int = 128,
    feature_rows: int = 32,
    threads: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Router training through Ray Train on synthetic SmolLM2-shaped features, plus the
    feature-pass rate on SmolLM2 (see :func:`feature_pass_benchmark`).

    Starts a local Ray instance (and stops it) unless this process is already connected. One
    ``TorchTrainer`` worker reserves every CPU of the cluster and runs ``threads`` torch threads
    (``None``: one per reserved CPU).

    Returns:
        ``train_seconds`` (``TorchTrainer.fit`` wall time, Ray Train start-up included),
        ``loop_seconds`` (the epochs alone), ``overhead_seconds`` (the rest: Ray Train start-up
        and shutdown, loading the features, per-epoch checkpoints), ``examples_per_s``
        and ``train_gflops_per_s`` (over ``train_seconds``), the feature-pass numbers, the shape
        and the load average.
    """
    import tempfile

    import ray

    from drllm.cluster import ClusterSettings, connect
    from drllm.routers.train_job import RayTrainSettings, fit_routers

    started = connect(ClusterSettings(mode="local", num_cpus=os.cpu_count() or 2))
    try:
        with tempfile.TemporaryDirectory(prefix="drllm-bench-train-") as workdir:
            feature_stats = feature_pass_benchmark(data_root, workdir, feature_rows, seed=seed)
            features, labels, wmask = synthetic_features(
                num_examples, num_layers, hidden_size, windows, seed)
            key = {"synthetic": True, "seed": seed, "shape": list(features.shape)}
            write_feature_file(os.path.join(workdir, "features"), features, labels, wmask,
                               model_id="synthetic-smollm2-shape", key=key)
            del features
            cfg = TrainConfig(epochs=epochs, batch_size=batch_size, bottleneck=bottleneck,
                              windows=windows, seed=seed, val_fraction=0.0)
            outcome = fit_routers(os.path.join(workdir, "features"), cfg,
                                  RayTrainSettings(threads=threads),
                                  storage_path=os.path.join(workdir, "ray_train"))
    finally:
        cpus = int(ray.cluster_resources().get("CPU", 0)) if ray.is_initialized() else None
        if started:
            ray.shutdown()
    result = {
        **_throughput(outcome, cfg, num_examples, num_layers, hidden_size),
        "ray_cpus": cpus, "train_workers": 1, "worker_threads": threads or cpus,
        **feature_stats,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    logger.info("Ray Train router benchmark: %s", result)
    return result


def _throughput(
    outcome: Any, cfg: TrainConfig, num_examples: int, num_layers: int, hidden_size: int
) -> dict[str, Any]:
    """Shape and speed of a :func:`~drllm.routers.train_job.fit_routers` run."""
    loop = sum(h["epoch_seconds"] for h in outcome.history)
    examples = num_examples * cfg.epochs
    steps = cfg.epochs * -(-num_examples // cfg.batch_size)
    flops = StackedRouters(num_layers, hidden_size, cfg.bottleneck,
                           cfg.windows).train_flops_per_example()
    return {
        "num_examples": num_examples, "num_layers": num_layers, "hidden_size": hidden_size,
        "windows": cfg.windows, "bottleneck": cfg.bottleneck, "epochs": cfg.epochs,
        "batch_size": cfg.batch_size, "steps": steps,
        "train_seconds": outcome.seconds,
        "loop_seconds": loop,
        "overhead_seconds": outcome.seconds - loop,
        "ms_per_step": 1000.0 * loop / steps,
        "examples_per_s": examples / outcome.seconds,
        "train_gflops_per_s": flops * examples / outcome.seconds / 1e9,
        "final_train_loss": outcome.history[-1]["train_loss"],
    }


def add_arguments(parser: Any) -> None:
    """Options of ``python -m drllm.jobs.bench train``."""
    parser.add_argument("--data-root", default="../shared/data",
                        help="folder holding ai2_arc/ARC-Easy/train.parquet (default: %(default)s)")
    parser.add_argument("--num-examples", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--feature-rows", type=int, default=32,
                        help="ARC prompts through the SmolLM2 feature pass")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of the training worker (default: one per CPU)")
    parser.add_argument("--seed", type=int, default=0)


def run_from_args(args: Any) -> dict[str, Any]:
    """Run :func:`run_ray_train_benchmark` with the parsed options of :func:`add_arguments`."""
    return run_ray_train_benchmark(
        data_root=args.data_root, num_examples=args.num_examples, epochs=args.epochs,
        batch_size=args.batch_size, feature_rows=args.feature_rows, threads=args.threads,
        seed=args.seed,
    )
