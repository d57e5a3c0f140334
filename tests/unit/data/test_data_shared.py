"""arc_easy / arc_challenge / gsm8k / math on the real samples in ../shared/data, loaded through
the real ``datasets`` code, with known rows, exact counts and the hub default names."""

from __future__ import annotations

import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import pytest

from drllm.data import DatasetConfig, LoadReport, load_examples
from drllm.types import Example

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT.parent / "shared" / "data"


def _load(**kw) -> LoadReport:
    return load_examples(DatasetConfig(num_examples=None, **kw))


def _by_id(report: LoadReport) -> dict[str, Example]:
    return {e.id: e for e in report.examples}


@pytest.fixture(scope="module")
def arc_easy() -> LoadReport:
    return _load(name="arc_easy", path=str(DATA / "ai2_arc"))


def test_arc_easy_counts_and_known_row(arc_easy: LoadReport) -> None:
    assert arc_easy.rows_read == 2251 and arc_easy.rejected == {} and len(arc_easy.examples) == 2251
    assert arc_easy.source.endswith("ai2_arc/ARC-Easy/train.parquet']")
    ex = _by_id(arc_easy)["Mercury_7220990"]
    assert (ex.gold, ex.grader, ex.dataset, ex.split) == ("B", "mc_letter", "arc_easy", "train")
    assert ex.prompt == (
        "Question: Which factor will most likely cause a person to develop a fever?\n"
        "A. a leg muscle relaxing after exercise\n"
        "B. a bacterial population in the bloodstream\n"
        "C. several viral particles on the skin\n"
        "D. carbohydrates being digested in the stomach\n"
        "Answer with a single letter (A, B, C, or D) and no explanation. Start your answer with "
        "\"Answer: \" followed by the letter of the answer you choose."
    )


def test_arc_numeric_labels_map_to_letters(arc_easy: LoadReport) -> None:
    rows = _by_id(arc_easy)
    ex = rows["NYSEDREGENTS_2006_8_10"]  # labels 1-4, answerKey "3"
    assert ex.gold == "C" and ex.meta["answer_label"] == "3"
    choices = "\nA. their color\nB. their shape\nC. how they formed\nD. the minerals they contain\n"
    assert choices in ex.prompt
    three = rows["NYSEDREGENTS_2006_8_37"]  # labels 1-3, answerKey "3"
    assert three.gold == "C" and "(A, B, or C)" in three.prompt and "\nD. " not in three.prompt
    five = rows["TIMSS_1995_8_Q14"]  # labels A-E, answerKey E
    assert five.gold == "E" and "(A, B, C, D, or E)" in five.prompt
    numeric = [e for e in arc_easy.examples if e.meta["answer_label"].isdigit()]
    assert len(numeric) == 102  # 101 rows labelled 1-4 plus one labelled 1-3
    assert {e.gold for e in arc_easy.examples} == set("ABCDE")


def test_arc_challenge_and_equivalent_sources() -> None:
    report = _load(name="arc_challenge", path=str(DATA / "ai2_arc"))
    assert report.rows_read == 1119 and report.rejected == {} and len(report.examples) == 1119
    rows = _by_id(report)
    assert rows["NYSEDREGENTS_2004_8_31"].gold == "B"  # numeric label "2"
    assert rows["Mercury_SC_415702"].gold == "A"
    # The config directory itself and explicit data_files give the same examples, same order.
    sub = load_examples(DatasetConfig(name="arc_challenge", num_examples=40, seed=7,
                                      path=str(DATA / "ai2_arc" / "ARC-Challenge")))
    parquet = str(DATA / "ai2_arc" / "ARC-Challenge" / "train.parquet")
    files = load_examples(DatasetConfig(name="arc_challenge", num_examples=40, seed=7,
                                        data_files=parquet))
    root = load_examples(DatasetConfig(name="arc_challenge", num_examples=40, seed=7,
                                       path=str(DATA / "ai2_arc")))
    assert sub.examples == files.examples == root.examples


def test_gsm8k_counts_and_golds() -> None:
    report = _load(name="gsm8k", path=str(DATA / "gsm8k"))
    assert report.rows_read == 7473 and report.rejected == {} and len(report.examples) == 7473
    rows = _by_id(report)
    first = rows["train-0"]
    assert first.gold == "72" and first.grader == "gsm8k_numeric"
    assert first.prompt.startswith("Question: Natalia sold clips to 48 of her friends in April")
    assert "step by step" in first.prompt and "\\boxed{}" in first.prompt and "####" in first.prompt
    assert rows["train-345"].gold == "1080"  # "#### 1,080"
    assert rows["train-367"].gold == "850000"


def test_math_counts_known_rows_and_level_filter() -> None:
    path = str(DATA / "competition_math")
    report = _load(name="math", path=path)
    assert report.rows_read == 4500 and report.rejected == {} and len(report.examples) == 4500
    rows = _by_id(report)
    assert rows["train-0"].gold == "2" and rows["train-0"].meta == {"level": 3, "type": "Algebra"}
    assert rows["train-2"].gold == "\\dfrac{9}{7}"
    assert rows["train-0"].prompt.endswith("\nPut your final answer within \\boxed{}.")
    level1 = _load(name="math", path=path, levels=(1,))
    assert len(level1.examples) == 394 and level1.filtered == 4106 and level1.rejected == {}
    assert {e.meta["level"] for e in level1.examples} == {1}
    hard = load_examples(DatasetConfig(name="math", path=path, levels=[5, 4], num_examples=64))
    assert len(hard.examples) == 64 and hard.filtered == 394 + 804 + 1026
    assert {e.meta["level"] for e in hard.examples} == {4, 5}


def test_missing_split_is_an_actionable_error() -> None:
    with pytest.raises(ValueError, match=r"no 'test' files under .*competition_math.*\['train'\]"):
        load_examples(DatasetConfig(name="math", split="test", path=str(DATA / "competition_math")))


@pytest.mark.parametrize(("name", "repo", "configs"), [
    ("arc_easy", "allenai/ai2_arc", ["ARC-Easy"]),
    ("arc_challenge", "allenai/ai2_arc", ["ARC-Challenge"]),
    ("gsm8k", "openai/gsm8k", ["main"]),
    ("dart-2", "hkust-nlp/dart-math-pool-math", [None]),
    ("math", "EleutherAI/hendrycks_math", ["algebra", "counting_and_probability", "geometry",
                                           "intermediate_algebra", "number_theory", "prealgebra",
                                           "precalculus"]),
])
def test_hub_default_names_and_offline_error(monkeypatch, name, repo, configs) -> None:
    import datasets

    calls = []

    def offline(path, config_name=None, split=None, **kw):
        calls.append((path, config_name, split))
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(RuntimeError, match=r"Offline, set DatasetConfig.path") as err:
        load_examples(DatasetConfig(name=name, split="test"))
    assert isinstance(err.value.__cause__, ConnectionError)
    assert calls == [(repo, configs[0], "test")]
