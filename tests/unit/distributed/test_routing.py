"""Dispatch decisions (sticky questions, the least loaded worker) and hung workers."""

from __future__ import annotations

from drllm.distributed import EvaluationPool, EvaluatorSpec, LocalTransport
from drllm.distributed.routing import plan_dispatch
from drllm.paths import LayerPath
from drllm.testing import DummyEvaluator
from drllm.types import EvalRequest


def test_a_question_goes_to_its_home_worker_and_waits_while_it_is_full():
    queue = [("a1", "a"), ("b1", "b"), ("c1", "c")]
    home = {"a": 1, "b": 0}
    sends, rest = plan_dispatch(queue, {0: 4, 1: 4}, home)
    assert sends == {1: ["a1"], 0: ["b1", "c1"]} and rest == []  # c1: most room, lowest index
    # home full -> the request stays queued (the home frees a place as soon as it answers one)
    sends, rest = plan_dispatch([("a2", "a"), ("x", "x")], {0: 4, 1: 0}, home)
    assert sends == {0: ["x"]} and rest == ["a2"]
    # home not ready (dead, restarting) -> the least loaded worker at once
    sends, rest = plan_dispatch([("a3", "a")], {0: 1}, home)
    assert sends == {0: ["a3"]} and rest == []
    # not sticky -> the least loaded worker, whatever the home
    sends, _ = plan_dispatch([("a4", "a")], {0: 3, 1: 2}, home, sticky=False)
    assert sends == {0: ["a4"]}


def test_new_questions_spread_over_the_least_loaded_workers_within_their_room():
    queue = [(f"x{i}", f"x{i}") for i in range(6)]
    sends, rest = plan_dispatch(queue, {0: 1, 1: 3, 2: 0}, {})
    assert sends == {1: ["x0", "x1", "x3"], 0: ["x2"]} and rest == ["x4", "x5"]


def test_sticky_pool_sends_a_question_back_to_its_worker():
    L = 4
    transport = LocalTransport(EvaluatorSpec(DummyEvaluator, {"num_layers": L}), 2)
    pool = EvaluationPool(transport, max_in_flight_per_worker=1)
    pool.start()
    paths = [LayerPath.default(L)] + [LayerPath(tuple(0 if j == i else 1 for j in range(L))) for i in range(L)]

    def req(eid: str, p: LayerPath) -> EvalRequest:
        return EvalRequest(eid, eid, "1", "exact", p)

    pool.submit([req("a", paths[0]), req("b", paths[0])])
    while not pool.idle:
        pool.wait(0.0)
    for p in paths[1:]:
        pool.submit([req("a", p), req("b", p)])
        while not pool.idle:
            pool.wait(0.0)
    workers = [w for w, _ in transport.send_log]
    # "a" went to worker 0 first, "b" to 1; every later request of each went back there
    assert workers[:2] == [0, 1]
    assert pool.stats.sticky_hits == 2 * (len(paths) - 1)


def test_a_hung_worker_is_killed_and_its_requests_requeued():
    now = [0.0]

    class Silent(LocalTransport):
        killed: list[int] = []

        def wait(self, timeout_s):  # worker 0 never answers; others answer normally
            if self._pending_losses or not self._held[0]:
                return super().wait(timeout_s)
            now[0] += timeout_s
            return []

        def kill(self, worker):
            self.killed.append(worker)
            self._held[worker] = 0
            self.evaluators[worker] = None  # gone: the retry goes to worker 1

    transport = Silent(EvaluatorSpec(DummyEvaluator, {"num_layers": 4}), 2)
    pool = EvaluationPool(transport, max_in_flight_per_worker=1, call_timeout_s=5.0,
                          clock=lambda: now[0])
    pool.start()
    pool.submit([EvalRequest("a", "a", "1", "exact", LayerPath.default(4))])
    results = []
    for _ in range(20):
        results += pool.wait(1.0)
        if results:
            break
    assert transport.killed == [0] and pool.stats.timeouts == 1
    assert len(results) == 1 and not results[0].evaluation.failed
