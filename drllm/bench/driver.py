"""The central driver's ceiling: evaluations/s with an instant evaluator, and where time goes.

Workload (issue 21): ``num_examples`` ``synthetic_arith`` questions, a 30-block model, the
paper's MCTS (50 simulations) and :class:`~drllm.testing.DummyEvaluator` with a constant reward
0, so no search stops early and every example runs all its simulations; finished searches go to
a real :class:`~drllm.shards.ShardWriter` (a temporary directory). The evaluator costs nothing,
so evals/s is what the driver (trees, requests, pool, transport, writer) can sustain:

* ``inprocess``: one :class:`~drllm.distributed.LocalTransport` worker, for every setting of
  trees in flight x batch size in the grid;
* ``ray``: two evaluator actors on a local Ray instance, for the same grid (``--ray-actors``).

Then one in-process and one Ray run at their best settings are repeated with stage timers
(:mod:`drllm.bench.stages`, exclusive wall time of the driver process's methods): tree
selection, expansion and backup; request building; dispatch; the evaluator (in process) or Ray
calls (serializing requests), waiting and results (deserializing); result handling; finishing
searches; shard writing; the rest of the driver loop.

Machine load (``os.getloadavg``) is reported beside the figures: the CPU is shared.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

from drllm.bench.stages import StageTimer
from drllm.distributed import (
    DriverConfig,
    EvaluationPool,
    EvaluatorSpec,
    LocalTransport,
    PoolConfig,
    SearchDriver,
)
from drllm.search import MCTSConfig
from drllm.shards import ShardWriter
from drllm.types import Example

logger = logging.getLogger(__name__)

NUM_LAYERS = 30
TARGETS = {"evals_s_inprocess": 5000.0, "evals_s_ray": 3000.0}



def _stage_targets(ray: bool) -> list[tuple[type, str, str]]:
    """The methods timed by the profile run, and their stages (see :mod:`drllm.bench.stages`)."""
    from drllm.distributed.driver import SearchDriver as Driver
    from drllm.distributed.ray_transport import RayTransport
    from drllm.search import SearchTree

    tree = "tree: selection, expansion, backup"
    targets = [
        (Driver, "run", "driver loop"),
        (EvaluationPool, "wait", "driver loop"),
        (SearchTree, "ask", tree), (SearchTree, "tell", tree), (SearchTree, "done", tree),
        (SearchTree, "__init__", tree), (SearchTree, "result", tree),
        (Driver, "_ask", "request building"), (Driver, "_activate", "request building"),
        (EvaluationPool, "submit", "request building"),
        (EvaluationPool, "dispatch", "dispatch (routing)"),
        (EvaluationPool, "_answer", "result handling"), (Driver, "_tell", "result handling"),
        (Driver, "_finish_done_trees", "finishing searches"),
        (ShardWriter, "add", "shard writing"), (ShardWriter, "flush_if_due", "shard writing"),
        (ShardWriter, "close", "shard writing"),
    ]
    if ray:
        targets += [(RayTransport, "send", "ray calls (serializing requests)"),
                    (RayTransport, "wait", "ray wait (actors evaluating)"),
                    (RayTransport, "_settle", "ray results (deserializing)")]
    else:
        targets += [(LocalTransport, "send", "dispatch (routing)"),
                    (LocalTransport, "wait", "evaluator (in process)")]
    return targets


def _workload(num_examples: int, seed: int) -> list[Example]:
    from drllm.data import DatasetConfig, load_examples

    report = load_examples(DatasetConfig(name="synthetic_arith", num_examples=num_examples,
                                         seed=seed))
    return list(report.examples)


def _spec() -> EvaluatorSpec:
    from drllm.testing import ConstantReward, DummyEvaluator

    return EvaluatorSpec(DummyEvaluator, {"num_layers": NUM_LAYERS,
                                          "reward_fn": ConstantReward(0.0)})


def _render(example: Example) -> str:
    return example.prompt


def _in_process_pool(batch: int) -> EvaluationPool:
    pool = EvaluationPool(LocalTransport(_spec(), 1), max_in_flight_per_worker=batch)
    pool.start()
    return pool


def _ray_pool(batch: int, actors: int) -> EvaluationPool:
    config = PoolConfig(num_actors=actors, num_cpus_per_actor=0.5, use_gpu=False,
                        requests_per_actor=batch, name_prefix=f"bench-driver-{batch}")
    return EvaluationPool.create(_spec(), config, enable_metrics=False)


def _drive(pool: EvaluationPool, examples: Sequence[Example], mcts: MCTSConfig, trees: int,
           out_dir: Path) -> dict[str, Any]:
    """One search of every example into a fresh shard directory; its throughput."""
    writer = ShardWriter(out_dir, writer_id="bench", num_layers=NUM_LAYERS, model_id="dummy",
                         config={"bench": "driver"})
    driver = SearchDriver(pool, mcts, DriverConfig(max_concurrent_trees=trees),
                          sink=writer, render=_render)
    try:
        summary = driver.run(examples)
    finally:
        writer.close()
    return {"evaluations": summary.evaluations, "wall_seconds": round(summary.wall_seconds, 3),
            "evals_s": round(summary.evals_per_s, 1),
            "mean_batch_size": round(summary.mean_batch_size, 1)}


def _sweep(label: str, make_pool: Any, grid: Sequence[tuple[int, int]],
           examples: Sequence[Example], mcts: MCTSConfig, root: Path) -> list[dict[str, Any]]:
    """Every (trees, batch) setting, one pool per batch size; one run each."""
    runs = []
    for batch in sorted({b for _, b in grid}):
        pool = make_pool(batch)
        try:  # a small warm-up run first: imports (pyarrow, pandas) and first calls
            _drive(pool, examples[:8], mcts, 8, root / f"{label}-warmup-{batch}")
            for trees in sorted(t for t, b in grid if b == batch):
                out = _drive(pool, examples, mcts, trees, root / f"{label}-{trees}-{batch}")
                out.update(trees=trees, batch=batch, load_avg_1m=round(os.getloadavg()[0], 2))
                logger.info("driver bench %s: %s", label, out)
                runs.append(out)
        finally:
            pool.close()
    return runs


def _profiled(make_pool: Any, best: dict[str, Any], examples: Sequence[Example],
              mcts: MCTSConfig, out_dir: Path, ray: bool) -> dict[str, Any]:
    """One run at ``best``'s setting with stage timers: each stage's share of the wall time
    and microseconds per evaluation."""
    pool = make_pool(best["batch"])
    timer = StageTimer(_stage_targets(ray))
    try:
        _drive(pool, examples[:8], mcts, 8, out_dir.with_name(out_dir.name + "-warmup"))
        with timer.installed():
            run = _drive(pool, examples, mcts, best["trees"], out_dir)
    finally:
        pool.close()
    evals = max(run["evaluations"], 1)
    return {"trees": best["trees"], "batch": best["batch"], "evals_s_timed": run["evals_s"],
            "shares": timer.shares(),
            "us_per_eval": {k: round(v / evals * 1e6, 1) for k, v in
                            sorted(timer.seconds.items(), key=lambda kv: -kv[1])}}


def run_driver_benchmark(
    *,
    num_examples: int = 512,
    num_simulations: int = 50,
    trees: Sequence[int] = (64, 256, 1024),
    batch_sizes: Sequence[int] = (16, 64, 256),
    full_grid: bool = False,
    ray_actors: int = 2,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure the driver's evaluations/s in process and on Ray, and profile both.

    Args:
        num_examples: ``synthetic_arith`` questions searched per run.
        num_simulations: MCTS budget per question (every one is spent: reward 0).
        trees: trees in flight (``driver.max_concurrent_trees``) to try.
        batch_sizes: requests held per worker (``pool.requests_per_actor``) to try.
        full_grid: every (trees, batch) pair; default: trees at the middle batch size, and
            batch sizes at the middle tree count (a cross through the grid).
        ray_actors: evaluator actors of the Ray runs (0: skip Ray).
        seed: dataset sample and MCTS seed.

    Returns:
        ``evals_s_inprocess`` / ``evals_s_ray`` at their best settings, ``best_*`` settings,
        ``profile_inprocess`` / ``profile_ray`` (stage shares and microseconds per
        evaluation), every run under ``runs``, ``load_avg`` before and after, ``targets``.
    """
    examples = _workload(num_examples, seed)
    mcts = MCTSConfig(num_simulations=num_simulations, seed=seed)
    grid = _grid(trees, batch_sizes, full_grid)
    load_before = [round(x, 2) for x in os.getloadavg()]
    result: dict[str, Any] = {"workload": {
        "examples": len(examples), "num_simulations": num_simulations, "num_layers": NUM_LAYERS,
        "evaluator": "DummyEvaluator(ConstantReward(0))", "grid": grid, "ray_actors": ray_actors,
        "cpu_count": os.cpu_count()}}
    with tempfile.TemporaryDirectory(prefix="drllm-bench-driver-") as tmp:
        root = Path(tmp)
        local = _sweep("inprocess", _in_process_pool, grid, examples, mcts, root)
        best_local = max(local, key=lambda r: r["evals_s"])
        result.update(evals_s_inprocess=best_local["evals_s"], runs={"inprocess": local},
                      best_inprocess={"trees": best_local["trees"], "batch": best_local["batch"]})
        result["profile_inprocess"] = _profiled(_in_process_pool, best_local, examples, mcts,
                                                root / "profile-inprocess", ray=False)
        if ray_actors:
            import ray

            from drllm.cluster import ClusterSettings, connect

            started = connect(ClusterSettings(mode="local", num_cpus=max(2, os.cpu_count() or 2)))
            try:
                make = lambda batch: _ray_pool(batch, ray_actors)  # noqa: E731
                remote = _sweep("ray", make, grid, examples, mcts, root)
                best_ray = max(remote, key=lambda r: r["evals_s"])
                result.update(evals_s_ray=best_ray["evals_s"],
                              best_ray={"trees": best_ray["trees"], "batch": best_ray["batch"]})
                result["runs"]["ray"] = remote
                result["profile_ray"] = _profiled(make, best_ray, examples, mcts,
                                                  root / "profile-ray", ray=True)
            finally:
                if started:
                    ray.shutdown()
    result["load_avg"] = {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]}
    result["targets"] = dict(TARGETS)
    result["met"] = {k: result.get(k, 0.0) >= v for k, v in TARGETS.items()}
    return result


def _grid(trees: Sequence[int], batch_sizes: Sequence[int], full: bool) -> list[tuple[int, int]]:
    if full:
        return [(t, b) for t in trees for b in batch_sizes]
    mid_t, mid_b = sorted(trees)[len(trees) // 2], sorted(batch_sizes)[len(batch_sizes) // 2]
    cross = [(t, mid_b) for t in trees] + [(mid_t, b) for b in batch_sizes]
    return sorted(set(cross))


def add_arguments(parser: Any) -> None:
    """Options of ``python -m drllm.jobs.bench driver``."""
    parser.add_argument("--num-examples", type=int, default=512)
    parser.add_argument("--num-simulations", type=int, default=50)
    parser.add_argument("--trees", type=lambda s: [int(x) for x in s.split(",")],
                        default=[64, 256, 1024], help="comma-separated trees in flight")
    parser.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")],
                        default=[16, 64, 256], help="comma-separated requests per call")
    parser.add_argument("--full-grid", action="store_true",
                        help="every (trees, batch) pair instead of a cross through the grid")
    parser.add_argument("--ray-actors", type=int, default=2, help="0: in process only")
    parser.add_argument("--seed", type=int, default=0)


def run_from_args(args: Any) -> dict[str, Any]:
    """Run :func:`run_driver_benchmark` with the parsed options of :func:`add_arguments`."""
    return run_driver_benchmark(
        num_examples=args.num_examples, num_simulations=args.num_simulations, trees=args.trees,
        batch_sizes=args.batch_sizes, full_grid=args.full_grid, ray_actors=args.ray_actors,
        seed=args.seed,
    )
