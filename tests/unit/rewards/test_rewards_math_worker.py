"""The math-verify child process: works off the main thread, and survives injected faults
(a hung check, a crash, a failed start) within its time bounds."""

from __future__ import annotations

import pickle
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from drllm.rewards import MathBoxedGrader, math_worker
from drllm.rewards.math_worker import MathVerifyProcess

_READY = "import sys; sys.stdout.write('{\"ready\": true}\\n'); sys.stdout.flush(); "
HANG_ON_REQUEST = _READY + "sys.stdin.readline(); import time; time.sleep(600)"
CRASH_ON_REQUEST = _READY + "sys.stdin.readline(); sys.exit(3)"
FAIL_TO_START = "import sys; sys.exit(1)"


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


@pytest.fixture
def checker():
    proc = MathVerifyProcess(timeout_s=1.0, startup_timeout_s=30.0, retry_after_s=60.0)
    yield proc
    proc.close()


def test_verdicts_from_a_non_main_thread(checker) -> None:
    results: dict[str, object] = {}

    def work() -> None:  # math-verify's own signal timeouts would raise ValueError here
        results["equal"] = checker.check(r"\frac{1}{2}", "0.5")
        results["different"] = checker.check(r"\frac{1}{2}", r"\frac{1}{3}")

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(60)
    assert results["equal"] == math_worker.SymbolicCheck(True, "math-verify")
    assert results["different"] == math_worker.SymbolicCheck(False, "math-verify")


def test_concurrent_threads_get_their_own_answers() -> None:
    grader = MathBoxedGrader()
    cases = [(rf"\boxed{{{k}/{k + 1}}}", rf"\frac{{{k}}}{{{k + 1}}}", 1.0) for k in range(1, 9)]
    cases += [(rf"\boxed{{{k}/{k + 2}}}", rf"\frac{{{k}}}{{{k + 1}}}", 0.0) for k in range(1, 9)]
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            rewards = list(pool.map(lambda c: grader.grade(c[0], c[1]).reward, cases))
    finally:
        grader.close()
    assert rewards == [c[2] for c in cases]


def test_hung_check_times_out_kills_the_child_and_recovers(checker, monkeypatch) -> None:
    monkeypatch.setattr(math_worker, "_SERVE_CODE", HANG_ON_REQUEST)
    assert checker._start()  # child started outside the timing below
    start = time.monotonic()
    result = checker.check("1", "1")
    elapsed = time.monotonic() - start
    assert result == math_worker.SymbolicCheck(False, "timed out")
    assert checker.timeout_s <= elapsed < checker.timeout_s + 2.0
    assert checker.pid is None
    monkeypatch.undo()
    assert checker.check("2", "2.0") == math_worker.SymbolicCheck(True, "math-verify")
    assert checker.starts == 2


def test_timed_out_child_process_is_gone(checker, monkeypatch) -> None:
    monkeypatch.setattr(math_worker, "_SERVE_CODE", HANG_ON_REQUEST)
    assert checker._start()
    pid = checker.pid
    assert pid is not None and _alive(pid)
    assert checker.check("1", "1").detail == "timed out"
    assert not _alive(pid)


def test_crashed_child_is_reported_and_replaced(checker, monkeypatch) -> None:
    monkeypatch.setattr(math_worker, "_SERVE_CODE", CRASH_ON_REQUEST)
    assert checker.check("1", "1") == math_worker.SymbolicCheck(False, "error: worker died")
    monkeypatch.undo()
    assert checker.check("1", "1").equal


def test_failed_start_is_unavailable_and_not_retried_at_once(checker, monkeypatch) -> None:
    monkeypatch.setattr(math_worker, "_SERVE_CODE", FAIL_TO_START)
    assert checker.check("1", "1") == math_worker.SymbolicCheck(False, "unavailable")
    monkeypatch.undo()
    start = time.monotonic()
    assert checker.check("1", "1").detail == "unavailable"  # within retry_after_s
    assert time.monotonic() - start < 0.5
    assert checker.starts == 0


def test_grader_scores_a_hung_check_zero_and_caches_it(monkeypatch) -> None:
    monkeypatch.setattr(math_worker, "_SERVE_CODE", HANG_ON_REQUEST)
    grader = MathBoxedGrader(timeout_s=1.0)
    try:
        got = grader.grade(r"\boxed{x+x}", "2x")
        assert (got.reward, got.reason) == (0.0, "mismatch (symbolic check timed out)")
        start = time.monotonic()
        assert grader.grade(r"\boxed{x+x}", "2x").reason == got.reason  # verdict cache
        assert time.monotonic() - start < 0.5
        assert grader.checker.starts == 1
    finally:
        grader.close()


def test_invalid_constructor_arguments_fail_fast() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        MathVerifyProcess(timeout_s=0)
    with pytest.raises(ValueError, match="max_symbolic_chars"):
        MathBoxedGrader(max_symbolic_chars=0)


def test_grader_pickles_as_configuration() -> None:
    grader = MathBoxedGrader(timeout_s=3.0, max_symbolic_chars=50)
    try:
        assert grader.grade(r"\boxed{2/4}", "0.5").reward == 1.0  # child started, cache filled
        clone = pickle.loads(pickle.dumps(grader))
    finally:
        grader.close()
    assert (clone.checker.timeout_s, clone.max_symbolic_chars) == (3.0, 50)
    assert clone.checker.pid is None
    try:
        assert clone.grade(r"\boxed{2/4}", "0.5").reward == 1.0
    finally:
        clone.close()
