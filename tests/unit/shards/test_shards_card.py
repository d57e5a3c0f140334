"""The output directory describes itself: ``datasets.load_dataset(<output dir>)`` reads the shards
through the dataset card, and ``trace_text=False`` keeps the trace's figures without its text."""

from __future__ import annotations

import pytest
import yaml

from drllm.paths import LayerPath
from drllm.report import load_report_table, science_report
from drllm.search import MCTSConfig, run
from drllm.shards import ShardWriter, read_shards, shard_files
from drllm.shards.card import write_dataset_card
from drllm.shards.schema import SupervisionRecord, supervision_schema
from drllm.types import Evaluation, Example

L = 6


def _record(i: int) -> SupervisionRecord:
    """A searched example whose trace holds a correct and a wrong response."""
    def evaluate(path: LayerPath) -> Evaluation:
        right = path[2] == 1
        text = f"The answer is {i if right else i + 1}."
        return Evaluation(reward=1.0 if right else 0.0, response=text,
                          layers_executed=path.cost, reason="match" if right else "mismatch")

    result = run(L, evaluate, MCTSConfig(num_simulations=12, seed=i, early_stop=False))
    example = Example(f"q{i}", "synthetic_arith", "train", f"What is {i}?", (), str(i),
                      "gsm8k_numeric")
    return SupervisionRecord(example, result, "tiny", f"<p>What is {i}?", 0.5)


def _write(out, n: int = 3, **kw) -> None:
    with ShardWriter(out / "shards", writer_id="w0", num_layers=L, model_id="tiny",
                     config={"search": {"c": 1.8}}, rows_per_shard=2, **kw) as writer:
        for i in range(n):
            writer.add(_record(i))


def test_load_dataset_reads_the_output_directory_through_its_card(tmp_path) -> None:
    datasets = pytest.importorskip("datasets")
    _write(tmp_path)
    (tmp_path / "summary.json").write_text("{}")  # other files of a run directory are ignored
    table = load_report_table(tmp_path / "shards", "synthetic_arith")
    card = write_dataset_card(
        tmp_path, tmp_path / "shards", schema=supervision_schema(L), model_id="tiny",
        dataset="synthetic_arith", search_config={"search": {"c": 1.8}},
        report={**science_report(table), "dataset": "synthetic_arith"})
    text = card.read_text()
    header = yaml.safe_load(text.split("---")[1])
    listed = header["configs"][0]["data_files"][0]["path"]
    assert listed == [f"shards/{p.name}" for p in shard_files(tmp_path / "shards")]
    assert len(listed) == 2  # 3 rows, 2 per shard
    assert "examples: 3" in text and '"c": 1.8' in text

    loaded = datasets.load_dataset(str(tmp_path), cache_dir=str(tmp_path / "hf-cache"))["train"]
    expected = read_shards(tmp_path / "shards").to_pylist()
    assert sorted(loaded["example_id"]) == sorted(r["example_id"] for r in expected) == [
        "q0", "q1", "q2"]
    by_id = {r["example_id"]: r for r in expected}
    for row in loaded:
        assert row["best_path"] == by_id[row["example_id"]]["best_path"]
        assert row["trace"] == by_id[row["example_id"]]["trace"]
    assert loaded.features["best_path"].length == L


def test_the_card_refuses_a_shards_directory_outside_the_output(tmp_path) -> None:
    with pytest.raises(ValueError, match="not inside"):
        write_dataset_card(tmp_path / "run", tmp_path / "elsewhere", schema=supervision_schema(L),
                           model_id="tiny", dataset="d", search_config={}, report={})


@pytest.mark.parametrize("trace_text", [True, False])
def test_trace_text_switch_keeps_figures_and_labels(tmp_path, trace_text: bool) -> None:
    _write(tmp_path, n=1, trace_text=trace_text)
    row = read_shards(tmp_path / "shards").to_pylist()[0]
    trace = row["trace"]
    assert len(trace) == row["evaluations"] > 1
    assert {t["reward"] for t in trace} == {0.0, 1.0}
    assert row["best_response"] == "The answer is 0."  # labels keep their text either way
    texts = [t["response"] for t in trace]
    if trace_text:
        assert set(texts) == {"The answer is 0.", "The answer is 1."}
    else:
        assert texts == [None] * len(trace)


def test_a_resumed_directory_loads_its_new_rows(tmp_path) -> None:
    # datasets caches on the card's file patterns: the rewritten card must name the new shards.
    datasets = pytest.importorskip("datasets")
    cache = str(tmp_path / "hf-cache")

    def card_and_load(ids: range, writer: str) -> list[str]:
        with ShardWriter(tmp_path / "shards", writer_id=writer, num_layers=L, model_id="tiny",
                         config={"search": {"c": 1.8}}, rows_per_shard=2) as w:
            for i in ids:
                w.add(_record(i))
        write_dataset_card(tmp_path, tmp_path / "shards", schema=supervision_schema(L),
                           model_id="tiny", dataset="d", search_config={}, report={})
        return sorted(datasets.load_dataset(str(tmp_path), cache_dir=cache)["train"]["example_id"])

    assert card_and_load(range(2), "w0") == ["q0", "q1"]
    assert card_and_load(range(2, 5), "w1") == ["q0", "q1", "q2", "q3", "q4"]
