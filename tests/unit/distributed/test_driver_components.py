"""Pieces under the driver: configs, actor resources, the async batcher, the backends."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from drllm.distributed import (
    DriverConfig,
    EvalError,
    EvaluatorContext,
    EvaluatorSpec,
    GenerationConfig,
    PoolConfig,
    RunSummary,
    WorkerLostError,
    resolve_resources,
)
from drllm.distributed.batcher import RequestBatcher
from drllm.distributed.evaluator import evaluate_isolating_errors
from drllm.distributed.executor_evaluator import ExecutorEvaluator
from drllm.paths import LayerPath
from drllm.rewards import get_grader
from drllm.types import EvalRequest
from drllm.testing import DummyEvaluator

# ---------------------------------------------------------------------------- configs


@pytest.mark.parametrize("kwargs, match", [
    ({"max_batch_size": 0}, "max_batch_size"),
    ({"num_actors": 0}, "num_actors"),
    ({"use_gpu": "yes"}, "use_gpu"),
    ({"batch_wait_ms": -1}, "batch_wait_ms"),
    ({"num_gpus_per_actor": 0}, "num_gpus_per_actor"),
    ({"max_in_flight_per_actor": 0}, "max_in_flight_per_actor"),
    ({"namespace": ""}, "namespace"),
])
def test_pool_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PoolConfig(**kwargs)


def test_generation_and_driver_configs_validate():
    assert GenerationConfig(16, ["\n\n"]).stop_strings == ("\n\n",)
    with pytest.raises(ValueError, match="not one string"):
        GenerationConfig(16, "\n")
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerationConfig(0)
    with pytest.raises(ValueError, match="max_concurrent_trees"):
        DriverConfig(max_concurrent_trees=0)
    with pytest.raises(ValueError, match="poll_interval_s"):
        DriverConfig(poll_interval_s=0)


def test_resources_cpu_cluster():
    res = resolve_resources(PoolConfig(), {"CPU": 8.0})
    assert (res.num_actors, res.num_cpus, res.num_gpus, res.num_threads, res.device) == (
        8, 1.0, 0.0, 1, None)
    res = resolve_resources(PoolConfig(num_actors=2, num_cpus_per_actor=3), {"CPU": 8.0})
    assert (res.num_actors, res.num_cpus, res.num_threads) == (2, 3.0, 3)
    with pytest.raises(ValueError, match="need 6 CPUs but the cluster has 4"):
        resolve_resources(PoolConfig(num_actors=3, num_cpus_per_actor=2), {"CPU": 4.0})


def test_resources_gpu_cluster_one_actor_per_gpu():
    res = resolve_resources(PoolConfig(), {"CPU": 32.0, "GPU": 4.0})
    assert (res.num_actors, res.num_gpus, res.device) == (4, 1.0, "cuda")
    res = resolve_resources(PoolConfig(use_gpu=False, num_actors=2), {"CPU": 32.0, "GPU": 4.0})
    assert (res.num_gpus, res.device) == (0.0, None)
    with pytest.raises(ValueError, match="need 5 GPUs"):
        resolve_resources(PoolConfig(num_actors=5), {"CPU": 32.0, "GPU": 4.0})


def test_explicit_gpu_request_on_cpu_cluster_fails_fast():
    with pytest.raises(ValueError, match="no GPU"):
        resolve_resources(PoolConfig(use_gpu=True), {"CPU": 8.0})


def test_summary_round_trip():
    s = RunSummary("m", 4, 2, 10, skipped_done=2, rejected={"invalid gold": 3}, searched=5,
                   evaluations=40, wall_seconds=2.0, evals_per_s=20.0)
    d = s.to_dict()
    assert d["rejected_total"] == 3 and d["rejected"] == {"invalid gold": 3}
    assert "40 (20.00/s" in s.format() and "invalid gold: 3" in s.format()


# ---------------------------------------------------------------------------- batcher


def _collect_batches(max_batch: int, wait_s: float, calls: list[list[int]], delay: float = 0.0):
    seen: list[list[int]] = []
    threads: set[int] = set()

    def run_batch(batch):
        threads.add(threading.get_ident())
        seen.append(list(batch))
        time.sleep(delay)
        return [x * 10 for x in batch]

    async def main():
        batcher = RequestBatcher(run_batch, max_batch_size=max_batch, wait_s=wait_s)
        results = await asyncio.gather(*(batcher.submit(c) for c in calls))
        return results, batcher

    results, batcher = asyncio.run(main())
    return results, seen, threads, batcher


def test_batcher_merges_concurrent_calls_up_to_the_max():
    calls = [[1], [2, 3], [4], [5, 6, 7], [8]]
    results, seen, threads, batcher = _collect_batches(4, 0.05, calls)
    assert results == [[10], [20, 30], [40], [50, 60, 70], [80]]
    assert seen == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert batcher.batches_done == 2 and batcher.requests_done == 8
    assert threading.get_ident() not in threads  # the model call runs off the event loop


def test_batcher_keeps_accepting_while_a_batch_runs():
    seen: list[list[int]] = []

    def run_batch(batch):
        seen.append(list(batch))
        time.sleep(0.2)
        return batch

    async def main():
        batcher = RequestBatcher(run_batch, max_batch_size=8, wait_s=0.0)
        first = asyncio.create_task(batcher.submit([1]))
        await asyncio.sleep(0.05)  # batch [1] is running in its thread now
        assert batcher.busy
        later = [asyncio.create_task(batcher.submit([i])) for i in (2, 3, 4)]
        await asyncio.sleep(0.01)
        assert batcher.queued == 3  # accepted while the model runs
        await asyncio.gather(first, *later)

    asyncio.run(main())
    assert seen == [[1], [2, 3, 4]]


def test_batcher_delivers_batch_errors_to_its_callers_only():
    def run_batch(batch):
        if 99 in batch:
            raise RuntimeError("bad batch")
        return batch

    async def main():
        batcher = RequestBatcher(run_batch, max_batch_size=2, wait_s=0.0)
        bad = await asyncio.gather(batcher.submit([99]), return_exceptions=True)
        good = await batcher.submit([1, 2])
        return bad, good

    bad, good = asyncio.run(main())
    assert isinstance(bad[0], RuntimeError) and good == [1, 2]


# ---------------------------------------------------------------------------- backends


def _req(eid: str, path: str, gold: str = "42", grader: str = "exact") -> EvalRequest:
    return EvalRequest(eid, f"prompt {eid}", gold, grader, LayerPath.parse(path))


def test_dummy_is_deterministic_and_injects_faults():
    d = DummyEvaluator(4, fail_example_ids=["bad"], flaky_example_ids=["flaky"])
    reqs = [_req("a", "EEEE"), _req("bad", "EEEE"), _req("flaky", "ESEE"), _req("a", "ESEE")]
    out = evaluate_isolating_errors(d, reqs)
    assert isinstance(out[1], EvalError) and "InjectedFault" in out[1].message
    assert isinstance(out[2], EvalError)  # flaky: first attempt fails
    assert out[0] == DummyEvaluator(4).evaluate([reqs[0]])[0]
    assert out[3].layers_executed == 3 * 4 and out[3].response == "a:ESEE"
    assert evaluate_isolating_errors(d, [reqs[2]])[0].reward in (0.0, 1.0)  # second attempt


def test_dummy_death_in_process_and_only_first_incarnation():
    d = DummyEvaluator(4, die_after=2, context=EvaluatorContext(in_process=True))
    d.evaluate([_req("a", "EEEE"), _req("b", "EEEE")])
    with pytest.raises(WorkerLostError):
        d.evaluate([_req("c", "EEEE")])
    restarted = EvaluatorContext(restarted=True, in_process=True)
    again = DummyEvaluator(4, die_after=0, context=restarted)
    assert len(again.evaluate([_req("c", "EEEE")])) == 1
    other = DummyEvaluator(4, die_after=0, die_on_workers=[1],
                           context=EvaluatorContext(worker_index=0, in_process=True))
    assert len(other.evaluate([_req("c", "EEEE")])) == 1


def test_unknown_backend_is_actionable():
    # The spec names the backend class itself (no registry of names): anything else fails
    # where the spec is built, saying what to pass.
    with pytest.raises(ValueError, match="must be an Evaluator subclass .*ExecutorEvaluator"):
        EvaluatorSpec("nope")


def test_executor_backend_batch_equals_rows_alone_and_caches_prompts():
    from drllm.models.tiny import tiny_model, tiny_tokenizer

    model, tok = tiny_model("llama", num_layers=4), tiny_tokenizer()
    gen = GenerationConfig(max_new_tokens=6)
    ev = ExecutorEvaluator(model, tok, model_id="tiny", generation=gen)
    assert ev.info.num_layers == 4 and ev.info.model_id == "tiny"
    reqs = [_req("a", "EEEE"), _req("a", "ESER"), _req("b", "SEEE"), _req("c", "EERE")]
    batch = ev.evaluate(reqs)
    alone = [ExecutorEvaluator(model, tok, model_id="tiny", generation=gen).evaluate([r])[0]
             for r in reqs]
    assert batch == alone
    assert ev.cache_misses == 3 and ev.cache_hits == 1
    for r, e in zip(reqs, batch):
        assert e.layers_executed > 0 and e.layers_executed % r.path.cost == 0
        assert e.reward == get_grader("exact").grade(e.response, "42").reward
    # Reference: the executor and the grader called directly.
    from drllm.models.executor import PathExecutor

    direct = PathExecutor(model, tok).generate([r.prompt for r in reqs], [r.path for r in reqs],
                                               max_new_tokens=6)
    assert [e.response for e in batch] == [g.text for g in direct]
    assert [e.layers_executed for e in batch] == [g.layers_executed for g in direct]


def test_actor_class_batches_concurrent_calls_without_ray():
    from drllm.distributed.actor import EvaluatorActor

    spec = EvaluatorSpec(DummyEvaluator, {"num_layers": 4, "batch_delay_s": 0.05,
                                   "fail_example_ids": ["bad"]})
    actor = EvaluatorActor(3, spec, max_batch_size=4, batch_wait_ms=20)
    assert repr(actor) == "EvaluatorActor(#3, model=dummy, device=cpu, batches=0)"
    calls = [[_req("a", "EEEE")], [_req("b", "ESEE"), _req("bad", "EEEE")], [_req("c", "EERE")]]

    async def main():
        return await asyncio.gather(*(actor.evaluate(c) for c in calls))

    out = asyncio.run(main())
    assert [len(o) for o in out] == [1, 2, 1]
    assert out[0][0] == DummyEvaluator(4).evaluate(calls[0])[0]
    assert isinstance(out[1][1], EvalError) and not isinstance(out[1][0], EvalError)
    stats = actor.stats()
    assert stats["batches_done"] == 1 and stats["requests_done"] == 4  # one merged batch
    assert stats["busy_seconds"] >= 0.05 and not stats["restarted"]
    assert repr(actor).endswith("batches=1)")
    assert actor.info().num_layers == 4


def test_actor_class_outside_ray_never_starts_ray():
    # In a fresh interpreter: the session's Ray fixture may already be up in this one.
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from drllm.distributed.actor import EvaluatorActor\n"
        "from drllm.distributed.evaluator import EvaluatorSpec\n"
        "from drllm.testing import DummyEvaluator\n"
        "EvaluatorActor(0, EvaluatorSpec(DummyEvaluator, {'num_layers': 2}))\n"
        "ray = sys.modules.get('ray')\n"
        "print('RAY_UP' if ray is not None and ray.is_initialized() else 'RAY_DOWN')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "RAY_DOWN"


def test_batcher_close_cancels_the_loop_and_queued_requests():
    def run_batch(batch):
        time.sleep(0.1)
        return batch

    async def main():
        batcher = RequestBatcher(run_batch, max_batch_size=1, wait_s=0.0)
        first = asyncio.create_task(batcher.submit([1]))
        second = asyncio.create_task(batcher.submit([2]))
        await asyncio.sleep(0.02)
        await batcher.close()
        results = await asyncio.gather(first, second, return_exceptions=True)
        return results, batcher

    results, batcher = asyncio.run(main())
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert batcher.queued == 0


def test_executor_backend_chance_variants_need_every_order_right():
    """With choice-order variants a path is correct only if every order's answer is; the row's
    response is the first order's. The grader here (exact) is told each order's own gold."""
    from dataclasses import replace

    from drllm.models.tiny import tiny_model, tiny_tokenizer

    model, tok = tiny_model("llama", num_layers=4), tiny_tokenizer()
    ev = ExecutorEvaluator(model, tok, model_id="tiny", generation=GenerationConfig(6))
    p0, p1, p2 = "order zero", "order one", "order two"
    base = replace(_req("a", "EESE"), prompt=p0)
    texts = [ev.evaluate([replace(base, prompt=p)])[0].response for p in (p0, p1, p2)]
    right = replace(base, gold=texts[0], variants=((p1, texts[1]), (p2, texts[2])))
    wrong = replace(base, gold=texts[0], variants=((p1, texts[1]), (p2, texts[2] + "x")))
    got_right, got_wrong, plain = ev.evaluate([right, wrong, replace(base, gold=texts[0])])
    assert got_right.reward == 1.0 and "3/3 choice orders correct" in got_right.reason
    assert got_wrong.reward == 0.0 and "2/3 choice orders correct" in got_wrong.reason
    assert plain.reward == 1.0 and "choice orders" not in plain.reason
    assert got_right.response == got_wrong.response == texts[0]
