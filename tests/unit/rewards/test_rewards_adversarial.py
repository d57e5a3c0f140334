"""The search against a reward it could game: broken outputs that contain the gold as a stray
number, implausible outputs that state it, and lucky letters never become labels.

The evaluation function composes exactly what :class:`ExecutorEvaluator` does with a row
(:func:`graded_row`, the :class:`PlausibilityGuard`, :func:`combine_orders`) around scripted
responses instead of a model: plausibility here is the share of known words in the response,
mapped to a mean log-likelihood.
"""

from __future__ import annotations

from drllm.choice_orders import combine_orders, graded_row
from drllm.paths import LayerPath
from drllm.rewards.plausibility import PlausibilityGuard
from drllm.search import MCTSConfig, run
from drllm.types import EvalRequest, Evaluation, Generation

L = 6
CONFIG = MCTSConfig(num_simulations=40, seed=0)
WORDS = {"ben", "has", "pencils", "left", "the", "answer", "is", "and", "gives", "to", "ella",
         "so", "now", "a"}
GUARD = PlausibilityGuard(-1.0)


def plausibility(text: str) -> float:
    tokens = [t.strip(".,:").lower() for t in text.split()]
    known = sum(t in WORDS or t.isdigit() for t in tokens)
    return -0.3 if tokens and known == len(tokens) else -4.0


def scripted(responses, gold: str, grader: str = "gsm8k_numeric", variants=()):
    """evaluate(path) from ``responses(path) -> [text per choice order]``."""
    def evaluate(path: LayerPath) -> Evaluation:
        rows = []
        for text, g in zip(responses(path), (gold, *[v for v in variants])):
            request = EvalRequest("q", "prompt", g, grader, path)
            gen = Generation(text, tuple(range(len(text.split()) or 1)), path.cost, 5, "eos")
            row = graded_row(request, g, gen)
            edited = any(d != 1 for d in path)
            rows.append(GUARD.judge(row, plausibility(text) if GUARD.accepted(row) else None,
                                    edited))
        return combine_orders(rows)
    return evaluate


def test_broken_or_implausible_cheaper_paths_never_become_labels() -> None:
    def responses(path):
        if all(d == 1 for d in path):
            return ["Ben has 4 pencils and gives 2 to Ella, so Ben has 4 - 2 = 2 pencils left."]
        if path[3] == 0:  # states the gold, but as garbage
            return ["The answer is 2. zx qq zx"]
        return ["Ben has 4 pencils and gives 2 pencils to Ella. To Ben,"]  # stray 2

    result = run(L, scripted(responses, "2"), CONFIG)
    assert result.default_reward == 1.0
    assert result.best_path == LayerPath.default(L)
    assert result.good_paths == (LayerPath.default(L),)
    rejected = [e for e in result.trace if e.evaluation.implausible]
    assert rejected and all(e.path[3] == 0 for e in rejected)
    assert all(e.evaluation.reward == 0.0 for e in result.trace if e.path != LayerPath.default(L))


def test_a_cheaper_path_that_states_the_answer_plausibly_is_the_label() -> None:
    def responses(path):
        if path[2] == 0 and sum(path) < L:
            return ["Ben has 2 pencils left. The answer is 2."]
        if all(d == 1 for d in path):
            return ["Ben has 4 - 2 = 2 pencils left."]
        return ["Ben has 4 pencils and gives 2 pencils to Ella. To Ben,"]

    result = run(L, scripted(responses, "2"), CONFIG)
    assert result.best_path != LayerPath.default(L) and result.best_path[2] == 0
    assert result.best_cost < L and result.best_reward == 1.0


def test_lucky_letters_do_not_survive_other_choice_orders() -> None:
    # The model says "A" whatever the question; the gold is A in the first order only.
    result = run(L, scripted(lambda path: ["A", "A", "A"], "A", "mc_letter_lenient",
                             variants=("C", "B")), CONFIG)
    assert not result.solved and result.best_path == LayerPath.default(L)
    assert all(e.evaluation.reward == 0.0 for e in result.trace)
    assert all("1/3 choice orders correct" in e.evaluation.reason for e in result.trace)


def test_the_trace_round_trips_through_a_shard() -> None:
    import pyarrow as pa

    from drllm.shards.schema import SupervisionRecord, rows_to_table
    from drllm.types import Example

    result = run(L, scripted(lambda path: ["Ben has 4 pencils and gives 2 pencils to Ella."],
                             "2"), CONFIG)
    example = Example("q", "synthetic_arith", "train", "prompt", (), "2", "gsm8k_numeric")
    table = rows_to_table([SupervisionRecord(example, result, "m", "prompt", 1.0)], L, "m")
    table = pa.Table.from_pylist(table.to_pylist(), schema=table.schema)
    trace = table.column("trace")[0].as_py()
    assert len(trace) == result.evaluations == len(result.trace)
    assert trace[0]["simulation"] == 0 and trace[0]["path"] == [1] * L
    assert {t["reason"] for t in trace} == {"no stated answer"}
    assert [t["path"] for t in trace] == [list(e.path) for e in result.trace]


def test_the_report_counts_implausible_rejections() -> None:
    import pandas as pd

    from drllm.report import _trace_figures
    from drllm.shards.schema import trace_rows

    def responses(path):
        return (["Ben has 2 pencils left, so the answer is 2."] if all(d == 1 for d in path)
                else ["The answer is 2. zx qq zx"])

    result = run(L, scripted(responses, "2"), CONFIG)
    figures = _trace_figures(pd.Series([trace_rows(result)]))
    assert figures["implausible_rejections"] == result.evaluations - 1 > 0
    assert figures["examples_with_implausible_rejections"] == 1
    assert figures["plausibility_default_accepted"] == {"n": 1, "min": -0.3, "median": -0.3}
    assert figures["answer_read_at"] == {"answer marker": 1}


def test_a_gold_letter_with_another_choices_text_never_becomes_a_label() -> None:
    """A generated-letter search (gold B): the default path answers B with B's text; cheaper
    paths write the letter B with C's text (a letter right by luck, the answer C's). The
    default stays the label; one cheaper path that writes B's own text may replace it."""
    prompt = "Which gas do plants take in?\nA. oxygen\nB. carbon dioxide\nC. nitrogen\nD. helium"

    def evaluate_with(good_cheap: bool):
        def evaluate(path: LayerPath) -> Evaluation:
            if all(d == 1 for d in path):
                text = "B. carbon dioxide"
            elif good_cheap and path[2] == 0 and sum(d != 1 for d in path) == 1:
                text = "B. carbon dioxide\n"
            else:
                text = "B. nitrogen"
            request = EvalRequest("q", prompt, "B", "mc_letter_lenient", path)
            gen = Generation(text, (1, 2, 3), path.cost, 5, "eos")
            return graded_row(request, "B", gen)
        return evaluate

    result = run(L, evaluate_with(False), CONFIG)
    assert result.default_reward == 1.0
    assert result.best_path == LayerPath.default(L)
    assert all(e.evaluation.reward == 0.0 for e in result.trace if e.path != LayerPath.default(L))
    assert any(e.evaluation.reason == "letter B written with choice C's text"
               for e in result.trace)

    result = run(L, evaluate_with(True), CONFIG)
    assert result.best_path != LayerPath.default(L) and result.best_path[2] == 0
    assert result.best_reward == 1.0
