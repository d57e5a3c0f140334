"""Dispatch decisions (sticky questions, spreading, full batches) and per-call timeouts."""

from __future__ import annotations

from drllm.distributed import EvaluationPool, EvaluatorSpec, LocalTransport
from drllm.distributed.routing import Queued, plan_dispatch
from drllm.paths import LayerPath
from drllm.testing import DummyEvaluator
from drllm.types import EvalRequest


def q(item: str, key: str, waited: float = 0.0) -> Queued:
    return Queued(item, key, waited)


def test_a_question_waits_for_its_home_worker_then_falls_back():
    queue = [q("a1", "a"), q("b1", "b"), q("c1", "c")]
    home = {"a": 1, "b": 0}
    calls, rest = plan_dispatch(queue, {0: 0, 1: 0}, home, frozenset({0, 1}),
                                max_batch_size=4, sticky_wait_s=1.0)
    assert dict(calls)[1][0] == "a1" and dict(calls)[0][0] == "b1"
    assert sorted(sum((items for _, items in calls), [])) == ["a1", "b1", "c1"] and not rest
    # home busy (not free) -> the request waits, until it has waited sticky_wait_s
    calls, rest = plan_dispatch([q("a2", "a", 0.2)], {0: 0}, home, frozenset({0, 1}),
                                max_batch_size=4, sticky_wait_s=1.0)
    assert calls == [] and rest == ["a2"]
    calls, rest = plan_dispatch([q("a2", "a", 1.5)], {0: 0}, home, frozenset({0, 1}),
                                max_batch_size=4, sticky_wait_s=1.0)
    assert calls == [(0, ["a2"])] and rest == []
    # home dead -> any worker at once
    calls, _ = plan_dispatch([q("a3", "a")], {0: 0}, home, frozenset({0}),
                             max_batch_size=4, sticky_wait_s=1.0)
    assert calls == [(0, ["a3"])]


def test_busy_workers_only_take_full_batches():
    queue = [q(f"x{i}", f"x{i}") for i in range(3)]
    calls, rest = plan_dispatch(queue, {0: 1}, {}, frozenset({0}), max_batch_size=4,
                                sticky_wait_s=None)
    assert calls == [] and rest == ["x0", "x1", "x2"]
    queue = [q(f"x{i}", f"x{i}") for i in range(5)]
    calls, rest = plan_dispatch(queue, {0: 1}, {}, frozenset({0}), max_batch_size=4,
                                sticky_wait_s=None)
    assert calls == [(0, ["x0", "x1", "x2", "x3"])] and rest == ["x4"]


def test_sticky_pool_sends_a_question_back_to_its_worker():
    L = 4
    transport = LocalTransport(EvaluatorSpec(DummyEvaluator, {"num_layers": L}), 2)
    pool = EvaluationPool(transport, max_batch_size=1, sticky_wait_s=10.0)
    pool.start()
    paths = [LayerPath.default(L)] + [LayerPath(tuple(0 if j == i else 1 for j in range(L))) for i in range(L)]

    def req(eid: str, p: LayerPath) -> EvalRequest:
        return EvalRequest(eid, eid, "1", "exact", p)

    pool.submit([req("a", paths[0]), req("b", paths[0])])
    while not pool.idle:
        pool.wait(0.0)
    first = dict((w, n) for w, n in transport.call_log)
    for p in paths[1:]:
        pool.submit([req("a", p), req("b", p)])
        while not pool.idle:
            pool.wait(0.0)
    workers = [w for w, _ in transport.call_log]
    # "a" went to worker 0 first, "b" to 1; every later request of each went back there
    assert workers[:2] == [0, 1] and first
    assert pool.stats.sticky_hits == 2 * (len(paths) - 1)


def test_a_hung_call_is_given_up_its_worker_killed_and_its_requests_requeued():
    now = [0.0]

    class Silent(LocalTransport):
        killed: list[int] = []

        def wait(self, timeout_s):  # worker 0 never answers; others answer normally
            if self._pending_losses or not self._calls or self._calls[0][0] != 0:
                return super().wait(timeout_s)
            now[0] += timeout_s
            return []

        def kill(self, worker):
            self.killed.append(worker)
            self._calls.clear()
            self.evaluators[worker] = None  # gone: the retry goes to worker 1

    transport = Silent(EvaluatorSpec(DummyEvaluator, {"num_layers": 4}), 2)
    pool = EvaluationPool(transport, max_batch_size=1, call_timeout_s=5.0, clock=lambda: now[0])
    pool.start()
    pool.submit([EvalRequest("a", "a", "1", "exact", LayerPath.default(4))])
    results = []
    for _ in range(20):
        results += pool.wait(1.0)
        if results:
            break
    assert transport.killed == [0] and pool.stats.timeouts == 1
    assert len(results) == 1 and not results[0].evaluation.failed
