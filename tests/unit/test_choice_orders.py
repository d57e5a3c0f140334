"""Choice orders expanded, graded and combined one way for every evaluator; the evaluation's
typed request / outcome (``EvalRequest[PolicyOptions]``, ``Evaluation[PolicyMeasures]``)."""

from __future__ import annotations

import pickle

from drllm.choice_orders import PromptIds, combine_orders, order_rows, per_request
from drllm.evaluation.evaluator import _combine
from drllm.evaluation.types import (PolicyEvaluation, PolicyMeasures, PolicyOptions,
                                    PolicyRequest, measures_of, options_of)
from drllm.paths import LayerPath
from drllm.types import EvalRequest, Evaluation


def _request(example_id: str, variants=()) -> EvalRequest:
    return EvalRequest(example_id, f"{example_id}?", "A", "mc_letter", LayerPath((1, 1)),
                       variants=variants)


def test_rows_are_each_request_then_its_variants_and_group_back() -> None:
    reqs = [_request("a", (("a2?", "B"), ("a3?", "C"))), _request("b")]
    rows = order_rows(reqs)
    assert [(r.index, r.order, r.prompt, r.gold) for r in rows] == [
        (0, 0, "a?", "A"), (0, 1, "a2?", "B"), (0, 2, "a3?", "C"), (1, 0, "b?", "A")]
    values = [Evaluation(reward=float(n)) for n in range(4)]
    assert per_request(rows, values, 2) == [values[:3], values[3:]]


def test_correct_only_if_every_order_is() -> None:
    rows = [Evaluation(1.0, "A", reason="ok", plausibility=-0.2),
            Evaluation(0.0, "B", reason="no", plausibility=-0.9, implausible=True)]
    combined = combine_orders(rows)
    assert combined.reward == 0.0 and combined.response == "A"
    assert combined.reason == "ok; 1/2 choice orders correct"
    assert combined.plausibility == -0.9 and combined.implausible
    assert combine_orders(rows[:1]) is rows[0]


def test_policy_outcome_keeps_the_first_orders_measures_and_sums_the_time() -> None:
    orders = [PolicyEvaluation(1.0, extra=PolicyMeasures((1, 0), 5, 0.5, 0.1)),
              PolicyEvaluation(1.0, extra=PolicyMeasures((1, 1), 6, 0.25, 0.05))]
    out = measures_of(_combine(orders))
    assert (out.path, out.prompt_tokens) == ((1, 0), 5)
    assert (out.seconds, out.router_seconds) == (0.75, 0.15000000000000002)
    assert measures_of(Evaluation(0.0, failed=True)) == PolicyMeasures()


def test_a_policy_request_is_a_typed_search_request_that_pickles() -> None:
    req = PolicyRequest("a", "a?", "A", "mc_letter", LayerPath((1, 1)),
                        extra=PolicyOptions(alpha=-0.5, max_new_tokens=8))
    back = pickle.loads(pickle.dumps(req))
    assert isinstance(back, EvalRequest) and options_of(back).routed
    assert options_of(back).max_new_tokens == 8 and options_of(_request("b")) == PolicyOptions()


def test_prompt_ids_cache_per_example_and_order_and_re_encode_a_changed_prompt() -> None:
    calls = []
    cache = PromptIds(lambda text: calls.append(text) or [len(text)], size=2)
    assert cache.get("a", 0, "xx") == [2] and cache.get("a", 0, "xx") == [2]
    assert cache.get("a", 1, "xx") == [2] and cache.get("a", 0, "xyz") == [3]
    assert calls == ["xx", "xx", "xyz"] and (cache.hits, cache.misses) == (1, 3)
    cache.get("b", 0, "q")  # size 2: ("a", 1) is the least recently used
    cache.get("a", 1, "xx")
    assert calls[-1] == "xx"
