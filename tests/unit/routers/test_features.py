"""The feature pass: teacher-forced pooled states vs stock HF layers, padding, the cache key."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
import torch

from drllm.bench.train import random_path, synthetic_result
from drllm.models.executor import PathExecutor
from drllm.models.loading import LoadedModel
from drllm.models.tiny import tiny_model, tiny_tokenizer
from drllm.paths import LayerPath
from drllm.routers import features as features_mod
from drllm.routers.feature_store import (
    INFO_NAME,
    feature_key,
    find_reusable,
    key_digest,
    load_features,
    read_info,
)
from drllm.routers.features import (
    FeatureConfig,
    extract_features,
    permissive_constraints,
    run_feature_pass,
)
from drllm.routers.module import window_pool
from drllm.routers.rows import NoRowsError
from drllm.shards import ShardWriter, SupervisionRecord
from drllm.types import Example

L, D, W = 5, 64, 4
PROMPTS = [
    "<|im_start|>user\nWhat is 12 + 30? Reply with the number.<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nHi<|im_end|>\n",
    "abc",
]
PATHS = [LayerPath.parse("ESRER"), LayerPath.parse("RSSEE"), LayerPath.parse("EERSE")]


class TinyLoader:
    """Picklable loader of the tiny test model (what ``run_feature_pass`` accepts)."""

    model_id = "tiny-llama-L5"

    def __call__(self) -> LoadedModel:
        return LoadedModel(tiny_model("llama", L, D, seed=3), tiny_tokenizer(), self.model_id,
                           L, D, "llama")


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    return TinyLoader()()


@pytest.fixture(scope="module")
def executor(loaded):
    return PathExecutor(loaded.model, loaded.tokenizer, permissive_constraints(L))


def reference_entering_states(model, token_ids: list[int], path: LayerPath) -> list[torch.Tensor]:
    """States entering each block along ``path``, from the stock HF forward of the model with its
    layer list expanded along the path (skips dropped, repeats listed twice). ``[1, T, d]`` each.

    The states entering block ``i`` are the input of the first step after all steps of blocks
    ``< i`` (the path must execute its last block so that step exists).
    """
    layers = model.model.layers
    steps = [i for i, d in enumerate(path) for _ in range(d)]
    assert path[-1] != 0
    seen: list[torch.Tensor] = []

    def capture(_module, args, kwargs):
        seen.append((args[0] if args else kwargs["hidden_states"]).detach().clone())

    handles = [layer.register_forward_pre_hook(capture, with_kwargs=True) for layer in layers]
    saved = model.config.num_hidden_layers
    try:
        model.model.layers = torch.nn.ModuleList([layers[i] for i in steps])
        model.config.num_hidden_layers = len(steps)
        with torch.no_grad():
            model(torch.tensor([token_ids]), use_cache=False)
    finally:
        model.model.layers = layers
        model.config.num_hidden_layers = saved
        for h in handles:
            h.remove()
    assert len(seen) == len(steps)
    return [seen[sum(path[:i])] for i in range(len(path))]


def test_features_equal_window_pool_of_teacher_forced_states(loaded, executor):
    ids = executor.encode(PROMPTS)
    model = tiny_model("llama", L, D, seed=3)  # a private copy: the reference edits its layers
    feats, wmask = extract_features(executor, ids, PATHS, W)
    assert feats.shape == (3, L, W, D) and wmask.shape == (3, W)
    for row, (seq, path) in enumerate(zip(ids, PATHS)):
        states = reference_entering_states(model, seq, path)
        ones = torch.ones(1, len(seq), dtype=torch.long)
        for block, hidden in enumerate(states):
            pooled, wm = window_pool(hidden, ones, W)
            torch.testing.assert_close(feats[row, block], pooled[0], rtol=1e-4, atol=1e-4)
            assert torch.equal(wmask[row], wm[0])
    # a different path changes the states entering the blocks after its first edit
    other, _ = extract_features(executor, ids[:1], [LayerPath.default(L)], W)
    torch.testing.assert_close(other[0, :2], feats[0, :2])
    assert not torch.allclose(other[0, 2:], feats[0, 2:], atol=1e-3)


def test_left_padding_is_excluded_and_short_prompts_clamp_windows(executor):
    ids = executor.encode(PROMPTS)
    assert len(ids[2]) == 3 < W
    batched, wmask = extract_features(executor, ids, PATHS, W)
    assert wmask[2].tolist() == [True, True, True, False]
    assert torch.all(batched[2, :, 3] == 0)
    for row in range(3):
        alone, wm = extract_features(executor, [ids[row]], [PATHS[row]], W)
        torch.testing.assert_close(batched[row], alone[0], rtol=1e-4, atol=1e-4)
        assert torch.equal(wmask[row], wm[0])


def _examples(n: int) -> list[Example]:
    return [Example(id=f"q{i}", dataset="toy" if i % 2 else "arith", split="train",
                    prompt=f"What is {i} + {2 * i}?",
                    messages=({"role": "user", "content": f"What is {i} + {2 * i}?"},),
                    gold=str(3 * i), grader="exact") for i in range(n)]


def labelled_result(path: LayerPath, solved: bool):
    """A search result labelled ``path``: solved (reward 1), or unsolved (the default path,
    reward 0, no good paths -- what the shard writer requires of an unsolved row)."""
    if solved:
        return dataclasses.replace(synthetic_result(path), solved=True)
    default = LayerPath.default(len(path))
    return dataclasses.replace(synthetic_result(default), best_reward=0.0, improved=False,
                               good_paths=(), good_rewards=(), solved=False)


def _write(shards: Path, examples: list[Example], seed: int = 0,
           unsolved: Sequence[int] = ()) -> list[LayerPath]:
    """Shards of ``examples`` (4 rows per shard); rows ``unsolved`` are unsolved (default-path
    label), the others solved with a random 3-edit label. Returns every row's label."""
    rng = random.Random(seed)
    tok = tiny_tokenizer()
    paths = [random_path(L, rng, edits=3) for _ in examples]
    paths = [LayerPath.default(L) if i in unsolved else p for i, p in enumerate(paths)]
    with ShardWriter(shards, writer_id="synthetic", num_layers=L, model_id=TinyLoader.model_id,
                     config={"synthetic": True}, rows_per_shard=4) as writer:
        for i, (example, path) in enumerate(zip(examples, paths)):
            prompt = tok.apply_chat_template([dict(example.messages[0])],
                                             add_generation_prompt=True, tokenize=False)
            result = labelled_result(path, solved=i not in unsolved)
            writer.add(SupervisionRecord(example, result, TinyLoader.model_id, prompt, 0.0))
    return paths


@pytest.fixture
def counted(monkeypatch):
    """Counts FeatureExtractor batches (model work) in this process."""
    calls = {"batches": 0}
    original = features_mod.FeatureExtractor.__call__

    def counting(self, batch):
        calls["batches"] += 1
        return original(self, batch)

    monkeypatch.setattr(features_mod.FeatureExtractor, "__call__", counting)
    return calls


def test_pass_writes_labels_and_features_then_reuses_then_recomputes(tmp_path, counted, executor):
    shards, out = tmp_path / "shards", tmp_path / "features"
    examples = _examples(10)
    paths = _write(shards, examples)
    cfg = FeatureConfig(windows=W, dtype="float32", batch_size=4, pool="prompt")
    info = run_feature_pass(shards, out, TinyLoader(), cfg, progress=False, in_process=True)
    assert counted["batches"] == 3 and info.rows == 10
    assert (info.num_layers, info.windows, info.hidden_size) == (L, W, D)
    data = load_features(out)
    by_id = {eid: i for i, eid in enumerate(data.example_ids)}
    assert sorted(by_id) == sorted(e.id for e in examples)
    for example, path in zip(examples, paths):
        assert data.labels[by_id[example.id]].tolist() == list(path)
        assert data.datasets[by_id[example.id]] == example.dataset
    # stored features equal a direct extraction of the same row along its labeled path
    row = by_id["q7"]
    prompt = tiny_tokenizer().apply_chat_template([dict(examples[7].messages[0])],
                                                  add_generation_prompt=True, tokenize=False)
    ids = executor.encode([prompt])
    direct, _ = extract_features(executor, ids, [paths[7]], W)
    torch.testing.assert_close(data.features[row], direct[0], rtol=1e-4, atol=1e-4)
    assert int(data.num_tokens[row]) == len(ids[0])

    # rerun: same key -> no model work and the very same FeatureInfo (a recompute would have
    # a new time stamp and duration, and without Ray running it could not even start)
    again = run_feature_pass(shards, out, TinyLoader(), cfg, progress=False)
    assert counted["batches"] == 3 and again == info
    saved = json.loads((out / INFO_NAME).read_text())
    assert saved["digest"] == key_digest(saved["key"]) == info.digest

    # another W or dtype is another key
    assert find_reusable(out, {**info.key, "windows": W + 1}) is None
    assert find_reusable(out, {**info.key, "dtype": "float16"}) is None

    # shards change (two more examples) -> recompute, stale file removed
    _write(shards, _examples(12), seed=0)
    new = run_feature_pass(shards, out, TinyLoader(), cfg, progress=False, in_process=True)
    assert new.digest != info.digest and new.rows == 12 and counted["batches"] > 3
    assert [p.name for p in out.glob("features-*")] == [new.file]
    assert read_info(out) == new


def test_fp16_storage_and_model_mismatch(tmp_path):
    shards = tmp_path / "shards"
    _write(shards, _examples(3))
    info = run_feature_pass(shards, tmp_path / "f16", TinyLoader(), FeatureConfig(windows=W),
                            progress=False, in_process=True)
    data = load_features(tmp_path / "f16")
    assert info.dtype == "float16" and data.features.dtype == torch.float16
    f32 = run_feature_pass(shards, tmp_path / "f32", TinyLoader(),
                           FeatureConfig(windows=W, dtype="float32"), progress=False,
                           in_process=True)
    ref = load_features(tmp_path / "f32")
    assert f32.digest != info.digest
    order = np.argsort(ref.example_ids)
    assert list(np.argsort(data.example_ids)) == list(order)
    torch.testing.assert_close(data.features.float(), ref.features, rtol=2e-3, atol=2e-3)
    assert load_features(tmp_path / "f16", with_features=False).features is None

    class OtherLoader(TinyLoader):
        model_id = "someone-else"

    with pytest.raises(ValueError, match="searched with model 'tiny-llama-L5'.*'someone-else'"):
        run_feature_pass(shards, tmp_path / "bad", OtherLoader(), FeatureConfig(windows=W),
                         progress=False, in_process=True)
    assert read_info(tmp_path / "bad") is None and not list(tmp_path.glob("bad/*features-*"))


def test_key_tracks_shard_files(tmp_path):
    shards = tmp_path / "shards"
    _write(shards, _examples(5))
    key = feature_key(model_id="m", model_dtype=None, shards_dir=shards, windows=8,
                      dtype="float16")
    assert key == feature_key(model_id="m", model_dtype=None, shards_dir=shards, windows=8,
                              dtype="float16")
    assert [f[0] for f in key["shards"]["files"]] == sorted(p.name for p in shards.glob("shard-*"))
    assert key["shards"]["manifest_sha256"] is not None
    with pytest.raises(FileNotFoundError, match="no complete shards"):
        feature_key(model_id="m", model_dtype=None, shards_dir=tmp_path / "empty", windows=8,
                    dtype="float16")
    with pytest.raises(ValueError, match="dtype"):
        FeatureConfig(dtype="bfloat16")


def test_pass_featurizes_solved_rows_by_default_and_every_row_with_rows_all(tmp_path, counted):
    shards = tmp_path / "shards"
    examples = _examples(10)
    unsolved = {1, 4, 5, 6, 7}  # the second shard (rows 4-7) holds no solved row
    paths = _write(shards, examples, unsolved=unsolved)
    solved_ids = sorted(e.id for i, e in enumerate(examples) if i not in unsolved)
    cfg = FeatureConfig(windows=W, dtype="float32", batch_size=4)
    assert cfg.rows == "solved"
    info = run_feature_pass(shards, tmp_path / "solved", TinyLoader(), cfg, progress=False,
                            in_process=True)
    assert (info.rows, info.row_filter, info.shard_rows, info.skipped_unsolved) == (
        5, "solved", 10, 5)
    assert info.row_selection() == {"filter": "solved", "used": 5, "skipped_unsolved": 5}
    assert counted["batches"] == 2  # unsolved rows never reach the model
    data = load_features(tmp_path / "solved")
    assert sorted(data.example_ids) == solved_ids
    label = {e.id: list(p) for e, p in zip(examples, paths)}
    assert [label[eid] for eid in data.example_ids] == data.labels.tolist()

    every = run_feature_pass(shards, tmp_path / "all", TinyLoader(),
                             dataclasses.replace(cfg, rows="all"), progress=False,
                             in_process=True)
    assert every.row_selection() == {"filter": "all", "used": 10, "skipped_unsolved": 0}
    assert every.digest != info.digest and every.key["rows"] == "all"
    both = load_features(tmp_path / "all")
    assert sorted(both.example_ids) == sorted(e.id for e in examples)
    for eid, labels in zip(both.example_ids, both.labels.tolist()):
        assert labels == label[eid]
        if int(eid[1:]) in unsolved:
            assert labels == [1] * L  # an unsolved row's label is the default path
    # the solved rows' features do not depend on which other rows were featurized
    pos = {eid: i for i, eid in enumerate(both.example_ids)}
    idx = torch.tensor([pos[eid] for eid in data.example_ids])
    torch.testing.assert_close(data.features, both.features[idx], rtol=1e-4, atol=1e-4)
    # another filter is another cache key
    assert find_reusable(tmp_path / "solved", {**info.key, "rows": "all"}) is None


def test_a_filter_leaving_no_rows_fails_with_the_counts(tmp_path, counted):
    shards = tmp_path / "shards"
    _write(shards, _examples(3), unsolved={0, 1, 2})
    with pytest.raises(NoRowsError, match=r"rows='solved' leaves no rows to train on: .* holds "
                                          r"3 rows, 0 solved and 3 unsolved.*features\.rows=all"):
        run_feature_pass(shards, tmp_path / "f", TinyLoader(), FeatureConfig(windows=W),
                         progress=False, in_process=True)
    assert counted["batches"] == 0 and read_info(tmp_path / "f") is None
    info = run_feature_pass(shards, tmp_path / "f", TinyLoader(),
                            FeatureConfig(windows=W, rows="all"), progress=False,
                            in_process=True)
    assert info.row_selection() == {"filter": "all", "used": 3, "skipped_unsolved": 0}
    with pytest.raises(ValueError, match=r"rows must be one of \['solved', 'all'\]"):
        FeatureConfig(rows="unsolved")


@pytest.mark.parametrize("resources, cfg, fits", [
    ({"CPU": 1.0}, FeatureConfig(), False),  # the ray.num_cpus=1 hang
    ({"CPU": 2.0}, FeatureConfig(), True),
    ({"CPU": 4.0}, FeatureConfig(num_actors=2, num_cpus_per_actor=2), False),
    ({"CPU": 5.0}, FeatureConfig(num_actors=2, num_cpus_per_actor=2), True),
    ({"CPU": 1.0, "GPU": 1.0}, FeatureConfig(), True),  # GPU actors hold no CPU
    ({"CPU": 1.0, "GPU": 1.0}, FeatureConfig(use_gpu=False), False),
])
def test_actors_fit(resources, cfg, fits):
    assert features_mod.actors_fit(cfg, resources) is fits


def test_cluster_too_small_for_the_actors_runs_in_process(tmp_path, monkeypatch):
    """One CPU held by the only feature actor would starve Ray Data's reads: no Ray then."""
    import ray

    shards = tmp_path / "shards"
    _write(shards, _examples(5))
    cfg = FeatureConfig(windows=W, dtype="float32")
    ref = run_feature_pass(shards, tmp_path / "ref", TinyLoader(), cfg, progress=False,
                           in_process=True)
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 1.0})
    monkeypatch.setattr(ray.data, "read_parquet", None)  # any Ray Data use would fail
    info = run_feature_pass(shards, tmp_path / "small", TinyLoader(), cfg, progress=False)
    assert info.rows == ref.rows == 5
    a, b = load_features(tmp_path / "ref"), load_features(tmp_path / "small")
    assert list(a.example_ids) == list(b.example_ids)
    assert torch.equal(a.features, b.features)


def test_default_question_pooling_falls_back_to_the_prompt_without_a_chat_template(monkeypatch):
    from types import SimpleNamespace

    from drllm.routers.pooling import PoolingSpec

    assert FeatureConfig().pool == "question"
    base = tiny_tokenizer()
    base.chat_template = None
    monkeypatch.setattr(features_mod, "load_source", lambda model: SimpleNamespace(tokenizer=base))
    assert features_mod.pooling_spec(object(), "question") == PoolingSpec()
    chat = tiny_tokenizer()
    monkeypatch.setattr(features_mod, "load_source", lambda model: SimpleNamespace(tokenizer=chat))
    spec = features_mod.pooling_spec(object(), "question")
    assert spec.mode == "question" and spec.prefix and spec.suffix
