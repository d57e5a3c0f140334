"""Pieces under the driver: configs, actor resources, the streaming actor, the backends."""

from __future__ import annotations

import asyncio

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
from drllm.distributed.evaluator import evaluate_isolating_errors
from drllm.distributed.executor_evaluator import ExecutorEvaluator
from drllm.paths import LayerPath
from drllm.rewards import get_grader
from drllm.types import EvalRequest
from drllm.testing import DummyEvaluator

# ---------------------------------------------------------------------------- configs


@pytest.mark.parametrize("kwargs, match", [
    ({"requests_per_actor": 0}, "requests_per_actor"),
    ({"num_actors": 0}, "num_actors"),
    ({"use_gpu": "yes"}, "use_gpu"),
    ({"num_gpus_per_actor": 0}, "num_gpus_per_actor"),
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


def test_actor_class_streams_requests_in_and_outcomes_out_without_ray():
    from drllm.distributed.actor import EvaluatorActor

    spec = EvaluatorSpec(DummyEvaluator, {"num_layers": 4, "batch_delay_s": 0.1,
                                          "fail_example_ids": ["bad"]})
    actor = EvaluatorActor(3, spec)
    assert repr(actor) == "EvaluatorActor(#3, model=dummy, device=cpu, steps=0)"
    a, b, bad = _req("a", "EEEE"), _req("b", "ESEE"), _req("bad", "EEEE")

    async def main():
        await actor.submit([(0, a)])
        await asyncio.sleep(0.03)  # request 0 is in a step (the worker thread) now
        await actor.submit([(1, b), (2, bad)])  # accepted while the model runs
        first = await actor.collect()
        second = await actor.collect()
        await actor.close()
        return first, second

    first, second = asyncio.run(main())
    assert first == [(0, DummyEvaluator(4).evaluate([a])[0])]  # back before the others
    assert [tag for tag, _ in second] == [1, 2]
    assert second[0][1] == DummyEvaluator(4).evaluate([b])[0]
    assert isinstance(second[1][1], EvalError) and "InjectedFault" in second[1][1].message
    stats = actor.stats()
    assert stats["steps"] == 2 and stats["requests_done"] == 3 and stats["held"] == 0
    assert stats["busy_seconds"] >= 0.2 and not stats["restarted"]
    assert actor.info().num_layers == 4


class _StepFailsOnce(DummyEvaluator):
    """The first step sleeps, then raises (a lost worker); later steps work."""

    failed = False

    def step(self):
        if not self.failed and self.streaming:
            import time

            self.failed = True
            time.sleep(0.1)
            raise RuntimeError("device lost")
        return super().step()


def test_a_failed_actor_step_fails_what_it_was_handed_and_keeps_what_arrived_during_it():
    """Each request gets exactly one outcome: the one the failing step held fails, the one
    submitted while that step ran is evaluated by the next step (it was never handed over)."""
    from drllm.distributed.actor import EvaluatorActor

    actor = EvaluatorActor(0, EvaluatorSpec(_StepFailsOnce, {"num_layers": 4}))
    a, b = _req("a", "EEEE"), _req("b", "ESEE")

    async def main():
        await actor.submit([(0, a)])
        await asyncio.sleep(0.03)  # request 0 is in the failing step now
        await actor.submit([(1, b)])
        outcomes = []
        while len(outcomes) < 2:
            outcomes += await asyncio.wait_for(actor.collect(), timeout=5)
        await asyncio.sleep(0.05)  # nothing more may come
        late = list(actor._finished)
        await actor.close()
        return outcomes, late

    outcomes, late = asyncio.run(main())
    assert [tag for tag, _ in outcomes] == [0, 1] and late == []
    assert isinstance(outcomes[0][1], EvalError) and "device lost" in outcomes[0][1].message
    assert outcomes[1][1] == DummyEvaluator(4).evaluate([b])[0]
    assert actor.stats()["held"] == 0


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
