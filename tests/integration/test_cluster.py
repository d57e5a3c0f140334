"""The search on real multi-node local Ray clusters (``ray.cluster_utils.Cluster``).

Each test runs its cluster in a subprocess: the session's ``ray_local`` instance stays untouched
(a process holds one Ray connection), and the cluster is torn down in the script's ``finally``
(``Cluster.shutdown`` stops only that cluster's own processes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

NODE_REMOVAL = textwrap.dedent('''
    import json, sys, threading, time
    import ray
    from ray.cluster_utils import Cluster
    from drllm.distributed import DriverConfig, EvaluatorSpec, PoolConfig, SearchDriver, create_pool
    from drllm.search import MCTSConfig
    from drllm.shards import ShardWriter, duplicates_dropped, read_shards
    from drllm.testing import DummyEvaluator
    from drllm.types import Example

    out, L, N = sys.argv[1], 6, 16
    examples = [Example(id=f"q{i}", dataset="toy", split="train", prompt=f"{i}+1?",
                        messages=({"role": "user", "content": f"{i}+1?"},), gold=str(i + 1),
                        grader="exact") for i in range(N)]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    report = {}
    try:
        keep = cluster.add_node(num_cpus=2)
        doomed = cluster.add_node(num_cpus=2)
        ray.init(address=cluster.address, namespace="nodes", log_to_driver=False)
        spec = EvaluatorSpec(DummyEvaluator, {"num_layers": L, "delay_s": 0.03})
        # GPUs asked on a cluster without any: a clear error within gpu_wait_s, no CPU fallback
        t0 = time.monotonic()
        try:
            create_pool(spec, PoolConfig(use_gpu=True, gpu_wait_s=3, name_prefix="gpu"))
        except TimeoutError as err:
            report["gpu_error"] = str(err)
        report["gpu_wait_s"] = time.monotonic() - t0
        pool = create_pool(spec, PoolConfig(num_actors=4, max_batch_size=2, max_restarts=3,
                                            scale_check_s=0.5, name_prefix="nodes"))
        removed = []

        class Sink(ShardWriter):
            def add(self, record):
                super().add(record)
                if not removed and self.rows_written + self.buffered >= 3:
                    removed.append(time.monotonic())
                    cluster.remove_node(doomed)   # its actors die mid-call
                    cluster.add_node(num_cpus=2)  # where they are placed again
        writer = Sink(out, writer_id="w0", num_layers=L, model_id="dummy", config={},
                      rows_per_shard=4)
        driver = SearchDriver(pool, MCTSConfig(num_simulations=8, seed=1),
                              DriverConfig(max_concurrent_trees=N), sink=writer,
                              render=lambda ex: ex.prompt, progress=False)
        summary = driver.run(examples)
        writer.close()
        report["ready_at_end"] = pool.workers_alive
        pool.close()
        table = read_shards(out)
        report.update(ids=sorted(table.column("example_id").to_pylist()),
                      duplicates=duplicates_dropped(table), lost=summary.lost_calls,
                      requeued=summary.requeued, removed=bool(removed))
    finally:
        ray.shutdown()
        cluster.shutdown()
    print("REPORT " + json.dumps(report))
''')


def _run(script: str, *args: str, timeout: float = 240) -> dict:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads(lines[-1][len("REPORT "):])


@pytest.mark.slow
def test_node_removed_mid_run_loses_nothing_and_gpus_are_never_faked(tmp_path):
    report = _run(NODE_REMOVAL, str(tmp_path / "shards"))
    assert report["removed"] and report["lost"] >= 1 and report["requeued"] >= 1
    assert report["ids"] == sorted(f"q{i}" for i in range(16))  # every example written once
    assert report["duplicates"] == 0
    assert report["ready_at_end"] >= 2  # survivors plus the actors placed on the new node
    assert "no GPU evaluator actor" in report["gpu_error"] and "pool.gpu_wait_s" in report[
        "gpu_error"]
    assert 3 <= report["gpu_wait_s"] < 30
