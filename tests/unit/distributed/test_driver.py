"""The MCTS driver over an in-process pool (no Ray): golden equivalence with the sequential
search, known-best bandit paths, batching and bounded in-flight calls, resume, fault handling."""

from __future__ import annotations

import pytest

from drllm.distributed import (
    DriverConfig,
    EvaluationPool,
    EvaluatorSpec,
    ListSink,
    LocalTransport,
    PoolConfig,
    PoolExhaustedError,
    SearchDriver,
    run_search_job,
    tree_config,
)
from drllm.paths import LayerPath
from drllm.search import MCTSConfig, run
from drllm.shards import ShardWriter, read_shards
from drllm.types import EvalRequest, Evaluation, Example
from drllm.testing import ConstantReward, DummyEvaluator, KeyedBlockReward, hash_reward

L = 6
MCTS = MCTSConfig(num_simulations=12, seed=3)


def make_examples(n: int, dataset: str = "toy") -> list[Example]:
    return [
        Example(
            id=f"q{i}", dataset=dataset, split="train", prompt=f"question {i}",
            messages=({"role": "user", "content": f"question {i}"},), gold="42", grader="exact",
        )
        for i in range(n)
    ]


def render(ex: Example) -> str:
    return f"<user>{ex.prompt}</user>"


def make_pool(workers: int = 2, in_flight: int = 8, retries: int = 2,
              restarts: int = 3, **dummy) -> EvaluationPool:
    spec = EvaluatorSpec(DummyEvaluator, {"num_layers": L, **dummy})
    pool = EvaluationPool(LocalTransport(spec, workers, restarts),
                          max_in_flight_per_worker=in_flight, max_request_retries=retries)
    pool.start()
    return pool


def drive(pool: EvaluationPool, examples, mcts=MCTS, trees: int = 16, per_tree: int = 1,
          **run_kw):
    sink = ListSink()
    driver = SearchDriver(pool, mcts, DriverConfig(max_concurrent_trees=trees,
                                                   max_pending_per_tree=per_tree),
                          sink=sink, render=render)
    return driver.run(examples, **run_kw), {r.example.id: r for r in sink.records}


def golden(ex: Example, reward_fn=hash_reward, mcts=MCTS):
    """The sequential search of one example with the same rewards and tree seed."""

    def evaluate(path: LayerPath) -> Evaluation:
        response = f"{ex.id}:{path.to_str()}"
        return Evaluation(reward_fn(ex.id, path), response, path.cost * 4, "dummy")

    return run(L, evaluate, tree_config(mcts, ex.id))


def test_driver_matches_sequential_search_exactly():
    examples = make_examples(10)
    summary, records = drive(make_pool(workers=2, in_flight=4), examples)
    assert sorted(records) == sorted(ex.id for ex in examples)
    for ex in examples:
        assert records[ex.id].result == golden(ex), ex.id
        assert records[ex.id].rendered_prompt == render(ex)
        assert records[ex.id].search_seconds >= 0
    assert summary.searched == 10
    assert summary.evaluations == sum(r.result.evaluations for r in records.values())
    assert summary.memo_hits == sum(r.result.memo_hits for r in records.values())
    assert summary.improved == sum(r.result.improved for r in records.values())
    assert summary.failed_evaluations == 0 and summary.requeued == 0


def test_tree_seeds_differ_per_example_and_are_stable():
    a, b = tree_config(MCTS, "q1"), tree_config(MCTS, "q2")
    assert a.seed != b.seed and a.seed == tree_config(MCTS, "q1").seed
    assert tree_config(MCTS, "q1", seed_per_example=False) is MCTS


def test_bandit_rewards_reach_the_known_best_paths():
    examples = make_examples(8)
    key = {ex.id: i % L for i, ex in enumerate(examples)}
    reward = KeyedBlockReward(key)
    mcts = MCTSConfig(num_simulations=40, seed=0)
    summary, records = drive(make_pool(reward_fn=reward), examples, mcts=mcts)
    for ex in examples:
        res = records[ex.id].result
        assert res.default_reward == 0.0
        assert res.best_reward == 1.0 and res.improved
        assert res.best_path[key[ex.id]] == 0, (ex.id, res.best_path)
        assert res.stopped_early  # the default was wrong and a correct path was found
        assert res == golden(ex, reward, mcts)
    assert summary.improved == 8 and summary.default_correct == 0


def test_requests_stream_and_each_worker_holds_at_most_its_bound():
    # All-wrong rewards: no early stop, every tree runs its full budget.
    pool = make_pool(workers=2, in_flight=4, reward_fn=lambda eid, path: 0.0)
    summary, _ = drive(pool, make_examples(24), trees=24)
    assert summary.evaluations == 24 * MCTS.num_simulations
    transport = pool.transport
    assert max(transport.max_held) == 4 and pool.stats.max_held == 4
    assert {w for w, _ in transport.send_log} == {0, 1}
    # 24 trees, 8 places: the workers are refilled as each request is answered
    assert pool.stats.requests_answered == summary.evaluations
    assert pool.idle and pool.held_per_worker == (0, 0)


def test_resume_skips_done_examples_and_counts_them():
    examples = make_examples(6)
    done = {("toy", "q0"), ("toy", "q3"), ("other", "q1")}
    summary, records = drive(make_pool(), examples, done_keys=done)
    assert sorted(records) == ["q1", "q2", "q4", "q5"]
    assert summary.skipped_done == 2 and summary.searched == 4


def test_invalid_rows_are_counted_and_never_stop_the_run():
    good = make_examples(3)
    bad_grader = Example("b1", "toy", "train", "x", (), "1", "no_such_grader")
    bad_gold = Example("b2", "toy", "train", "x", (), "Z", "mc_letter")
    bad_render = Example("boom", "toy", "train", "x", (), "1", "exact")

    def picky_render(ex):
        if ex.id == "boom":
            raise ValueError("cannot render")
        return render(ex)

    sink = ListSink()
    driver = SearchDriver(make_pool(), MCTS, DriverConfig(), sink=sink, render=picky_render)
    summary = driver.run([*good, bad_grader, bad_gold, bad_render, good[0]],
                         rejected={"missing answer": 5})
    assert sorted(r.example.id for r in sink.records) == ["q0", "q1", "q2"]
    assert summary.rejected == {"missing answer": 5, "unknown grader": 1, "invalid gold": 1,
                                "prompt render failed": 1}
    assert summary.rejected_total == 8 and summary.duplicates == 1


def test_backend_errors_are_retried_then_recorded_as_failures_not_rewards():
    """Every evaluation of q1 raises: after 2 retries its default path is a failure (not a
    reward of 0), so q1 gets no supervision row and is listed with its error."""
    examples = make_examples(4)
    pool = make_pool(retries=2, fail_example_ids=["q1"])
    summary, records = drive(pool, examples)
    assert sorted(records) == ["q0", "q2", "q3"]
    assert list(summary.default_failed) == ["q1"]
    assert "injected failure for example q1" in summary.default_failed["q1"]
    assert summary.failed_evaluations == 1  # the default path only: the tree stops there
    assert summary.retries == 2 * summary.failed_evaluations
    for ex in examples:
        if ex.id != "q1":
            assert records[ex.id].result == golden(ex)


def test_flaky_backend_errors_recover_with_identical_results():
    examples = make_examples(5)
    summary, records = drive(make_pool(workers=1, flaky_example_ids=["q2", "q4"]), examples)
    assert summary.failed_evaluations == 0 and summary.retries > 0
    for ex in examples:
        assert records[ex.id].result == golden(ex)


def test_error_results_are_marked():
    pool = make_pool(workers=1, retries=0, fail_example_ids=["q0"])
    pool.submit([EvalRequest("q0", "p", "42", "exact", LayerPath.default(L)),
                 EvalRequest("q1", "p", "42", "exact", LayerPath.default(L))])
    results = []
    while not pool.idle:
        results += pool.wait(0.1)
    by_id = {r.example_id: r for r in results}
    assert by_id["q0"].evaluation.failed and not by_id["q1"].evaluation.failed
    assert by_id["q0"].evaluation.reward == 0.0
    assert "InjectedFault" in by_id["q0"].evaluation.reason
    assert by_id["q1"].evaluation.reward == hash_reward("q1", LayerPath.default(L))
    assert pool.stats.failed == 1 and pool.stats.retries == 0


def test_dead_worker_requests_are_requeued_and_every_example_written_once():
    examples = make_examples(12)
    pool = make_pool(workers=2, in_flight=3, die_after=5)
    summary, records = drive(pool, examples)
    assert sorted(records) == sorted(ex.id for ex in examples)
    assert summary.requeued > 0 and summary.worker_losses > 0
    assert pool.transport.restarts == [1, 1] and summary.workers_gone == 0
    for ex in examples:
        assert records[ex.id].result == golden(ex)


def test_run_fails_cleanly_when_every_worker_is_gone():
    pool = make_pool(workers=2, restarts=0, die_after=2, die_after_restart=True)
    with pytest.raises(PoolExhaustedError, match="all 2 evaluator workers died"):
        drive(pool, make_examples(6))


def test_several_paths_per_tree_and_stale_results_after_early_stop():
    examples = make_examples(6)
    reward = KeyedBlockReward({ex.id: 2 for ex in examples})
    mcts = MCTSConfig(num_simulations=30, seed=1)
    summary, records = drive(make_pool(workers=2, in_flight=8, reward_fn=reward), examples,
                             mcts=mcts, per_tree=4)
    assert sorted(records) == sorted(ex.id for ex in examples)
    for rec in records.values():
        assert rec.result.best_reward == 1.0 and rec.result.best_path[2] == 0
    assert summary.searched == 6


def test_run_search_job_in_process_writes_shards_and_resumes(tmp_path):
    examples = make_examples(7)
    spec = EvaluatorSpec(DummyEvaluator, {"num_layers": L})
    kwargs = dict(render=render, mcts_config=MCTS, evaluator=spec, progress=False,
                  in_process=True, pool_config=PoolConfig(num_actors=2, requests_per_actor=4),
                  driver_config=DriverConfig(max_concurrent_trees=4))

    with ShardWriter(tmp_path, writer_id="w0", num_layers=L, model_id="dummy",
                     config={"test": 1}, rows_per_shard=2) as w:
        first = run_search_job(examples[:4], sink=w, **kwargs)
    assert first.searched == 4
    with ShardWriter(tmp_path, writer_id="w1", num_layers=L, model_id="dummy",
                     config={"test": 1}) as w:
        second = run_search_job(examples, sink=w, **kwargs)
    with ShardWriter(tmp_path, writer_id="w2", num_layers=L, model_id="dummy",
                     config={"test": 1}) as w:
        third = run_search_job(examples, sink=w, **kwargs)
    assert second.searched == 3 and second.skipped_done == 4
    assert third.searched == 0 and third.skipped_done == 7 and third.num_workers == 0
    ids = read_shards(tmp_path).column("example_id").to_pylist()
    assert sorted(ids) == sorted(ex.id for ex in examples)


def test_writer_for_another_model_fails_before_searching(tmp_path):
    spec = EvaluatorSpec(DummyEvaluator, {"num_layers": L})
    with ShardWriter(tmp_path, writer_id="w0", num_layers=L + 1, model_id="dummy",
                     config={}) as w:
        with pytest.raises(ValueError, match="L=7"):
            run_search_job(make_examples(2), sink=w, render=render, evaluator=spec,
                           in_process=True, progress=False)


def test_failed_evaluations_are_not_rewards_and_the_search_goes_on():
    """Paths whose evaluation fails for good are counted, never retained or rewarded; the tree
    tries other edits, so every example still gets a full budget of real evaluations."""
    examples = make_examples(6)
    failing = ["SEEEEE", "ESEEEE", "EESEEE", "REEEEE"]
    pool = make_pool(workers=1, retries=0, fail_paths=failing)
    summary, records = drive(pool, examples)
    assert sorted(records) == sorted(ex.id for ex in examples)
    assert summary.failed_evaluations > 0
    total_failed = 0
    for rec in records.values():
        res = rec.result
        assert all(p.to_str() not in failing for p in res.good_paths)
        assert res.best_path.to_str() not in failing
        total_failed += res.failed_evaluations
        if not res.solved:
            assert res.best_path == res.default_path and res.good_paths == ()
    assert total_failed == summary.failed_evaluations


def test_an_example_whose_default_path_fails_is_not_written_and_is_retried_on_resume(tmp_path):
    examples = make_examples(4)
    spec = EvaluatorSpec(DummyEvaluator, {"num_layers": L, "fail_example_ids": ["q2"]})
    kwargs = dict(render=render, mcts_config=MCTS, progress=False, in_process=True,
                  pool_config=PoolConfig(num_actors=1, requests_per_actor=4, max_request_retries=1))

    def writer():
        return ShardWriter(tmp_path, writer_id="w0", num_layers=L, model_id="dummy",
                           config={"test": 1})

    with writer() as w:
        first = run_search_job(examples, sink=w, evaluator=spec, **kwargs)
    assert first.searched == 3 and list(first.default_failed) == ["q2"]
    assert "InjectedFault" in first.default_failed["q2"]
    assert "q2" not in read_shards(tmp_path).column("example_id").to_pylist()
    assert first.improved <= first.searched  # q2 is never counted as improved
    healed = EvaluatorSpec(DummyEvaluator, {"num_layers": L})
    with writer() as w:
        second = run_search_job(examples, sink=w, evaluator=healed, **kwargs)
    assert second.searched == 1 and second.skipped_done == 3 and not second.default_failed
    assert sorted(read_shards(tmp_path).column("example_id").to_pylist()) == [
        "q0", "q1", "q2", "q3"]


def test_unsolved_examples_are_labelled_with_the_default_path(tmp_path):
    """No reward ever reaches 1: every row is unsolved, its label the default path."""
    examples = make_examples(5)
    pool = make_pool(workers=1, reward_fn=ConstantReward(0.0))
    summary, records = drive(pool, examples)
    assert summary.solved == 0 and summary.mean_layers_saved_solved == 0.0
    for rec in records.values():
        res = rec.result
        assert not res.solved and res.best_path == res.default_path
        assert res.good_paths == () and res.layers_saved == 0 and not res.improved


def test_the_young_gc_threshold_is_raised_during_a_run_and_restored():
    import gc

    from drllm.distributed.driver import GC_YOUNG_THRESHOLD, young_gc_threshold

    before = gc.get_threshold()
    seen = []

    class Probe(ListSink):
        def add(self, record):
            seen.append(gc.get_threshold()[0])
            super().add(record)

    driver = SearchDriver(make_pool(), MCTS, DriverConfig(), sink=Probe(), render=render)
    driver.run(make_examples(2))
    assert seen == [max(GC_YOUNG_THRESHOLD, before[0])] * 2
    assert gc.get_threshold() == before
    with pytest.raises(RuntimeError), young_gc_threshold(before[0] + 1):
        assert gc.get_threshold() == (before[0] + 1, *before[1:])
        raise RuntimeError("restored on the way out")
    assert gc.get_threshold() == before
