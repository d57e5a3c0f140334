"""The search job on a local Ray cluster: evaluator actors, the driver, faults, resume.

Every test shares the session's ``ray_local`` cluster (2 CPUs). Searches use the dummy backend
(deterministic rewards) or a tiny random model, so each tree's result is known exactly: it must
equal the sequential in-process search of the same example with the same tree seed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from drllm.distributed import (
    DriverConfig,
    EvaluationPool,
    EvaluatorContext,
    EvaluatorSpec,
    GenerationConfig,
    ListSink,
    PoolConfig,
    SearchDriver,
    run_search_job,
    tree_config,
)
from drllm.distributed.executor_evaluator import ExecutorEvaluator
from drllm.testing.models import TinyModelLoader
from drllm.paths import LayerPath
from drllm.search import MCTSConfig, run
from drllm.shards import ShardWriter, parse_shard_name, read_shards, shard_files
from drllm.types import EvalRequest, Evaluation, Example
from drllm.testing import DummyEvaluator, hash_reward

REPO = Path(__file__).resolve().parents[2]
L = 6
MCTS = MCTSConfig(num_simulations=10, seed=5)


def make_examples(n: int, prefix: str = "q") -> list[Example]:
    return [
        Example(id=f"{prefix}{i}", dataset="toy", split="train", prompt=f"What is {i} + 1?",
                messages=({"role": "user", "content": f"What is {i} + 1?"},), gold=str(i + 1),
                grader="exact")
        for i in range(n)
    ]


def render(ex: Example) -> str:
    return ex.prompt


def dummy_golden(ex: Example, mcts: MCTSConfig = MCTS):
    def evaluate(path: LayerPath) -> Evaluation:
        return Evaluation(hash_reward(ex.id, path), f"{ex.id}:{path.to_str()}", path.cost * 4,
                          "dummy")

    return run(L, evaluate, tree_config(mcts, ex.id))


def ids_in(out_dir) -> list[str]:
    return read_shards(out_dir).column("example_id").to_pylist()


def test_end_to_end_two_actors_match_the_sequential_search(ray_local, tmp_path):
    examples = make_examples(12)
    spec = EvaluatorSpec(DummyEvaluator, {"num_layers": L, "delay_s": 0.005})
    with ShardWriter(tmp_path, writer_id="w0", num_layers=L, model_id="dummy", config={},
                     rows_per_shard=5) as writer:
        summary = run_search_job(
            examples, sink=writer, render=render, evaluator=spec, mcts_config=MCTS,
            pool_config=PoolConfig(num_actors=2, requests_per_actor=4, name_prefix="e2e"),
            driver_config=DriverConfig(max_concurrent_trees=8), progress=False,
        )
    assert summary.num_workers == 2 and summary.searched == 12
    table = read_shards(tmp_path)
    assert sorted(table.column("example_id").to_pylist()) == sorted(ex.id for ex in examples)
    rows = {r["example_id"]: r for r in table.to_pylist()}
    for ex in examples:
        want = dummy_golden(ex)
        assert rows[ex.id]["best_path"] == list(want.best_path)
        assert rows[ex.id]["evaluations"] == want.evaluations
        assert rows[ex.id]["default_response"] == want.default_response
    assert summary.evaluations == sum(r["evaluations"] for r in rows.values())
    assert summary.mean_batch_size > 1.0


def test_backend_errors_in_actors_become_counted_failures_not_rewards(ray_local):
    """q1 always fails in the actor: its default path is a failure, so it gets no row and is
    listed with its error; q2 fails once per path and recovers with the golden result."""
    examples = make_examples(4)
    spec = EvaluatorSpec(DummyEvaluator, {"num_layers": L, "fail_example_ids": ["q1"],
                                   "flaky_example_ids": ["q2"]})
    sink = ListSink()
    summary = run_search_job(
        examples, sink=sink, render=render, evaluator=spec, mcts_config=MCTS,
        pool_config=PoolConfig(num_actors=1, max_request_retries=1, name_prefix="errors"),
        progress=False,
    )
    records = {r.example.id: r.result for r in sink.records}
    assert sorted(records) == ["q0", "q2", "q3"]
    assert list(summary.default_failed) == ["q1"]
    assert "InjectedFault" in summary.default_failed["q1"]
    assert summary.failed_evaluations == 1  # q1's default path; its tree stops there
    assert summary.retries >= summary.failed_evaluations + 1  # q1 once, q2 at least once
    for ex in examples:
        if ex.id != "q1":
            assert records[ex.id] == dummy_golden(ex)


def _stats_once_back(actor, timeout_s: float = 60.0) -> dict:
    """``actor.stats()`` once the (restarting) actor answers; the pool does not wait for it."""
    import ray

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return ray.get(actor.stats.remote(), timeout=10)
        except ray.exceptions.RayActorError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.slow
def test_killed_actor_requests_are_requeued(ray_local):
    import ray

    examples = make_examples(20)  # more than the trees in flight: work left after 2 records
    spec = EvaluatorSpec(DummyEvaluator, {"num_layers": L, "delay_s": 0.05})
    # min_actors=2: the run starts with both actors up, so actor 0 holds requests to lose (a
    # loaded CI machine could otherwise finish the dummy search on actor 1 alone)
    pool = EvaluationPool.create(spec, PoolConfig(num_actors=2, min_actors=2, requests_per_actor=4,
                                                  max_restarts=2, name_prefix="kill"))
    victim = pool.transport.actors[0]
    assert ray.get_actor("kill-0", namespace="drllm") is not None

    class KillingSink(ListSink):
        """Kills actor 0 (Ray restarts it) mid-run: once 2 searches are done and it has calls."""

        killed = False

        def add(self, record):
            super().add(record)
            if not self.killed and len(self.records) >= 2 and pool.held_per_worker[0] > 0:
                self.killed = True
                ray.kill(victim, no_restart=False)

    sink = KillingSink()
    try:
        driver = SearchDriver(pool, MCTS, DriverConfig(max_concurrent_trees=6), sink=sink,
                              render=render)
        summary = driver.run(examples)
        stats = _stats_once_back(victim)
    finally:
        pool.close()
    assert sink.killed and summary.worker_losses >= 1 and summary.requeued >= 1
    assert stats["restarted"]  # the same named actor came back and served requests again
    got = sorted(r.example.id for r in sink.records)
    assert got == sorted(ex.id for ex in examples)  # every example exactly once
    for rec in sink.records:
        assert rec.result == dummy_golden(rec.example)


@pytest.mark.slow
def test_actor_dead_for_good_leaves_the_survivor_to_finish(ray_local, tmp_path):
    examples = make_examples(8)
    spec = EvaluatorSpec(DummyEvaluator, {"num_layers": L, "die_after": 3, "die_on_workers": [0]})
    with ShardWriter(tmp_path, writer_id="w0", num_layers=L, model_id="dummy",
                     config={}) as writer:
        summary = run_search_job(
            examples, sink=writer, render=render, evaluator=spec, mcts_config=MCTS,
            pool_config=PoolConfig(num_actors=2, min_actors=2, requests_per_actor=2,
                                   max_restarts=0, name_prefix="gone"),  # both up: 0 must die
            progress=False,
        )
    assert summary.worker_losses >= 1 and summary.workers_gone == 1 and summary.searched == 8
    assert sorted(ids_in(tmp_path)) == sorted(ex.id for ex in examples)


def test_tiny_model_through_the_real_executor_backend(ray_local):
    from drllm.models.tiny import tiny_tokenizer

    loader = TinyModelLoader("llama", num_layers=4, hidden_size=64, seed=1)
    gen = GenerationConfig(max_new_tokens=6)
    mcts = MCTSConfig(num_simulations=6, seed=0)
    spec = EvaluatorSpec(ExecutorEvaluator, {"model": loader, "generation": gen,
                                      "constraints": mcts.constraints})
    tok = tiny_tokenizer()
    examples = make_examples(4, prefix="t")

    def render_chat(ex):
        return tok.apply_chat_template(list(ex.messages), add_generation_prompt=True,
                                       tokenize=False)

    sink = ListSink()
    summary = run_search_job(
        examples, sink=sink, render=render_chat, evaluator=spec, mcts_config=mcts,
        pool_config=PoolConfig(num_actors=1, requests_per_actor=8, name_prefix="tiny"),
        progress=False,
    )
    assert summary.searched == 4 and summary.model_id == "tiny-llama-L4-d64-s1"
    local = ExecutorEvaluator.from_options(EvaluatorContext(), model=loader, generation=gen,
                                           constraints=mcts.constraints)
    for rec in sink.records:
        ex = rec.example

        def evaluate(path, ex=ex):
            request = EvalRequest(ex.id, render_chat(ex), ex.gold, ex.grader, path)
            return local.evaluate([request])[0]

        want = run(4, evaluate, tree_config(mcts, ex.id))
        assert rec.result == want, ex.id
        assert rec.result.default_response  # real generated text came back from the actor
        assert rec.model_id == "tiny-llama-L4-d64-s1"


_DRIVER_SCRIPT = textwrap.dedent("""
    import logging, sys
    import ray
    from drllm.distributed import (DriverConfig, EvaluatorSpec, PoolConfig, run_search_job)
    from drllm.search import MCTSConfig
    from drllm.testing import DummyEvaluator
    from drllm.shards import ShardWriter
    from drllm.types import Example

    address, out_dir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    logging.basicConfig(level=logging.INFO)
    ray.init(address=address, log_to_driver=False)
    examples = [Example(f"q{i}", "toy", "train", f"What is {i} + 1?", (), str(i + 1), "exact")
                for i in range(n)]
    with ShardWriter(out_dir, writer_id="sub", num_layers=6, model_id="dummy", config={},
                     rows_per_shard=1) as writer:
        run_search_job(examples, sink=writer, render=lambda ex: ex.prompt,
                       evaluator=EvaluatorSpec(DummyEvaluator, {"num_layers": 6, "delay_s": 0.1}),
                       mcts_config=MCTSConfig(num_simulations=10, seed=5),
                       pool_config=PoolConfig(num_actors=1, requests_per_actor=2,
                                              name_prefix="sub"),
                       driver_config=DriverConfig(max_concurrent_trees=2), progress=False)
""")


def _cluster_auth_mode() -> str:
    """The auth mode the session's cluster runs with, for a second driver joining it."""
    try:
        from ray._private.authentication.authentication_utils import (
            get_authentication_mode_name,
        )
        from ray._raylet import get_authentication_mode

        return get_authentication_mode_name(get_authentication_mode())
    except ImportError:
        return os.environ.get("RAY_AUTH_MODE", "disabled")


@pytest.mark.slow
def test_killed_driver_resumes_without_redoing_finished_examples(ray_local, tmp_path):
    n = 12
    address = ray_local.get_runtime_context().gcs_address
    env = {**os.environ, "RAY_AUTH_MODE": _cluster_auth_mode(), "OMP_NUM_THREADS": "1"}
    out_dir = tmp_path / "shards"
    log = open(tmp_path / "driver.log", "wb")
    proc = subprocess.Popen([sys.executable, "-c", _DRIVER_SCRIPT, address, str(out_dir), str(n)],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while len(shard_files(out_dir)) < 3:
            assert proc.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the subprocess driver wrote no shards in time"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    before = ids_in(out_dir)
    assert 3 <= len(before) < n, "kill the driver mid-run"
    assert len(set(before)) == len(before)

    examples = [Example(f"q{i}", "toy", "train", f"What is {i} + 1?", (), str(i + 1), "exact")
                for i in range(n)]
    with ShardWriter(out_dir, writer_id="rerun", num_layers=L, model_id="dummy", config={},
                     rows_per_shard=4) as writer:
        summary = run_search_job(
            examples, sink=writer, render=render, mcts_config=MCTS,
            evaluator=EvaluatorSpec(DummyEvaluator, {"num_layers": L}),
            pool_config=PoolConfig(num_actors=1, name_prefix="rerun"), progress=False,
        )
    assert summary.skipped_done == len(before)
    assert summary.searched == n - len(before)
    ids = ids_in(out_dir)
    assert sorted(ids) == sorted(ex.id for ex in examples)  # every id exactly once
    by_writer: dict[str, list[str]] = {}
    for f in shard_files(out_dir):
        writer_id = parse_shard_name(f.name)[0]
        by_writer.setdefault(writer_id, []).extend(
            pq.read_table(f, columns=["example_id"]).column(0).to_pylist())
    assert sorted(by_writer["sub"]) == sorted(before)
    assert set(by_writer["rerun"]).isdisjoint(before)  # the rerun redid nothing
    assert len(by_writer["rerun"]) == n - len(before)
