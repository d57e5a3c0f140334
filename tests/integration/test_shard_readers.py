"""Shards written by ShardWriter read back identically by every Parquet reader users reach for.

The run's shards are built from real ARC-Easy rows (``../shared/data``) with deterministic
search results; a complete-looking ``.inprogress`` copy of a shard sits in the directory to
prove that no reader picks up unfinished files (it would duplicate rows).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from drllm.paths import LayerPath, legal_actions
from drllm.shards import (
    ShardWriter,
    SupervisionRecord,
    completed_example_ids,
    decode_path,
    inprogress_files,
    read_manifest,
    read_shards,
    shard_files,
)
from drllm.types import Example, SearchResult

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
ARC_EASY = DATA / "ai2_arc" / "ARC-Easy" / "train.parquet"
L = 8
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
N_ROWS = 22


def arc_examples(n: int) -> list[Example]:
    assert ARC_EASY.is_file(), f"missing test data {ARC_EASY}; clone shared/ beside the repo"
    df = pd.read_parquet(ARC_EASY).head(n)
    examples = []
    for row in df.itertuples():
        options = "\n".join(f"{lab}. {txt}" for lab, txt in
                            zip(row.choices["label"], row.choices["text"]))
        prompt = f"{row.question}\n{options}\nAnswer with the letter only."
        examples.append(Example(
            id=row.id, dataset="arc_easy", split="train", prompt=prompt,
            messages=({"role": "user", "content": prompt},), gold=row.answerKey,
            grader="multiple_choice", meta={"num_choices": len(row.choices["label"])}))
    return examples


def search_result(seed: int) -> SearchResult:
    rng = np.random.default_rng(seed)
    default, path, good = LayerPath.default(L), LayerPath.default(L), []
    for _ in range(int(rng.integers(0, 4))):
        actions = legal_actions(path)
        path = actions[int(rng.integers(len(actions)))].apply(path)
        good.append(path)
    default_reward = float(seed % 2)
    rewards = [1.0] * len(good)
    best = min(good, key=lambda p: p.cost) if good else default
    best_reward = 1.0 if good else default_reward
    if best_reward < 1.0:  # unsolved: the default label, no good paths
        best, good = default, []
    return SearchResult(
        num_layers=L, default_path=default, default_reward=default_reward,
        default_response="B", best_path=best, best_reward=best_reward, best_response="B",
        best_cost=best.cost, layers_saved=L - best.cost, improved=best_reward > default_reward,
        good_paths=tuple(good), good_rewards=tuple(rewards), simulations=50,
        evaluations=10 + seed, memo_hits=40 - seed, stopped_early=bool(good),
        solved=best_reward >= 1.0, evaluated_depths=tuple(range(len(good) + 1)))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> tuple[Path, dict[str, dict[str, Any]]]:
    """A run's shard directory written by two interleaved writers, and the expected rows."""
    out = tmp_path_factory.mktemp("run") / "arc_easy"
    config = {"model": {"id": MODEL}, "search": {"simulations": 50}}
    writers = [ShardWriter(out, writer_id=f"w{k}", num_layers=L, model_id=MODEL, config=config,
                           rows_per_shard=4) for k in range(2)]
    expected = {}
    for i, example in enumerate(arc_examples(N_ROWS)):
        record = SupervisionRecord(example, search_result(i), MODEL, f"<user>{example.prompt}",
                                   0.5 + i)
        writers[i % 2].add(record)
        expected[example.id] = normalize(record_values(record))
    for w in writers:
        w.close()
    first = shard_files(out)[0]
    shutil.copy(first, out / ".shard-w9-000000.parquet.inprogress")
    return out, expected


def record_values(record: SupervisionRecord) -> dict[str, Any]:
    res = record.result
    return {"example_id": record.example.id, "dataset": record.example.dataset,
            "best_path": res.best_path, "best_reward": res.best_reward,
            "default_reward": res.default_reward, "good_paths": res.good_paths,
            "good_rewards": res.good_rewards, "layers_saved": res.layers_saved,
            "improved": res.improved}


def normalize(row: Mapping[str, Any]) -> dict[str, Any]:
    """Reader-independent form: paths as int lists (numpy arrays and lists alike)."""
    return {
        "example_id": str(row["example_id"]),
        "dataset": str(row["dataset"]),
        "best_path": list(decode_path(np.asarray(row["best_path"]).tolist(), L)),
        "best_reward": float(row["best_reward"]),
        "default_reward": float(row["default_reward"]),
        "good_paths": [list(decode_path(np.asarray(p).tolist(), L)) for p in row["good_paths"]],
        "good_rewards": [float(r) for r in row["good_rewards"]],
        "layers_saved": int(row["layers_saved"]),
        "improved": bool(row["improved"]),
    }


def by_id(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        norm = normalize(row)
        assert norm["example_id"] not in out, f"duplicate row {norm['example_id']}"
        out[norm["example_id"]] = norm
    return out


def test_run_layout(run_dir):
    out, expected = run_dir
    files = shard_files(out)
    assert [p.name for p in files] == [f"shard-w{k}-{s:06d}.parquet"
                                      for k in range(2) for s in range(3)]
    assert sorted(e["file"] for e in read_manifest(out)) == [p.name for p in files]
    assert sum(e["rows"] for e in read_manifest(out)) == N_ROWS
    assert len(inprogress_files(out)) == 1
    assert completed_example_ids(out) == set(expected)
    assert sum(1 for v in expected.values() if v["improved"]) > 0
    assert any(v["layers_saved"] > 0 for v in expected.values())


def test_project_reader(run_dir):
    out, expected = run_dir
    assert by_id(read_shards(out).to_pylist()) == expected


def test_pyarrow_readers(run_dir):
    out, expected = run_dir
    assert by_id(pq.read_table(out).to_pylist()) == expected
    globbed = sorted(str(p) for p in out.glob("shard-*.parquet"))
    assert by_id(pq.read_table(globbed).to_pylist()) == expected
    dataset = pads.dataset(str(out), format="parquet")
    assert by_id(dataset.to_table().to_pylist()) == expected


def test_pandas_reader(run_dir):
    out, expected = run_dir
    df = pd.read_parquet(out)
    assert by_id(df.to_dict("records")) == expected


def test_hf_datasets_reader(run_dir, tmp_path):
    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(out_glob(run_dir[0])), split="train",
                               cache_dir=str(tmp_path / "hf_cache"))
    assert ds.features["best_path"].length == L
    assert by_id(ds.to_list()) == run_dir[1]


def test_duckdb_reader(run_dir):
    import duckdb

    out, expected = run_dir
    con = duckdb.connect()
    try:
        cur = con.execute(f"SELECT * FROM read_parquet('{out_glob(out)}')")
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r)) for r in cur.fetchall()]
        layers = con.execute(
            f"SELECT sum(layers_saved) FROM read_parquet('{out_glob(out)}')").fetchone()[0]
    finally:
        con.close()
    assert by_id(rows) == expected
    assert layers == sum(v["layers_saved"] for v in expected.values())


def test_ray_data_reader(run_dir, ray_local):
    out, expected = run_dir
    ds = ray_local.data.read_parquet(str(out))
    assert by_id(ds.take_all()) == expected


def out_glob(out: Path) -> Path:
    return out / "shard-*.parquet"
