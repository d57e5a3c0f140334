"""StageTimer charges each wrapped call's own time to its stage (nested calls excluded) and
restores the classes afterwards; the driver bench's stage targets all exist."""

from __future__ import annotations

from drllm.bench.stages import StageTimer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


CLOCK = Clock()


class Work:
    def outer(self) -> str:
        CLOCK.now += 1.0          # outer's own time
        self.inner()
        CLOCK.now += 2.0          # outer again
        return "done"

    def inner(self) -> None:
        CLOCK.now += 10.0         # inner's own time
        _ = self.flag             # a timed property inside inner

    @property
    def flag(self) -> bool:
        CLOCK.now += 100.0
        return True


def test_nested_calls_are_charged_exclusively_and_classes_restored():
    original_outer, original_flag = Work.outer, Work.__dict__["flag"]
    timer = StageTimer([(Work, "outer", "a"), (Work, "inner", "b"), (Work, "flag", "c")],
                       clock=CLOCK)
    with timer.installed():
        assert Work().outer() == "done"
        assert Work().flag is True
    assert timer.seconds == {"a": 3.0, "b": 10.0, "c": 200.0}
    assert timer.calls == {"a": 1, "b": 1, "c": 2}
    assert timer.shares() == {"c": round(200 / 213, 3), "b": round(10 / 213, 3),
                              "a": round(3 / 213, 3)}
    assert Work.outer is original_outer and Work.__dict__["flag"] is original_flag


def test_driver_bench_targets_exist():
    from drllm.bench.driver import _stage_targets

    for ray in (False, True):
        StageTimer(_stage_targets(ray))  # raises AttributeError naming a missing method
