"""The search's Prometheus metrics reach the node's metrics export endpoint (loopback only)."""

from __future__ import annotations

import re
import time
import urllib.request

from drllm.distributed import (
    DriverConfig,
    EvaluatorSpec,
    ListSink,
    PoolConfig,
    run_search_job,
)
from drllm.search import MCTSConfig
from drllm.types import Example
from drllm.testing import DummyEvaluator

MODEL_TAG = "metrics-test-model"  # unique tag value: other tests in the session use "dummy"
EXPORT_TIMEOUT_S = 60.0


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def _total(text: str, name: str, **tags: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``tags``."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{name}\{{(.*)\}} ([0-9.eE+-]+)$", line)
        if m and all(f'{k}="{v}"' in m.group(1) for k, v in tags.items()):
            total += float(m.group(2))
    return total


def test_search_metrics_are_exported(ray_local):
    ray = ray_local
    examples = [
        Example(f"m{i}", "toy_metrics", "train", f"q{i}", (), "1", "exact") for i in range(6)
    ]
    sink = ListSink()
    summary = run_search_job(
        examples, sink=sink, render=lambda ex: ex.prompt,
        evaluator=EvaluatorSpec(DummyEvaluator, {"num_layers": 5, "model_id": MODEL_TAG}),
        mcts_config=MCTSConfig(num_simulations=6, seed=0),
        pool_config=PoolConfig(num_actors=1, requests_per_actor=4, name_prefix="metrics"),
        driver_config=DriverConfig(max_concurrent_trees=6), progress=False,
    )
    assert summary.searched == 6
    ports = {n["MetricsExportPort"] for n in ray.nodes() if n["Alive"]}
    assert ports, "no live node reports a metrics export port"
    port = ports.pop()
    want = {
        "ray_drllm_evaluations_total": (summary.evaluations, {"dataset": "toy_metrics"}),
        "ray_drllm_examples_done_total": (6, {"dataset": "toy_metrics"}),
        "ray_drllm_examples_improved_total": (summary.improved, {"dataset": "toy_metrics"}),
        "ray_drllm_batch_size_count": (None, {}),  # histogram observed in the actor process
        "ray_drllm_evaluation_latency_seconds_count": (None, {}),
    }
    if summary.memo_hits:
        want["ray_drllm_memo_hits_total"] = (summary.memo_hits, {"dataset": "toy_metrics"})
    deadline = time.monotonic() + EXPORT_TIMEOUT_S
    missing = list(want)
    while True:
        text = _scrape(port)
        missing = []
        for name, (value, tags) in want.items():
            got = _total(text, name, model=MODEL_TAG, **tags)
            if (value is None and got <= 0) or (value is not None and got != value):
                missing.append(f"{name}={got} (want {value if value is not None else '> 0'})")
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert not missing, f"metrics not exported within {EXPORT_TIMEOUT_S:.0f} s: {missing}"
    assert "ray_drllm_in_flight_requests" in text
    # One batch-size observation per actor batch of 1..4 requests (Ray reports histogram sums
    # from bucket midpoints, so only the count is exact).
    batches = _total(text, "ray_drllm_batch_size_count", model=MODEL_TAG)
    assert summary.evaluations / 4 <= batches <= summary.evaluations
