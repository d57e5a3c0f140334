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
                       clock=CLOCK, gc_stage=None)
    with timer.installed():
        assert Work().outer() == "done"
        assert Work().flag is True
    assert timer.seconds == {"a": 3.0, "b": 10.0, "c": 200.0}
    assert timer.calls == {"a": 1, "b": 1, "c": 2}
    assert timer.shares() == {"c": round(200 / 213, 3), "b": round(10 / 213, 3),
                              "a": round(3 / 213, 3)}
    assert Work.outer is original_outer and Work.__dict__["flag"] is original_flag


def test_garbage_collection_inside_a_timed_call_is_its_own_stage():
    timer = StageTimer([(Work, "inner", "b"), (Work, "flag", "c")], clock=CLOCK)

    def collect_inside(self) -> None:  # a GC pass lasting 5 s in the middle of the call
        CLOCK.now += 1.0
        timer._on_gc("start", {})
        CLOCK.now += 5.0
        timer._on_gc("stop", {})
        CLOCK.now += 2.0

    original = Work.inner
    Work.inner = collect_inside
    try:
        with timer.installed():
            Work().inner()
    finally:
        Work.inner = original
    assert timer.seconds == {"b": 3.0, "garbage collection": 5.0}


def test_driver_bench_targets_exist():
    from drllm.bench.driver import _stage_targets

    for ray in (False, True):
        StageTimer(_stage_targets(ray))  # raises AttributeError naming a missing method


def test_bench_driver_prints_one_json_line(capsys):
    """``python -m drllm.jobs.bench driver`` on a tiny workload, in process only: its last
    stdout line is the JSON result, with the figures the issue asks for."""
    import json

    from drllm.jobs.bench import main

    main(["driver", "--num-examples", "6", "--num-simulations", "5", "--trees", "2,4",
          "--batch-sizes", "3", "--ray-actors", "0"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["evals_s_inprocess"] > 0 and "evals_s_ray" not in result
    runs = result["runs"]["inprocess"]
    assert [(r["trees"], r["batch"]) for r in runs] == [(2, 3), (4, 3)]
    # reward 0 everywhere: no early stop, each example spends its 5 simulations (the root
    # included); transpositions may answer some without an evaluation
    assert all(6 <= r["evaluations"] <= 30 for r in runs)
    profile = result["profile_inprocess"]
    assert abs(sum(profile["shares"].values()) - 1.0) < 0.01
    assert "tree: selection, expansion, backup" in profile["us_per_eval"]
    assert result["workload"]["num_layers"] == 30 and result["targets"]["evals_s_ray"] == 3000
