"""The router-training job on a local Ray cluster, end to end on a tiny model.

Real search (evaluator actor, MCTS, shard writer) -> feature pass (Ray Data actor pool) ->
Ray Train ``TorchTrainer`` (1 CPU worker) -> router checkpoint -> RoutedModel. Shares the
session's ``ray_local`` cluster (2 CPUs).
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest
import torch

from drllm.bench.train import random_path, synthetic_result
from drllm.cluster import ClusterSettings
from drllm.distributed import EvaluatorSpec, GenerationConfig, PoolConfig, run_search_job
from drllm.distributed.executor_evaluator import ExecutorEvaluator
from drllm.testing.models import TinyModelLoader
from drllm.inference import RoutedModel
from drllm.models.loading import ModelSpec
from drllm.models.tiny import tiny_model, tiny_tokenizer
from drllm.paths import LayerPath
from drllm.routers.checkpoint import RouterCheckpointError, read_config
from drllm.routers.feature_store import load_features, read_info
from drllm.routers.features import FeatureConfig, run_feature_pass
from drllm.routers.dataset import split_by_id
from drllm.routers.metrics import compute_metrics
from drllm.routers.module import Routers
from drllm.routers.rows import NoRowsError
from drllm.routers.train_job import (
    RayTrainSettings,
    TrainJobSettings,
    fit_routers,
    run,
)
from drllm.routers.training import TrainConfig
from drllm.search import MCTSConfig
from drllm.shards import ShardWriter, SupervisionRecord, read_shards
from drllm.types import Example

REPO = Path(__file__).resolve().parents[2]
L, D = 4, 64
LOADER = TinyModelLoader("llama", num_layers=L, hidden_size=D, seed=1)
MODEL_ID = "tiny-llama-L4-d64-s1"
N = 24
# A random tiny model solves none of the searched questions, so the real-search shards are
# featurized with rows="all"; the default filter (solved rows) is tested on mixed shards.
FEATURES = FeatureConfig(windows=4, batch_size=8, num_actors=1, rows="all")
UNSOLVED = frozenset(range(0, N, 3))  # mixed shards: 8 unsolved rows, 16 solved


def examples() -> list[Example]:
    return [Example(id=f"e{i}", dataset="arith" if i % 3 else "toy", split="train",
                    prompt=f"What is {i} + {i % 7}?",
                    messages=({"role": "user", "content": f"What is {i} + {i % 7}?"},),
                    gold=str(i + i % 7), grader="exact") for i in range(N)]


def val_metrics(routers: Routers, data, cfg: TrainConfig) -> dict:
    """Metrics of ``routers`` on the validation split of the features, computed here."""
    _, val_idx = split_by_id(data.example_ids, cfg.val_fraction, cfg.seed)
    with torch.no_grad():
        preds = routers(data.features[val_idx].float(), data.wmask[val_idx]).argmax(-1)
    return compute_metrics(preds, data.labels[val_idx])


def without_loss(metrics: dict) -> dict:
    """The classification metrics (the loss and the harm figure are checked elsewhere)."""
    return {k: v for k, v in metrics.items() if k not in ("loss", "harm")}


def render(example: Example) -> str:
    return tiny_tokenizer().apply_chat_template(list(example.messages),
                                                add_generation_prompt=True, tokenize=False)


@pytest.fixture(scope="module")
def shards(ray_local, tmp_path_factory) -> Path:
    """Shards written by the real search job library (tiny model on one evaluator actor)."""
    out = tmp_path_factory.mktemp("run") / "shards"
    mcts = MCTSConfig(num_simulations=6, seed=0)
    spec = EvaluatorSpec(ExecutorEvaluator, {"model": LOADER, "generation": GenerationConfig(4),
                                      "constraints": mcts.constraints})
    with ShardWriter(out, writer_id="w0", num_layers=L, model_id=MODEL_ID, config={"t": 1},
                     rows_per_shard=10) as writer:
        summary = run_search_job(
            examples(), sink=writer, evaluator=spec, mcts_config=mcts,
            render=render,
            pool_config=PoolConfig(num_actors=1, requests_per_actor=8, name_prefix="trainjob"),
            progress=False,
        )
    assert summary.searched == N
    return out


@pytest.fixture(scope="module")
def mixed_shards(tmp_path_factory) -> Path:
    """Shards of solved rows (random 2-edit labels) and unsolved rows (rows :data:`UNSOLVED`,
    labelled with the default path, as the search writes them)."""
    out = tmp_path_factory.mktemp("mixed") / "shards"
    rng = random.Random(0)
    with ShardWriter(out, writer_id="w0", num_layers=L, model_id=MODEL_ID, config={"t": 2},
                     rows_per_shard=10) as writer:
        for i, example in enumerate(examples()):
            if i in UNSOLVED:
                result = dataclasses.replace(
                    synthetic_result(LayerPath.default(L)), best_reward=0.0, improved=False,
                    good_paths=(), good_rewards=(), solved=False)
            else:
                result = dataclasses.replace(synthetic_result(random_path(L, rng, edits=2)),
                                             solved=True)
            writer.add(SupervisionRecord(example, result, MODEL_ID, render(example), 0.0))
    return out


@pytest.fixture(scope="module")
def features(shards) -> Path:
    """Features of the shards computed by the Ray Data actor pool."""
    out = shards.parent / "features"
    info = run_feature_pass(shards, out, LOADER, FEATURES, progress=False)
    assert info.rows == N and info.model_id == MODEL_ID
    return out


def test_features_follow_the_shards(shards, features):
    table = read_shards(shards, columns=["example_id", "best_path"])
    best = dict(zip(table.column("example_id").to_pylist(), table.column("best_path").to_pylist()))
    data = load_features(features)
    assert sorted(data.example_ids) == sorted(best)
    for eid, labels in zip(data.example_ids, data.labels.tolist()):
        assert labels == best[eid]
    assert data.features.shape == (N, L, 4, D) and data.features.dtype == torch.float16
    # the actor pool computed what one in-process extractor computes
    local = run_feature_pass(shards, shards.parent / "local", LOADER, FEATURES, progress=False,
                             in_process=True)
    ref = load_features(shards.parent / "local")
    assert local.digest == read_info(features).digest
    order = {eid: i for i, eid in enumerate(ref.example_ids)}
    idx = torch.tensor([order[eid] for eid in data.example_ids])
    torch.testing.assert_close(data.features.float(), ref.features[idx].float(), atol=2e-3,
                               rtol=2e-3)


def test_feature_actors_refuse_another_model(shards, tmp_path):
    other = TinyModelLoader("llama", num_layers=L, hidden_size=D, seed=2)
    with pytest.raises(Exception, match="searched with model 'tiny-llama-L4-d64-s1' but the "
                                        "feature pass loaded 'tiny-llama-L4-d64-s2'"):
        run_feature_pass(shards, tmp_path / "bad", other, FEATURES, progress=False)
    assert read_info(tmp_path / "bad") is None and not list(tmp_path.glob("bad/*features-*"))


def test_train_job_end_to_end(shards, features, tmp_path, capsys):
    cfg = TrainConfig(epochs=3, warmup_steps=2, batch_size=4, val_fraction=0.25, windows=4,
                      bottleneck=16)
    settings = TrainJobSettings(
        model=LOADER, ray=ClusterSettings(), train=cfg, features=FEATURES,
        trainer=RayTrainSettings(num_workers=1, cpus_per_worker=1),
        shards_dir=shards, features_dir=features, progress=False,
    )
    info = read_info(features)
    summary = run(settings, tmp_path / "out")
    assert read_info(features) == info  # same shards, model, W, dtype: features reused
    data = load_features(features)

    # checkpoint round trip, metrics
    routers_dir = tmp_path / "out" / "routers"
    routers = Routers.from_pretrained(routers_dir, expected_num_layers=L, expected_hidden_size=D,
                                      expected_model_id=MODEL_ID)
    config = read_config(routers_dir)
    assert config["base_model_id"] == MODEL_ID and config["windows"] == 4
    assert sum(config["class_counts"]) == summary["train_rows"] * L
    assert config["rows"] == summary["rows"] == {
        "filter": "all", "used": N, "skipped_unsolved": 0, "train": summary["train_rows"],
        "val": summary["val_rows"]}
    assert summary["train_rows"] + summary["val_rows"] == N and summary["val_rows"] > 0
    metrics = config["metrics"]
    assert set(metrics["per_class"]) == {"skip", "execute", "repeat"}
    assert len(metrics["per_layer_accuracy"]) == L
    assert metrics["num_samples"] == summary["val_rows"] * L
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3]
    assert all("macro_f1" in h and "skip_f1" in h for h in summary["history"])
    saved = json.loads((tmp_path / "out" / "train_summary.json").read_text())
    assert saved["metrics"] == metrics
    printed = capsys.readouterr().out
    assert "macro-F1" in printed and "repeat" in printed

    # the checkpointed routers reproduce the reported validation metrics
    assert without_loss(metrics) == val_metrics(routers, data, cfg)

    # rerun: training resumes the finished run from its checkpoint (no new epochs)
    again = run(settings, tmp_path / "out")
    assert again["history"] == summary["history"] and again["metrics"] == summary["metrics"]


def test_the_default_filter_keeps_the_solved_rows_of_the_search(shards, tmp_path):
    solved = sum(read_shards(shards, columns=["solved"]).column("solved").to_pylist())
    default = dataclasses.replace(FEATURES, rows="solved")
    if solved:  # a search that solved some questions: exactly those are featurized
        info = run_feature_pass(shards, tmp_path / "f", LOADER, default, progress=False)
        assert info.row_selection() == {"filter": "solved", "used": solved,
                                        "skipped_unsolved": N - solved}
        return
    with pytest.raises(NoRowsError, match=rf"rows='solved' leaves no rows to train on: .*"
                                          rf"holds {N} rows, 0 solved and {N} unsolved.*"
                                          r"features\.rows=all"):
        run_feature_pass(shards, tmp_path / "f", LOADER, default, progress=False)
    assert read_info(tmp_path / "f") is None


def test_train_job_trains_on_solved_rows_by_default(mixed_shards, tmp_path, capsys):
    cfg = TrainConfig(epochs=1, warmup_steps=1, batch_size=4, val_fraction=0.25, windows=4,
                      bottleneck=16)
    default = FeatureConfig(windows=4, batch_size=8, num_actors=1)
    assert default.rows == "solved"
    settings = TrainJobSettings(
        model=LOADER, ray=ClusterSettings(), train=cfg, features=default,
        trainer=RayTrainSettings(num_workers=1, cpus_per_worker=1),
        shards_dir=mixed_shards, features_dir=tmp_path / "features", progress=False,
    )
    solved_ids = sorted(f"e{i}" for i in range(N) if i not in UNSOLVED)
    for rows, used, ids in (("solved", N - len(UNSOLVED), solved_ids),
                            ("all", N, sorted(f"e{i}" for i in range(N)))):
        these = dataclasses.replace(settings, features=dataclasses.replace(default, rows=rows),
                                    features_dir=tmp_path / f"features-{rows}")
        summary = run(these, tmp_path / f"out-{rows}")
        data = load_features(tmp_path / f"features-{rows}", with_features=False)
        assert sorted(data.example_ids) == ids  # the Ray Data read kept the filter's rows
        config = read_config(tmp_path / f"out-{rows}" / "routers")
        skipped = N - used
        assert config["rows"] == summary["rows"] == {
            "filter": rows, "used": used, "skipped_unsolved": skipped,
            "train": summary["train_rows"], "val": summary["val_rows"]}
        assert summary["train_rows"] + summary["val_rows"] == used == summary["feature_rows"]
        assert sum(config["class_counts"]) == summary["train_rows"] * L
        printed = capsys.readouterr().out
        assert f"{used} used (features.rows={rows}), {skipped} unsolved skipped" in printed


def test_two_ddp_workers(features, tmp_path):
    """Two DDP workers (one CPU each) train on disjoint halves; metrics are global."""
    cfg = TrainConfig(epochs=2, warmup_steps=1, batch_size=4, val_fraction=0.25, windows=4,
                      bottleneck=16)
    out = fit_routers(features, cfg, RayTrainSettings(num_workers=2, cpus_per_worker=1),
                      storage_path=tmp_path / "ray")
    assert len(out.history) == 2 and out.routers.num_layers == L
    # global metrics: both workers' halves of the validation split, by the checkpointed routers
    assert without_loss(out.metrics) == val_metrics(out.routers, load_features(features), cfg)


def test_routed_model_checks_the_checkpoint_against_the_model(shards, tmp_path):
    routers = Routers(L, D, bottleneck=16, windows=4)
    routers.save_pretrained(tmp_path / "routers", base_model_id=MODEL_ID)
    tok = tiny_tokenizer()
    for layers in (L, L - 1):
        model = tiny_model("llama", layers, D, seed=1)
        model.save_pretrained(tmp_path / f"model{layers}")
        tok.save_pretrained(tmp_path / f"model{layers}")
    other = ModelSpec(name=str(tmp_path / f"model{L - 1}"))
    with pytest.raises(RouterCheckpointError, match=r"blocks \(L\) 4 but the model has blocks "
                                                    r"\(L\) 3"):
        RoutedModel.from_pretrained(other, tmp_path / "routers", check_model_id=False)
    same = ModelSpec(name=str(tmp_path / f"model{L}"))
    with pytest.raises(RouterCheckpointError, match="model id"):
        RoutedModel.from_pretrained(same, tmp_path / "routers")
    routed = RoutedModel.from_pretrained(same, tmp_path / "routers", check_model_id=False)
    out = routed.generate(["What is 2 + 2?"], max_new_tokens=3)
    assert len(out) == 1 and len(out[0].token_ids) >= 1


def test_hydra_config_converts_to_settings(tmp_path):
    from hydra import compose, initialize_config_dir

    import drllm.jobs.train  # noqa: F401 -- registers the schema
    from drllm.hydra_schema import ConfigError, to_library

    def train_job_settings(cfg):
        return to_library(cfg, TrainJobSettings)

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            f"shards_dir={tmp_path}", "train.epochs=2", "trainer.num_workers=2",
            "features.dtype=float32", "trainer.cpus_per_worker=1", "features.rows=all",
        ])
        missing = compose(config_name="train")
        plain = compose(config_name="train", overrides=[f"shards_dir={tmp_path}"])
    s = train_job_settings(cfg)
    assert s.train.epochs == 2 and s.train.batch_size == 16 and s.train.warmup_steps is None
    assert s.train.warmup_fraction == 0.1 and s.train.select == "harm"
    assert s.trainer.num_workers == 2 and s.trainer.cpus_per_worker == 1
    assert s.features.dtype == "float32" and s.features.windows == 8
    assert s.features.rows == "all" and train_job_settings(plain).features.rows == "solved"
    assert s.shards_dir == tmp_path.resolve() and s.model.name == "smollm2-135m-instruct"
    with pytest.raises(ConfigError, match="shards_dir is required"):
        train_job_settings(missing)
    cfg.features.dtype = "int8"
    with pytest.raises(ConfigError, match="invalid `features` config.*dtype"):
        train_job_settings(cfg)
    plain.features.rows = "unsolved"
    with pytest.raises(ConfigError, match=r"invalid `features` config.*rows must be one of "
                                          r"\['solved', 'all'\]"):
        train_job_settings(plain)
