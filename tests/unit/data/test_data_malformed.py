"""Fixtures written in each layout (tmp_path): dart-* level filtering, `local` field maps, and
malformed rows that must be skipped and counted by reason, never raised."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from drllm.data.local import content_id
from drllm.data import DatasetConfig, load_examples
from drllm.data.dart import query_id

ARC_SCHEMA = pa.schema([
    ("id", pa.string()), ("question", pa.string()),
    ("choices", pa.struct([("text", pa.list_(pa.string())), ("label", pa.list_(pa.string()))])),
    ("answerKey", pa.string()),
])


def _write(path: Path, rows: list[dict], schema: pa.Schema | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def _arc(id_, q="Q?", text=("x", "y", "z", "w"), label=("A", "B", "C", "D"), key="A") -> dict:
    return {"id": id_, "question": q, "choices": {"text": list(text), "label": list(label)},
            "answerKey": key}


def test_arc_malformed_rows_counted(tmp_path: Path) -> None:
    rows = [
        _arc("ok-1", key="C"),
        _arc("ok-numeric", label=("1", "2", "3", "4"), key="4"),
        _arc("empty-choices", text=(), label=()),
        _arc("no-key", key=None),
        _arc("blank-key", key=" "),
        _arc("key-not-a-label", key="E"),
        _arc("bad-label", label=("A", "B", "C", "X"), key="A"),
        _arc("dup-label", label=("A", "B", "B", "1"), key="A"),
        _arc("misaligned", text=("x", "y", "z"), key="A"),
        _arc("blank-text", text=("x", "", "z", "w"), key="A"),
        _arc("no-question", q="  "),
        _arc("ok-1", key="B"),  # duplicate id
        # Mappable, but the strict grader only knows A-E.
        _arc("six-choices", text=tuple("uvwxyz"), label=tuple("ABCDEF"), key="F"),
        {"id": "null-choices", "question": "Q?", "choices": None, "answerKey": "A"},
    ]
    # Hub layout under a root: <root>/ARC-Easy/train.parquet.
    _write(tmp_path / "ai2_arc" / "ARC-Easy" / "train.parquet", rows, ARC_SCHEMA)
    report = load_examples(DatasetConfig(name="arc_easy", path=str(tmp_path / "ai2_arc"),
                                         num_examples=None))
    assert report.rows_read == len(rows)
    assert report.rejected == {
        "answerKey not among choices": 1,
        "choice labels and texts differ in length": 1,
        "duplicate choice label": 1,
        "duplicate id": 1,
        "empty choice text": 1,
        "empty choices": 2,
        "empty question": 1,
        "gold rejected by grader": 1,
        "missing answerKey": 2,
        "unmappable choice label": 1,
    }
    golds = {e.id: e.gold for e in report.examples}
    assert golds == {"ok-1": "C", "ok-numeric": "D"}
    # The lenient grader accepts the same golds; the override is carried on each example.
    lenient = load_examples(DatasetConfig(name="arc_easy", path=str(tmp_path / "ai2_arc"),
                                          num_examples=None, grader="mc_letter_lenient"))
    assert {e.grader for e in lenient.examples} == {"mc_letter_lenient"}


def test_missing_column_is_a_schema_error(tmp_path: Path) -> None:
    f = _write(tmp_path / "train.parquet", [{"problem": "Q?", "solution": "\\boxed{1}"}])
    with pytest.raises(ValueError, match=r"columns \['level', 'type'\] missing .*columns present"):
        load_examples(DatasetConfig(name="math", data_files=str(f)))


def test_gsm8k_malformed_rows_counted(tmp_path: Path) -> None:
    rows = [
        {"question": "2+2?", "answer": "2+2=4\n#### 4"},
        {"question": "Big?", "answer": "lots\n#### 1,234,567"},
        {"question": "No hashes?", "answer": "The answer is 5."},
        {"question": "Words?", "answer": "#### ten"},
        {"question": "Null?", "answer": None},
        {"question": "", "answer": "#### 3"},
    ]
    f = _write(tmp_path / "gsm.parquet", rows)
    report = load_examples(DatasetConfig(name="gsm8k", data_files=(str(f),), num_examples=None))
    assert report.rejected == {"empty question": 1, "missing answer": 1,
                               "no number after #### in answer": 2}
    assert {e.id: e.gold for e in report.examples} == {"train-0": "4", "train-1": "1234567"}


def test_math_malformed_rows_and_unparseable_level(tmp_path: Path) -> None:
    rows = [
        {"problem": "p0", "level": "Level 2", "type": "Algebra",
         "solution": "so \\boxed{\\frac{1}{2}}."},
        {"problem": "p1", "level": "Level 5", "type": "Geometry",
         "solution": "\\boxed{1} then \\boxed{7}"},
        {"problem": "p2", "level": "Level 2", "type": "Algebra", "solution": "no box, answer 3"},
        {"problem": "p3", "level": "Level 3", "type": "Algebra", "solution": "\\boxed{}"},
        {"problem": "p4", "level": "Level 1", "type": "Algebra", "solution": None},
        {"problem": "p5", "level": "Level ?", "type": "Algebra", "solution": "\\boxed{4}"},
        {"problem": " ", "level": "Level 2", "type": "Algebra", "solution": "\\boxed{4}"},
    ]
    f = _write(tmp_path / "math" / "test.parquet", rows)
    everything = load_examples(DatasetConfig(name="math", split="test", path=str(tmp_path / "math"),
                                             num_examples=None))
    assert everything.rejected == {"empty \\boxed answer": 1, "empty problem": 1,
                                   "missing solution": 1, "no \\boxed in solution": 1}
    golds = {e.id: (e.gold, e.meta["level"]) for e in everything.examples}
    assert golds == {"test-0": ("\\frac{1}{2}", 2), "test-1": ("7", 5), "test-5": ("4", None)}
    level2 = load_examples(DatasetConfig(name="math", split="test", data_files=str(f),
                                         levels=(2,), num_examples=None))
    assert [e.id for e in level2.examples] == ["test-0"]
    assert level2.filtered == 3  # levels 5, 3, 1
    assert level2.rejected == {"unparseable level": 1, "no \\boxed in solution": 1,
                               "empty problem": 1}


def _dart_rows() -> list[dict]:
    rows = []
    for level in (1, 2, 3, 4, 5):
        for i in range(3):
            rows.append({"query": f"L{level} problem {i}", "gt_ans": f"{level}{i}",
                         "query_metadata": {"level": level, "type": "Algebra"},
                         "response": "a long synthesized solution"})
    rows.append({"query": "L2 problem 0", "gt_ans": "20",  # second response to the same query
                 "query_metadata": {"level": 2, "type": "Algebra"}, "response": "another"})
    rows.append({"query": "L2 no answer", "gt_ans": None,
                 "query_metadata": {"level": 2, "type": "Algebra"}, "response": ""})
    rows.append({"query": "L2 blank answer", "gt_ans": "  ",
                 "query_metadata": {"level": 2, "type": "Algebra"}, "response": ""})
    rows.append({"query": "no level", "gt_ans": "1",
                 "query_metadata": {"level": None, "type": "Algebra"}, "response": ""})
    return rows


@pytest.fixture()
def dart_root(tmp_path: Path) -> Path:
    # Hub layout of hkust-nlp/dart-math-pool-math: data/train-0000k-of-0000n.parquet.
    rows = _dart_rows()
    _write(tmp_path / "dart" / "data" / "train-00000-of-00002.parquet", rows[:8])
    _write(tmp_path / "dart" / "data" / "train-00001-of-00002.parquet", rows[8:])
    return tmp_path / "dart"


def test_dart_level_filter_and_rejections(dart_root: Path) -> None:
    report = load_examples(DatasetConfig(name="dart-2", path=str(dart_root), num_examples=None))
    assert report.rows_read == 19
    assert report.filtered == 12  # the other four levels, three rows each
    assert report.rejected == {"missing gt_ans": 2, "duplicate id": 1, "unparseable level": 1}
    assert sorted(e.gold for e in report.examples) == ["20", "21", "22"]
    ex = next(e for e in report.examples if e.gold == "20")
    assert ex.id == query_id("L2 problem 0") and ex.id.startswith("q-") and len(ex.id) == 18
    assert (ex.dataset, ex.grader) == ("dart-2", "math_boxed")
    assert ex.meta == {"level": 2, "type": "Algebra"}
    assert ex.prompt == "Question: L2 problem 0\nPut your final answer within \\boxed{}."
    for k in (1, 3, 5):
        golds = {e.gold for e in load_examples(DatasetConfig(
            name=f"dart-{k}", path=str(dart_root), num_examples=None)).examples}
        assert golds == {f"{k}{i}" for i in range(3)}


def test_dart_any_levels(dart_root: Path) -> None:
    both = load_examples(DatasetConfig(name="dart", path=str(dart_root), levels=(1, 4),
                                       num_examples=None))
    assert sorted(e.gold for e in both.examples) == ["10", "11", "12", "40", "41", "42"]
    unfiltered = load_examples(DatasetConfig(name="dart", path=str(dart_root), num_examples=None))
    # Without a level filter the level-less row is kept; duplicates and missing golds are not.
    assert len(unfiltered.examples) == 16 and unfiltered.filtered == 0
    assert unfiltered.rejected == {"missing gt_ans": 2, "duplicate id": 1}


def test_local_jsonl_with_field_map(tmp_path: Path) -> None:
    f = tmp_path / "qs.jsonl"
    rows = [
        {"qid": "a", "q": "What is 6 * 7?", "ans": 42},
        {"qid": "b", "q": "Half of 5?", "ans": 2.5},
        {"qid": "c", "q": "No gold", "ans": None},
        {"qid": "d", "q": "", "ans": "1"},
        {"qid": "a", "q": "Dup id", "ans": "3"},
        {"qid": None, "q": "No id", "ans": "3"},
    ]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DatasetConfig(name="local", data_files=str(f), grader="gsm8k_numeric", num_examples=None,
                        field_map={"question": "q", "gold": "ans", "id": "qid"},
                        system_prompt="You are a careful calculator.")
    report = load_examples(cfg)
    assert report.rejected == {"duplicate id": 1, "missing gold": 1, "missing id": 1,
                               "missing question": 1}
    by_id = {e.id: e for e in report.examples}
    assert {k: e.gold for k, e in by_id.items()} == {"a": "42", "b": "2.5"}
    a = by_id["a"]
    assert a.grader == "gsm8k_numeric" and a.dataset == "local"
    assert a.prompt.startswith("Question: What is 6 * 7?\nSolve the problem step by step")
    assert a.messages == ({"role": "system", "content": "You are a careful calculator."},
                          {"role": "user", "content": a.prompt})
    assert a.base_prompt == f"You are a careful calculator.\n\n{a.prompt}\nAnswer:"


def test_local_parquet_without_id_column(tmp_path: Path) -> None:
    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(5)]
    f = _write(tmp_path / "set.parquet", rows)
    cfg = dict(name="local", grader="exact", field_map={"question": "question", "gold": "answer"},
               num_examples=3, seed=11)
    by_files = load_examples(DatasetConfig(data_files=str(f), **cfg))
    by_path = load_examples(DatasetConfig(path=str(f), **cfg))
    assert by_files.examples == by_path.examples and len(by_files.examples) == 3
    for e in by_files.examples:
        i = int(e.gold[1:])
        assert e.id == content_id(f"q{i}", f"a{i}") and e.prompt == f"Question: q{i}"
    # Ids name content, not row numbers: the same question in another file (at another row)
    # keeps its id, and another question at the same row gets another id.
    g = _write(tmp_path / "other.parquet", [{"question": "new", "answer": "x"}] + rows)
    other = load_examples(DatasetConfig(data_files=str(g), **{**cfg, "num_examples": None}))
    ids = {e.gold: e.id for e in other.examples}
    assert ids["a0"] == content_id("q0", "a0") and ids["x"] not in {e.id for e in by_files.examples}
    assert len(set(ids.values())) == 6
    with pytest.raises(ValueError, match=r"DatasetConfig.field_map: columns \['body'\] missing from"):
        load_examples(DatasetConfig(name="local", data_files=str(f), grader="exact",
                                    field_map={"question": "body", "gold": "answer"}))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_examples(DatasetConfig(name="local", data_files=str(tmp_path / "nope.jsonl"),
                                    grader="exact", field_map={"question": "q", "gold": "a"}))


def _jsonl_with_a_broken_line(tmp_path: Path) -> Path:
    f = tmp_path / "qs.jsonl"
    f.write_text(json.dumps({"q": "What is 6 * 7?", "a": 42}) + "\n"
                 + "{not json\n"
                 + json.dumps({"q": "Half of 5?", "a": 2.5}) + "\n"
                 + "[1, 2]\n"
                 + json.dumps({"q": "3 + 4?", "a": 7}) + "\n")
    return f


def test_local_jsonl_malformed_lines_are_counted_rejections(tmp_path: Path, caplog) -> None:
    f = _jsonl_with_a_broken_line(tmp_path)
    cfg = DatasetConfig(name="local", data_files=str(f), grader="gsm8k_numeric", num_examples=None,
                        field_map={"question": "q", "gold": "a"})
    with caplog.at_level("WARNING", logger="drllm.data.sources"):
        report = load_examples(cfg)
    assert sorted(e.gold for e in report.examples) == ["2.5", "42", "7"]
    assert report.rejected == {"malformed jsonl line": 2} and report.rows_read == 5
    assert f"{f}:2: skipped (not JSON" in caplog.text
    assert f"{f}:4: skipped (a JSON list, not an object)" in caplog.text


def test_local_jsonl_malformed_line_as_an_error_names_file_and_line(tmp_path: Path) -> None:
    f = _jsonl_with_a_broken_line(tmp_path)
    cfg = DatasetConfig(name="local", data_files=str(f), grader="gsm8k_numeric",
                        field_map={"question": "q", "gold": "a"}, malformed_lines="error")
    with pytest.raises(ValueError, match=rf"{f}:2: not JSON .*2 malformed line\(s\).*"
                                         "malformed_lines=reject"):
        load_examples(cfg)
    with pytest.raises(ValueError, match="DatasetConfig.malformed_lines"):
        DatasetConfig(name="local", data_files=str(f), grader="exact",
                      field_map={"question": "q", "gold": "a"}, malformed_lines="ignore")


def test_an_unreadable_data_file_is_named(tmp_path: Path) -> None:
    f = tmp_path / "set.parquet"
    f.write_bytes(b"PAR1xyz")  # a truncated copy
    with pytest.raises(ValueError, match=rf"could not read data files \['{f}'\] as parquet"):
        load_examples(DatasetConfig(name="local", data_files=str(f), grader="exact",
                                    field_map={"question": "q", "gold": "a"}))
