"""The evaluation job's library, in process on tiny random models: known answers.

Default rows equal a direct ``PathExecutor.generate``; routed rows follow ``RoutedModel.route``;
oracle rows reproduce a tiny search's stored best paths; static k follows the arithmetic;
Wilson intervals; resume equals one uninterrupted run; routers of another model fail first.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from drllm.data import DatasetConfig, load_examples
from drllm.data.prompts import render_prompt
from drllm.distributed.config import GenerationConfig, PoolConfig
from drllm.distributed.evaluator import EvaluatorSpec
from drllm.distributed.executor_evaluator import ExecutorEvaluator
from drllm.distributed.job import run_search_job
from drllm.evaluation.config import EvaluationConfig
from drllm.evaluation.policies import matched_k, random_blocks, shortgpt_blocks
from drllm.evaluation.results import load_results
from drllm.evaluation.runner import EvalSet, run_evaluation
from drllm.evaluation.summary import wilson_interval
from drllm.inference.routed import RoutedModel
from drllm.models.executor import PathExecutor
from drllm.models.tiny import tiny_tokenizer
from drllm.paths import LayerPath
from drllm.routers.checkpoint import RouterCheckpointError
from drllm.routers.features import permissive_constraints
from drllm.routers.module import Routers
from drllm.search import MCTSConfig
from drllm.shards import ShardWriter, read_shards
from drllm.testing.models import TinyModelLoader

L, D = 4, 64
LOADER = TinyModelLoader("llama", L, D, 0)
POOL = PoolConfig(requests_per_actor=4)
DATA = DatasetConfig(num_examples=6, levels=(1,), max_new_tokens=4)


def render(example):
    return render_prompt(example, tiny_tokenizer(), style="chat")


@pytest.fixture(scope="module")
def examples():
    return load_examples(DATA).examples


@pytest.fixture(scope="module")
def routers_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("routers")
    Routers(L, D, bottleneck=8, windows=4).save_pretrained(out, base_model_id=LOADER().model_id)
    return out


def _run(examples, out, **cfg):
    importance = cfg.pop("importance", (0.3, 0.1, 0.4, 0.2))
    es = EvalSet(DATA, tuple(examples), importance=tuple(importance))
    return run_evaluation([es], EvaluationConfig(**cfg), render=render, model=LOADER,
                          out_dir=out, pool_config=POOL, in_process=True, progress=False)


def test_wilson_interval_known_counts():
    lo, hi = wilson_interval(8, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.4902, 0.9433)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and round(hi, 4) == 0.2775
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_matched_k_arithmetic_and_static_blocks():
    assert matched_k(27.6, 30) == 2          # 30 - 27.6 = 2.4
    assert matched_k(27.5, 30) == 3          # halves round up
    assert matched_k(31.0, 30) == 0          # more repeats than skips: skip nothing
    assert matched_k(0.0, 30) == 29          # never all blocks
    assert shortgpt_blocks([0.3, 0.1, 0.4, 0.1], 2) == [1, 3]
    assert random_blocks(30, 5, 0) == random_blocks(30, 5, 0) != random_blocks(30, 5, 1)
    assert len(set(random_blocks(30, 5, 0))) == 5


def test_default_rows_equal_direct_generation(examples, tmp_path):
    _run(examples, tmp_path, policies=("default",))
    rows = load_results(tmp_path).set_index("example_id")
    loaded = LOADER()
    ex = PathExecutor(loaded.model, loaded.tokenizer)
    gens = ex.generate([render(e) for e in examples], [[1] * L] * len(examples),
                       max_new_tokens=4)
    for e, g in zip(examples, gens):
        row = rows.loc[str(e.id)]
        assert row["response"] == g.text and row["layers_executed"] == g.layers_executed
        assert row["tokens"] == len(g.token_ids) and list(row["path"]) == [1] * L
        assert row["cost"] == L


def test_routed_rows_follow_the_routers_and_static_k_matches(examples, tmp_path, routers_dir):
    summary = _run(examples, tmp_path, policies=("default", "routed", "static"),
                   routers=str(routers_dir), alphas=(-1.0, 0.0), gates=(1.0,))
    table = load_results(tmp_path)
    loaded = LOADER()
    rm = RoutedModel(loaded.model, loaded.tokenizer, Routers.from_pretrained(routers_dir),
                     constraints=permissive_constraints(L))
    routed = table[table["policy"] == "routed(a=+0)"].set_index("example_id")
    expected = rm.route([render(e) for e in examples], alpha=0.0)
    for e, path in zip(examples, expected):
        assert tuple(routed.loc[str(e.id), "path"]) == tuple(path)
    # alpha = -1 skips all it may: at most 2 consecutive skips (the search's rule)
    cheapest = table[table["policy"] == "routed(a=-1)"]
    assert all(tuple(p) == (0, 0, 1, 0) for p in cheapest["path"])
    # gate 1: the default path
    assert all(tuple(p) == (1,) * L for p in table[table["policy"] == "routed(t=1)"]["path"])
    ds = summary["datasets"]["synthetic_arith"]
    cost0 = ds["policies"]["routed(a=+0)"]["blocks_per_pass"]
    k0 = matched_k(cost0, L)
    assert ds["static_matching"]["+0"]["k"] == k0 and ds["static_matching"]["-1"]["k"] == L - 1
    assert ds["static_matching"]["t=1"]["k"] == 0
    assert ds["policies"]["routed(t=1)"]["gate"] == 1.0
    static = ds["policies"][f"shortgpt(k={L - 1})"]  # matched to alpha = -1
    assert static["blocks_per_pass"] == 1
    assert static["skipped_blocks"] == shortgpt_blocks((0.3, 0.1, 0.4, 0.2), L - 1)
    assert "shortgpt(k=0)" not in ds["policies"]  # k = 0 (gate 1) is the default: not rerun
    assert ds["policies"]["default"]["router_share"] == 0.0
    assert ds["example_ids"] == [str(e.id) for e in examples]


def test_oracle_reproduces_a_tiny_search(examples, tmp_path):
    shards = tmp_path / "shards"
    held = examples[:4]
    spec = EvaluatorSpec(ExecutorEvaluator, {"model": LOADER,
                                              "generation": GenerationConfig(max_new_tokens=4)})
    with ShardWriter(shards, writer_id="t", num_layers=L, model_id=LOADER().model_id,
                     config={}) as sink:
        run_search_job(held, render=render, sink=sink, evaluator=spec, in_process=True,
                       mcts_config=MCTSConfig(num_simulations=6), progress=False)
    stored = {r["example_id"]: r for r in read_shards(shards).to_pylist()}
    summary = _run(examples, tmp_path / "eval", policies=("oracle",), shards_dir=str(shards))
    rows = load_results(tmp_path / "eval").set_index("example_id")
    assert set(rows.index) == set(stored)
    for eid, r in stored.items():
        assert rows.loc[eid, "cost"] == r["best_cost"]
        assert list(rows.loc[eid, "path"]) == list(r["best_path"])
        assert rows.loc[eid, "reward"] == r["best_reward"]
    oracle = summary["datasets"]["synthetic_arith"]["policies"]["oracle"]
    assert oracle["examples"] == 4 and oracle["missing"] == len(examples) - 4


def _comparable(frame):
    cols = ["policy", "example_id", "response", "reward", "cost", "layers_executed", "tokens"]
    out = frame[cols].copy()
    out["path"] = frame["path"].map(tuple)
    return out.sort_values(["policy", "example_id"]).reset_index(drop=True)


def test_resume_skips_done_rows_and_matches_one_run(examples, tmp_path, routers_dir):
    cfg = dict(policies=("default", "routed", "static"), routers=str(routers_dir),
               alphas=(0.0,), static=("random",), flush_rows=2)
    first = _run(examples, tmp_path / "once", **cfg)
    shutil.copytree(tmp_path / "once", tmp_path / "twice")
    parts = sorted((tmp_path / "twice").glob("part-*.parquet"))
    lost = parts[1::2]  # an interrupted run: every other part never made it to disk
    lost_rows = sum(pq.read_metadata(p).num_rows for p in lost)
    for p in lost:
        p.unlink()
    second = _run(examples, tmp_path / "twice", **cfg)
    evaluated = sum(p["evaluated"] for p in second["this_run"]["phases"].values())
    skipped = sum(p["skipped_done"] for p in second["this_run"]["phases"].values())
    assert lost_rows > 0 and evaluated == lost_rows
    assert skipped == sum(p["evaluated"] for p in first["this_run"]["phases"].values()) - lost_rows
    assert _comparable(load_results(tmp_path / "once")).equals(
        _comparable(load_results(tmp_path / "twice")))
    third = _run(examples, tmp_path / "twice", **cfg)
    assert all(p["evaluated"] == 0 for p in third["this_run"]["phases"].values())


@pytest.mark.parametrize("shape", [(L + 1, D), (L, D * 2)])
def test_routers_of_another_model_fail_before_work(examples, tmp_path, shape):
    bad = tmp_path / "bad"
    Routers(*shape, bottleneck=8).save_pretrained(bad, base_model_id=LOADER().model_id)
    with pytest.raises(RouterCheckpointError, match=r"blocks \(L\) 5 but the model has blocks \(L\) 4|\(d\) 128 but the model has"):
        _run(examples, tmp_path / "out", policies=("routed",), routers=str(bad))
    assert not list((tmp_path / "out").glob("part-*"))


@pytest.mark.parametrize("kwargs, key", [
    ({"alphas": (1.5,)}, "alphas"),
    ({"policies": ("routed",)}, "routers"),
    ({"policies": ("oracle",)}, "shards_dir"),
    ({"policies": ("static",)}, "static_k"),
    ({"policies": ("default", "bogus")}, "policies"),
    ({"static": ("shortgpt",)}, "static"),
    ({"policies": ("routed",), "routers": "/x", "static_alphas": (0.5,)}, "static_alphas"),
    ({"calibration_examples": 0}, "calibration_examples"),
])
def test_bad_config_values_are_named(kwargs, key):
    with pytest.raises(ValueError, match=key):
        EvaluationConfig(**kwargs)


def test_dataset_skip_gives_disjoint_slices():
    base = DatasetConfig(num_examples=20, levels=(1,))
    first = [e.id for e in load_examples(base).examples]
    rest = [e.id for e in load_examples(dataclasses.replace(base, skip=20, num_examples=30)).examples]
    both = [e.id for e in load_examples(dataclasses.replace(base, num_examples=50)).examples]
    assert not set(first) & set(rest) and first + rest == both
    with pytest.raises(ValueError, match="skip"):
        DatasetConfig(skip=-1)


def _gate_policy(gate, accuracy, blocks, n=100):
    return {"policy": f"routed(t={gate})", "kind": "routed", "alpha": 0.0, "gate": gate,
            "accuracy": accuracy, "ci95": [accuracy - 0.1, accuracy + 0.1], "examples": n,
            "blocks_per_pass": blocks}


def test_choose_gate_saves_the_most_blocks_within_epsilon():
    from drllm.evaluation.calibration import choose_gate

    default = {**_gate_policy(None, 0.50, 30.0), "policy": "default", "kind": "default"}
    policies = {"default": default, **{p["policy"]: p for p in [
        _gate_policy(0.3, 0.40, 25.0), _gate_policy(0.5, 0.495, 27.0),
        _gate_policy(0.7, 0.49, 27.0), _gate_policy(0.9, 0.50, 29.5)]}}
    choice = choose_gate({"policies": policies}, 0.01, 30)
    assert choice["gate"] == 0.7  # 0.3 loses 10 pp; 0.5 and 0.7 tie on cost: the larger gate
    assert choice["chosen"]["blocks_saved"] == 3.0 and len(choice["candidates"]) == 4
    strict = choose_gate({"policies": policies}, 0.0, 30)
    assert strict["gate"] == 0.9
    harmful = {"default": default, "routed(t=0.5)": _gate_policy(0.5, 0.3, 20.0)}
    assert choose_gate({"policies": harmful}, 0.01, 30)["gate"] == 1.0  # the default path


def test_calibration_mode_stores_the_gate_in_the_checkpoint(examples, tmp_path, routers_dir):
    import shutil

    from drllm.evaluation.calibration import calibrate
    from drllm.routers.checkpoint import read_config

    routers_dir = shutil.copytree(routers_dir, tmp_path / "routers")  # written to: a copy
    cfg = dict(policies=("default", "routed"), routers=str(routers_dir), alphas=(),
               gates=(0.0, 1.0), calibrate=True, epsilon=0.01)
    summary = _run(examples, tmp_path / "res", **cfg)
    stored = calibrate(summary, str(routers_dir), 0.01)
    policies = summary["datasets"]["synthetic_arith"]["policies"]
    default_acc = policies["default"]["accuracy"]
    assert policies["routed(t=1)"]["accuracy"] == default_acc  # tau = 1 is the default path
    expected = 0.0 if (policies["routed(t=0)"]["accuracy"] >= default_acc - 0.01 and
                       policies["routed(t=0)"]["blocks_per_pass"] < L) else 1.0
    assert stored["gate"] == expected
    assert read_config(routers_dir)["calibration"]["gate"] == expected
    assert Routers.from_pretrained(routers_dir).meta.gate == expected
    # a later evaluation adds the calibrated gate to its gate policies
    later = _run(examples, tmp_path / "later", policies=("default", "routed"),
                 routers=str(routers_dir), alphas=(), gates=())
    assert later["calibrated_gate"] == expected and later["gates"] == [expected]
    assert f"routed(t={expected:g})" in later["datasets"]["synthetic_arith"]["policies"]
    assert later["headline"]["policy"] == f"routed(t={expected:g})"  # what inference uses
    with pytest.raises(ValueError, match="calibrate needs"):
        EvaluationConfig(policies=("default",), calibrate=True)


def test_headline_is_the_calibrated_gate_else_the_first_routed_else_the_first_policy():
    from drllm.evaluation.runner import headline

    def ds(*names):
        kinds = {"default": "default", "shortgpt(k=1)": "static"}
        return {"d": {"policies": {n: {"policy": n, "kind": kinds.get(n, "routed"),
                                       "accuracy": i / 10} for i, n in enumerate(names)}}}

    both = ds("default", "routed(a=+0)", "routed(t=0.05)")
    assert headline(both, 0.05) == {"dataset": "d", "policy": "routed(t=0.05)", "accuracy": 0.2}
    assert headline(both, None)["policy"] == "routed(a=+0)"
    assert headline(both, 0.5)["policy"] == "routed(a=+0)"  # calibrated gate not evaluated
    assert headline(ds("default", "shortgpt(k=1)"), 0.05)["policy"] == "default"
    assert headline({}) == {"dataset": None, "policy": None, "accuracy": None}


def test_frontier_places_every_policy_and_compares_matched_statics(examples, tmp_path,
                                                                   routers_dir):
    import json

    from drllm.evaluation.frontier import frontier
    from drllm.jobs.analyze import main as analyze

    res = tmp_path / "res"
    _run(examples, res, policies=("default", "routed", "static"), routers=str(routers_dir),
         alphas=(-1.0,), gates=(1.0,))
    out = analyze(["frontier", "--results", str(res), "--out", str(tmp_path / "f.png"),
                   "--json", str(tmp_path / "f.json")])
    assert (tmp_path / "f.png").stat().st_size > 0
    assert json.loads((tmp_path / "f.json").read_text()) == {
        k: v for k, v in out.items() if k != "json"}
    ds = out["datasets"]["synthetic_arith"]
    names = {p["policy"] for p in ds["points"]}
    assert {"default", "routed(a=-1)", "routed(t=1)", "shortgpt(k=3)", "random(k=3)"} <= names
    assert not [n for n in names if n.endswith("(k=0)")]  # k = 0 is the default, not rerun
    by_name = {c["policy"]: c for c in ds["routed"]}
    gate_one = by_name["routed(t=1)"]
    assert gate_one["matched_k"] == 0 and gate_one["vs_default"] == {
        "accuracy_difference": 0.0, "blocks_saved": 0.0, "intervals_overlap": True}
    assert set(by_name["routed(a=-1)"]["vs_static"]) == {"shortgpt(k=3)", "random(k=3)"}
    assert {p["policy"]: p["k"] for p in ds["points"]}["shortgpt(k=3)"] == 3
    assert frontier(res)["datasets"]["synthetic_arith"]["num_layers"] == L


def test_loglik_policies_score_choices_as_the_search_does(tmp_path, routers_dir, shared_data):
    # reward: loglik in the evaluate job: no generation; the default policy's verdict and
    # margin are the search reward's on the default path; a routed policy scores along the
    # path its routers choose from the context (gate 1: the default path).
    from drllm.distributed.likelihood import encode_choices, score_choices
    from drllm.types import EvalRequest

    data = DatasetConfig(name="arc_easy", path=str(shared_data / "ai2_arc"), num_examples=5,
                         reward="loglik", prompt_style="base")
    arc = load_examples(data).examples
    tok = tiny_tokenizer()

    def render_base(example):
        return render_prompt(example, tok, style="base")

    es = EvalSet(data, tuple(arc), importance=(0.3, 0.1, 0.4, 0.2))
    run_evaluation([es], EvaluationConfig(policies=("default", "routed"), routers=str(routers_dir),
                                          alphas=(0.0,), gates=(1.0,)),
                   render=render_base, model=LOADER, out_dir=tmp_path, pool_config=POOL,
                   in_process=True, progress=False)
    table = load_results(tmp_path)
    loaded = LOADER()
    executor = PathExecutor(loaded.model, loaded.tokenizer, permissive_constraints(L))

    def encode(text):
        return executor.encode([text])[0]

    rm = RoutedModel(loaded.model, loaded.tokenizer, Routers.from_pretrained(routers_dir),
                     constraints=permissive_constraints(L))
    contexts = [encode_choices(encode, render_base(e), e.choices)[0] for e in arc]
    routed_paths = rm.route(contexts, alpha=0.0)
    for policy, paths in (("default", [(1,) * L] * len(arc)), ("routed(t=1)", [(1,) * L] * len(arc)),
                          ("routed(a=+0)", routed_paths)):
        rows = table[table["policy"] == policy].set_index("example_id")
        assert len(rows) == len(arc)
        expected = score_choices(executor, [
            EvalRequest(str(e.id), render_base(e), e.gold, e.grader, LayerPath(p),
                        choices=e.choices) for e, p in zip(arc, paths)], encode)
        for e, p, ev in zip(arc, paths, expected):
            row = rows.loc[str(e.id)]
            assert tuple(row["path"]) == tuple(p), policy
            assert (row["reward"], row["response"], row["reason"]) == (
                ev.reward, ev.response, ev.reason), policy
            assert row["finish_reason"] == "loglik" and row["tokens"] == 0
    assert any(tuple(p) != (1,) * L for p in routed_paths)  # the routed case is not trivial
