"""The science report on hand-built shard rows with known figures, and resume safety."""

from __future__ import annotations

import pandas as pd
import pytest

from drllm.report import format_report, related_graders, science_report

L = 4


def _row(eid, default, best, path, solved, edits, evals, depths, resp="A", best_resp="A",
         gold="A", grader="mc_letter_lenient", failed=0, memo=0, trans=0, prior=0):
    return {
        "example_id": eid, "dataset": "arc_easy", "gold": gold, "grader": grader,
        "num_layers": L, "default_reward": default, "default_response": resp,
        "best_reward": best, "best_response": best_resp, "best_path": path,
        "layers_saved": L - sum(path), "improved": best > default, "solved": solved,
        "label_edits": edits, "evaluations": evals, "failed_evaluations": failed,
        "memo_hits": memo, "transposition_hits": trans, "prior_hits": prior,
        "evaluated_depths": depths,
    }


@pytest.fixture
def table() -> pd.DataFrame:
    return pd.DataFrame([
        # solved by the default path, and a 2-edit path saving 2 blocks
        _row("a", 1.0, 1.0, [0, 1, 0, 1], True, 2, 10, [0, 1, 1, 2], resp="A. root",
             best_resp="A", failed=1, memo=2, trans=1, prior=1),
        # improved: default wrong, a repeat fixes it (saves -1)
        _row("b", 0.0, 1.0, [1, 2, 1, 1], True, 1, 4, [0, 1, 1], resp="B", best_resp="A",
             prior=1),
        # unsolved: default label
        _row("c", 0.0, 0.0, [1, 1, 1, 1], False, 0, 20, [0, 1, 2, 3], resp="C", best_resp="C"),
        _row("d", 0.0, 0.0, [1, 1, 1, 1], False, 0, 30, [0, 1], resp="D", best_resp="D"),
    ])


def test_known_figures(table: pd.DataFrame) -> None:
    r = science_report(table)
    assert r["examples"] == 4 and r["solved"] == 2 and r["solved_fraction"] == 0.5
    assert r["improved"] == 1 and r["improved_fraction"] == 0.25
    assert r["default_accuracy"] == 0.25 and r["search_accuracy"] == 0.5
    assert r["layers_saved_solved_mean"] == 0.5  # (2 + -1) / 2 solved
    assert r["layers_saved_solved_hist"] == {"-1": 1, "2": 1}
    assert r["label_edits_solved_hist"] == {"1": 1, "2": 1}
    assert r["evaluated_depth_hist"] == {"0": 4, "1": 6, "2": 2, "3": 1}
    assert r["evaluations_per_example"] == pytest.approx(
        {"mean": 16.0, "p50": 15.0, "p95": 28.5, "total": 64})
    assert (r["memo_hits"], r["transposition_hits"], r["prior_hits"],
            r["failed_evaluations"]) == (2, 1, 2, 1)
    # label shares over the 2 solved rows' 8 decisions: 2 skips, 5 executes, 1 repeat
    assert r["label_shares"] == {"skip": 0.25, "execute": 0.625, "repeat": 0.125}
    assert r["per_layer_label_freq"]["skip"] == [0.5, 0.0, 0.5, 0.0]
    assert r["per_layer_label_freq"]["repeat"] == [0.0, 0.5, 0.0, 0.0]
    assert "2 solved" in r["over"]


def test_strict_and_lenient_side_by_side(table: pd.DataFrame) -> None:
    acc = science_report(table)["accuracy_by_grader"]
    assert set(related_graders("mc_letter_lenient")) >= {"mc_letter_lenient", "mc_letter"}
    # "A. root" is the lenient grader's A and the strict grader's non-answer.
    assert acc["mc_letter_lenient"]["default_accuracy"] == 0.25
    assert acc["mc_letter"]["default_accuracy"] == 0.0
    assert acc["mc_letter"]["best_accuracy"] == 0.5
    text = format_report(science_report(table))
    assert "under mc_letter" in text and "solved" in text


def test_empty_and_all_unsolved(table: pd.DataFrame) -> None:
    assert science_report(table.iloc[0:0]) == {"examples": 0}
    r = science_report(table.iloc[2:].reset_index(drop=True))
    assert r["solved"] == 0 and r["label_shares"] is None and r["layers_saved_solved_mean"] == 0.0
    assert "nothing solved" in format_report(r)


def test_resume_refuses_another_search_config(tmp_path) -> None:
    from drllm.paths import LayerPath
    from drllm.shards import ResumeConflictError, ShardWriter, check_resume
    from drllm.shards.schema import SupervisionRecord
    from drllm.types import Example, SearchResult

    ex = Example("q", "toy", "train", "p", ({"role": "user", "content": "p"},), "1", "exact")
    d = LayerPath.default(L)
    res = SearchResult(L, d, 1.0, "1", d, 1.0, "1", L, 0, False, (d,), (1.0,), 1, 1, 0, False,
                       solved=True, evaluated_depths=(0,))
    affecting = {"search": {"num_simulations": 16, "c": 1.8}, "dataset": {"name": "toy"}}
    assert check_resume(tmp_path, affecting, key="aff") == 0  # fresh directory
    with ShardWriter(tmp_path, writer_id="w", num_layers=L, model_id="m",
                     config={"aff": affecting, "cluster": {"num_actors": 2}}) as w:
        w.add(SupervisionRecord(ex, res, "m", "p", 0.1))
    assert check_resume(tmp_path, affecting, key="aff") == 1
    other = {"search": {"num_simulations": 50, "c": 1.8}, "dataset": {"name": "toy"}}
    with pytest.raises(ResumeConflictError, match=r"search.num_simulations: 16 -> 50"):
        check_resume(tmp_path, other, key="aff")
    assert check_resume(tmp_path, other, key="aff", force=True) == 1
    with pytest.raises(ResumeConflictError, match="not recorded"):
        check_resume(tmp_path, affecting, key="another_key")
    # A field added since the shards were written resumes at its default, not at another value.
    added = {**affecting, "dataset": {"name": "toy", "placebo": False}}
    defaults = {"dataset": {"placebo": False}}
    assert check_resume(tmp_path, added, key="aff", defaults=defaults) == 1
    with pytest.raises(ResumeConflictError, match=r"dataset.placebo: '<absent>' -> False"):
        check_resume(tmp_path, added, key="aff")
    changed = {**affecting, "dataset": {"name": "toy", "placebo": True}}
    with pytest.raises(ResumeConflictError, match=r"dataset.placebo: '<absent>' -> True"):
        check_resume(tmp_path, changed, key="aff", defaults=defaults)


def test_writer_refuses_an_unsolved_row_with_an_edited_label(tmp_path) -> None:
    from drllm.paths import LayerPath
    from drllm.shards import ShardWriter
    from drllm.shards.schema import SupervisionRecord
    from drllm.types import Example, SearchResult

    ex = Example("q", "toy", "train", "p", ({"role": "user", "content": "p"},), "1", "exact")
    d, cheap = LayerPath.default(L), LayerPath((0, 1, 1, 1))
    bad = SearchResult(L, d, 0.0, "x", cheap, 0.0, "y", 3, 1, False, (cheap,), (0.0,), 2, 2, 0,
                       False, solved=False)
    with ShardWriter(tmp_path, writer_id="w", num_layers=L, model_id="m", config={}) as w:
        with pytest.raises(ValueError, match="unsolved search must be labelled with the default"):
            w.add(SupervisionRecord(ex, bad, "m", "p", 0.1))


def test_label_changes_between_two_searches_of_the_same_questions(table):
    from drllm.report import label_changes

    old = table.copy()
    # under the old reward "c" was "solved" by a broken cheaper path, "a" kept the default
    old.at[2, "solved"], old.at[2, "best_path"], old.at[2, "best_response"] = (
        True, [0, 1, 1, 1], "stray 2")
    old.at[0, "best_path"] = [1, 1, 1, 1]
    old = pd.concat([old, pd.DataFrame([_row("z", 1.0, 1.0, [1, 1, 1, 1], True, 0, 1, [0])])],
                    ignore_index=True)  # not in the new run: not compared
    changes = label_changes(table, old, sample=1)
    assert changes["shared_examples"] == 4
    assert changes["labels_changed"] == 2
    assert changes["solved"] == {"new": 2, "old": 3, "lost": 1, "gained": 0}
    assert changes["edited_labels"] == {"new": 2, "old": 2}
    assert changes["default_correct"] == {"new": 1, "old": 1, "changed": 0}
    assert changes["changed_sample"] == [{
        "example": "arc_easy/a", "gold": "A", "new": {"solved": True, "response": "A"},
        "old": {"solved": True, "response": "A"}}]
    assert "2 of 4 changed; solved 3 -> 2" in format_report(
        {**science_report(table), "label_changes": changes})
    assert label_changes(table, old.iloc[4:]) == {"shared_examples": 0}
