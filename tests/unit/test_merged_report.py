"""The merged report of a sharded search equals the report of the unsharded search of the same
examples; directories are found from run dirs, shards dirs and globs; rows in two directories
count once; another model is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drllm.data.sharding import ShardSpec
from drllm.distributed import DriverConfig, EvaluatorSpec, PoolConfig, run_search_job
from drllm.jobs.report import main as report_main
from drllm.merged_report import merged_report, shards_dirs
from drllm.report import load_report_table, science_report
from drllm.search import MCTSConfig
from drllm.shards import ShardWriter
from drllm.testing import DummyEvaluator, KeyedBlockReward
from drllm.types import Example

L = 6
MCTS = MCTSConfig(num_simulations=10, seed=5)


def examples(n: int) -> list[Example]:
    return [Example(id=f"q{i}", dataset="toy", split="train", prompt=f"question {i}",
                    messages=({"role": "user", "content": f"question {i}"},), gold="42",
                    grader="exact") for i in range(n)]


def search(out: Path, todo: list[Example], model_id: str = "dummy") -> None:
    # Half the questions are bandits whose only correct paths skip one block (some unsolved
    # within the budget), the others pseudo-random rewards.
    reward = KeyedBlockReward({f"q{i}": i % L for i in range(0, 14, 2)})
    spec = EvaluatorSpec(DummyEvaluator, {"num_layers": L, "model_id": model_id,
                                          "reward_fn": reward})
    with ShardWriter(out / "shards", writer_id="w", num_layers=L, model_id=model_id,
                     config={"search": {"success_reward": 1.0}}, rows_per_shard=3) as writer:
        run_search_job(todo, sink=writer, render=lambda ex: ex.prompt, mcts_config=MCTS,
                       evaluator=spec, progress=False, in_process=True,
                       pool_config=PoolConfig(num_actors=1, requests_per_actor=4),
                       driver_config=DriverConfig(max_concurrent_trees=4))
    (out / "summary.json").write_text(json.dumps({
        "shards_dir": str((out / "shards").resolve()), "shard": out.name,
        "examples": len(todo), "default_failed": {"gone": "boom"}, "rows_rejected": {"bad": 1},
        "wall_seconds": 2.0}))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    todo = examples(14)
    search(root / "whole", todo)
    for k in range(3):
        search(root / "sharded" / f"shard-{k}-of-3", ShardSpec(k, 3).select(todo))
    return root


def test_merged_shards_report_what_the_unsharded_run_reports(runs: Path):
    whole = science_report(load_report_table(runs / "whole" / "shards", "toy"), 1.0)
    assert whole["examples"] == 14 and 0 < whole["solved"] < 14  # not a degenerate sample
    merged = merged_report([str(runs / "sharded" / "shard-*-of-3")])
    assert merged["datasets"] == {"toy": whole}
    assert merged["examples"] == 14 and merged["duplicates_dropped"] == 0
    assert sum(p["rows"] for p in merged["parts"]) == 14
    assert [p["shard"] for p in merged["parts"]] == [f"shard-{k}-of-3" for k in range(3)]
    assert merged["default_failed"] == {"gone": "boom"}
    assert merged["rows_rejected"] == {"bad": 3} and merged["wall_seconds_sum"] == 6.0
    # The parent of the parts finds them too.
    assert merged_report([str(runs / "sharded")])["datasets"] == {"toy": whole}


def test_rows_in_two_directories_count_once(runs: Path):
    merged = merged_report([str(runs / "whole"), str(runs / "sharded" / "shard-0-of-3" / "shards")])
    assert merged["examples"] == 14
    assert merged["duplicates_dropped"] == merged["parts"][1]["rows"] > 0


def test_directories_without_shards_and_other_models_are_refused(runs: Path, tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="holds no shards"):
        shards_dirs([str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="matches nothing"):
        shards_dirs([str(tmp_path / "nothing-*")])
    search(tmp_path / "other", examples(2), model_id="other-model")
    with pytest.raises(ValueError, match="model_id"):
        merged_report([str(runs / "whole"), str(tmp_path / "other")])


def test_command_prints_the_table_then_one_json_line(runs: Path, capsys):
    out = runs / "merged.json"
    report = report_main([str(runs / "sharded" / "shard-*-of-3"), "--out", str(out)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("== toy (dummy, L=6, 3 parts)")
    assert json.loads(lines[-1])["examples"] == 14 == report["examples"]
    assert json.loads(out.read_text())["datasets"]["toy"]["examples"] == 14


def test_against_compares_the_labels_of_the_same_questions(runs: Path, capsys):
    # The sharded runs searched the same questions with the same per-example seeds: no label
    # may differ; against a run of other questions nothing is shared.
    report = report_main([str(runs / "whole"), "--against",
                          str(runs / "sharded" / "shard-*-of-3")])
    changes = report["datasets"]["toy"]["label_changes"]
    assert changes["shared_examples"] == 14 and changes["labels_changed"] == 0
    assert changes["solved"]["lost"] == changes["solved"]["gained"] == 0
    assert "0 of 14 changed" in capsys.readouterr().out
    other = merged_report([str(runs / "sharded" / "shard-0-of-3")],
                          against=[str(runs / "sharded" / "shard-1-of-3")])
    assert other["datasets"]["toy"]["label_changes"] == {"shared_examples": 0}
