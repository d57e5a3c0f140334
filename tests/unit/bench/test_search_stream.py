"""The search-work benchmark's request streams: JSON round trip, the committed recording's
shape, and the exactness check the benchmark reports."""

from __future__ import annotations

from drllm.bench.search_stream import ARC_STREAM, RequestStream, load_stream, save_stream
from drllm.bench.search_work import _exact
from drllm.paths import LayerPath


def test_stream_round_trip(tmp_path) -> None:
    stream = RequestStream("arc_easy", 2, 0, 16, "mc_letter_lenient",
                           ((("q1", "E" * 30), ("q2", "E" * 30)), (("q1", "S" + "E" * 29),)),
                           {"max_concurrent_trees": 32, "evals_per_s": 1.5})
    save_stream(stream, tmp_path / "s.json")
    back = load_stream(tmp_path / "s.json")
    assert back == stream and back.recorded == stream.recorded and back.num_requests == 3


def test_committed_stream_is_a_search_at_the_job_defaults() -> None:
    stream = load_stream(ARC_STREAM)
    assert stream.dataset == "arc_easy" and stream.grader == "mc_letter_lenient"
    assert stream.recorded["max_concurrent_trees"] == 32
    assert stream.recorded["max_batch_size"] == 16
    assert max(map(len, stream.calls)) == 16
    seen: set[tuple[str, str]] = set()
    for call in stream.calls:  # one request per tree per call, no path asked twice
        assert len({eid for eid, _ in call}) == len(call)
        for eid, path in call:
            assert len(LayerPath.parse(path)) == 30
            assert (eid, path) not in seen
            seen.add((eid, path))
    first = {eid for eid, _ in stream.calls[0]}
    assert all(p == "E" * 30 for _, p in stream.calls[0]) and len(first) == 16  # roots first


def test_exact_allows_grader_stop_prefixes_only() -> None:
    plain = {"rewards": [1.0, 0.0], "tokens": [(1, 2, 3), (4, 5)]}
    assert _exact({"rewards": [1.0, 0.0], "tokens": [(1, 2, 3), (4, 5)]}, plain, False)
    assert not _exact({"rewards": [1.0, 0.0], "tokens": [(1, 2), (4, 5)]}, plain, False)
    assert _exact({"rewards": [1.0, 0.0], "tokens": [(1, 2), (4, 5)]}, plain, True)
    assert not _exact({"rewards": [1.0, 0.0], "tokens": [(1, 3), (4, 5)]}, plain, True)
    assert not _exact({"rewards": [0.0, 0.0], "tokens": [(1, 2, 3), (4, 5)]}, plain, True)
