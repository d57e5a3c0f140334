"""The evaluation as one library call: policies x examples on evaluator actors, resumable.

:func:`run_evaluation` starts one pool of :class:`~drllm.evaluation.evaluator.PolicyEvaluator`
workers (Ray actors, one per GPU on a cluster, CPU locally; or in process) and, per dataset,
runs each policy over the same examples: ``default``, every ``routed`` alpha and gate and
``oracle`` first, then the ``static`` baselines, whose ``k`` is matched to the routed policies'
measured cost. Requests of one policy are submitted together and batched by the pool. Rows already
written by an identical policy (same key, see :class:`~drllm.evaluation.policies.Policy`) are
skipped, so rerunning resumes; the summary is computed from every row of the sample.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import pandas as pd
from tqdm.auto import tqdm

from drllm.data import DatasetConfig
from drllm.distributed.config import PoolConfig
from drllm.distributed.evaluator import EvaluatorSpec
from drllm.distributed.pool import EvaluationPool
from drllm.distributed.pool import EvaluationPool
from drllm.evaluation.config import EvaluationConfig
from drllm.evaluation.evaluator import policy_evaluator_spec
from drllm.evaluation.policies import (
    Policy, checkpoint_id, context_of, default_policy, matched_k, oracle_policy, routed_policy,
    static_policy,
)
from drllm.evaluation.results import ResultStore
from drllm.evaluation.summary import policy_summary
from drllm.evaluation.types import measures_of
from drllm.report import related_graders
from drllm.rewards import get_grader
from drllm.routers.checkpoint import RouterCheckpointError, read_config
from drllm.types import EvalResult, Example, RenderFn

logger = logging.getLogger(__name__)

HEADLINE = "accuracy"


@dataclass(frozen=True)
class EvalSet:
    """One dataset's evaluated sample.

    Attributes:
        config: the dataset config (its generation budget and grader are used).
        examples: the examples, in sampling order.
        calibration: prompts of the block-influence measurement (rendered), and how many of
            their examples are also evaluated (should be 0).
    """

    config: DatasetConfig
    examples: tuple[Example, ...]
    calibration: tuple[str, ...] = ()
    calibration_overlap: int = 0
    importance: tuple[float, ...] = field(default=())


def _check_routers(config: EvaluationConfig, num_layers: int) -> None:
    """Cheap check of the checkpoint's L against the loaded model (``d`` is checked on load)."""
    stored = int(read_config(config.routers)["num_layers"])
    if stored != num_layers:
        raise RouterCheckpointError(
            f"routers in {config.routers} are for L={stored} blocks but the evaluated model has "
            f"L={num_layers}; evaluate them with the model they were trained for")


def _row(policy: Policy, key: str, example: Example, result: EvalResult) -> dict[str, Any]:
    ev = result.evaluation
    measures = measures_of(ev)
    path = list(measures.path or ([] if policy.kind == "routed" else result.path))
    grades = {}
    for name in related_graders(example.grader):
        grades[name] = (ev.reward >= 1.0 if name == example.grader
                        else get_grader(name).grade(ev.response, example.gold,
                                                    prompt=example.prompt).reward >= 1.0)
    return {
        "policy_key": key, "policy": policy.name, "kind": policy.kind, "alpha": policy.alpha,
        "gate": policy.gate, "k": policy.k, "dataset": example.dataset,
        "example_id": str(example.id),
        "gold": example.gold, "grader": example.grader, "failed": bool(ev.failed),
        "reason": ev.reason, "reward": float(ev.reward),
        "correct": bool(not ev.failed and ev.reward >= 1.0),
        "grades": json.dumps({k: bool(v) for k, v in grades.items()}),
        "response": ev.response, "path": path, "cost": int(sum(path)),
        "layers_executed": int(ev.layers_executed), "tokens": int(ev.response_tokens),
        "prompt_tokens": int(measures.prompt_tokens), "finish_reason": ev.finish_reason,
        "seconds": float(measures.seconds), "router_seconds": float(measures.router_seconds),
    }


def _done(table: pd.DataFrame, key: str, policy: Policy, by_id: Mapping[str, Example]) -> set[str]:
    """Example ids already answered (not failed) by this policy; fixed paths must still match."""
    rows = table[(table["policy_key"] == key) & ~table["failed"].astype(bool)]
    done = set()
    for r in rows[["example_id", "path"]].itertuples(index=False):
        ex = by_id.get(str(r.example_id))
        if ex is None:
            continue
        want = policy.path_for(ex)
        if want is None or tuple(int(d) for d in r.path) == tuple(want):
            done.add(str(r.example_id))
    return done


@dataclass
class _Run:
    """State shared by the policies of one run."""

    pool: EvaluationPool
    store: ResultStore
    config: EvaluationConfig
    model_id: str
    num_layers: int
    render: RenderFn
    progress: bool
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)
    keys: dict[tuple[str, str], str] = field(default_factory=dict)

    def run_policy(self, policy: Policy, es: EvalSet) -> None:
        key = policy.key(context_of(self.model_id, es.config))
        self.keys[(es.config.name, policy.name)] = key
        by_id = {str(e.id): e for e in es.examples}
        done = _done(self.store.load(), key, policy, by_id) if self.config.resume else set()
        budget = es.config.generation_budget
        requests = {}
        for ex in es.examples:
            if str(ex.id) in done:
                continue
            variants = tuple((self.render(v), v.gold) for v in ex.variants)
            req = policy.request(ex, self.render(ex), variants, budget, self.num_layers,
                                 loglik_norm=es.config.reward == "loglik_norm")
            if req is not None:
                requests[req.example_id] = req
        started = time.perf_counter()
        self.pool.submit(list(requests.values()))
        bar = tqdm(total=len(requests), desc=f"{es.config.name} {policy.name}",
                   disable=not self.progress, leave=False)
        with bar:
            while not self.pool.idle:
                for result in self.pool.wait(1.0):
                    self.store.add(_row(policy, key, by_id[result.example_id], result))
                    bar.update(1)
        self.store.flush()
        self.phases[f"{es.config.name}/{policy.name}"] = {
            "evaluated": len(requests), "skipped_done": len(done),
            "wall_seconds": time.perf_counter() - started}

    def routed_cost(self, es: EvalSet, name: str) -> Optional[float]:
        """Mean blocks per pass of the routed policy ``name`` on ``es`` (``None``: no rows)."""
        key = self.keys.get((es.config.name, name))
        table = self.store.load()
        ids = {str(e.id) for e in es.examples}
        rows = table[(table["policy_key"] == key) & ~table["failed"].astype(bool)
                     & table["example_id"].isin(ids)]
        return float(rows["cost"].mean()) if len(rows) else None


def run_gates(config: EvaluationConfig) -> tuple[float, ...]:
    """The gate policies of a run: ``config.gates`` plus the checkpoint's calibrated gate."""
    if "routed" not in config.policies:
        return ()
    calibrated = (read_config(config.routers).get("calibration") or {}).get("gate")
    extra = () if calibrated is None or float(calibrated) in config.gates else (float(calibrated),)
    return (*config.gates, *extra)


def _matched_policies(cfg: EvaluationConfig) -> list[tuple[str, str, float]]:
    """``(label, routed policy name, alpha or gate)`` of the routed policies statics match."""
    out = [(f"{a:+g}", routed_policy(a, "", "").name, a) for a in cfg.matched_alphas]
    out += [(f"t={g:g}", routed_policy(0.0, "", "", g).name, g) for g in run_gates(cfg)]
    return out


def _static_policies(run: _Run, es: EvalSet) -> tuple[list[Policy], dict[str, Any]]:
    """Static baselines of one dataset: a ``k`` per matched routed policy (alphas and gates,
    deduplicated), plus ``static_k``; ``k = 0`` is the default path, which is not run twice."""
    cfg, L = run.config, run.num_layers
    matching, ks = {}, {k: () for k in cfg.static_k}
    for label, name, value in _matched_policies(cfg):
        cost = run.routed_cost(es, name)
        if cost is None:
            logger.warning("%s answered nothing on %s; no static match", name, es.config.name)
            continue
        k = matched_k(cost, L)
        matching[label] = {"policy": name, "routed_blocks_per_pass": cost, "k": k}
        ks[k] = (*ks.get(k, ()), value)
    if 0 in ks:  # skipping no block is the default path: the default policy already ran it
        logger.info("static k = 0 matches %s: that is the default path, not run again",
                    ", ".join(f"{v:g}" for v in ks[0]) or "static_k")
    policies = [static_policy(kind, k, L, importance=es.importance, seed=cfg.random_seed,
                              matches=ks[k])
                for k in sorted(ks) if k > 0 for kind in cfg.static]
    return policies, matching


def _dataset_summary(run: _Run, es: EvalSet, policies: Sequence[Policy],
                     matching: Mapping[str, Any]) -> dict[str, Any]:
    table = run.store.load()
    ids = [str(e.id) for e in es.examples]
    out: dict[str, Any] = {}
    for p in policies:
        key = run.keys[(es.config.name, p.name)]
        rows = table[(table["policy_key"] == key) & table["example_id"].isin(set(ids))]
        out[p.name] = {**policy_summary(rows, es.config.grader_name, run.num_layers, len(ids)),
                       "policy": p.name, "kind": p.kind, "key": key,
                       "matches_alphas": list(p.matches),
                       "skipped_blocks": [i for i, d in enumerate(p.path or ()) if d == 0]}
    cfg = es.config
    return {"examples": len(ids), "example_ids": ids,
            "ids_note": f"skip={cfg.skip}, num_examples={cfg.num_examples}, seed={cfg.seed}",
            "grader": cfg.grader_name, "split": cfg.split, "skip": cfg.skip,
            "max_new_tokens": cfg.generation_budget[0],
            "calibration": {"prompts": len(es.calibration), "overlap": es.calibration_overlap,
                            "importance": list(es.importance)},
            "static_matching": dict(matching), "policies": out}


def run_evaluation(
    sets: Sequence[EvalSet], config: EvaluationConfig, *, render: RenderFn, model: Any,
    out_dir: str | Path, pool_config: PoolConfig = PoolConfig(),
    evaluator: Optional[EvaluatorSpec] = None, in_process: bool = False, progress: bool = True,
) -> dict[str, Any]:
    """Evaluate every policy of ``config`` on every set; returns the summary (not written).

    Ray must be connected unless ``in_process``. Static ``importance`` policies need each
    set's ``importance`` (see :func:`drllm.evaluation.preflight.preflight`, which also checks
    the routers against the model before any actor starts).

    Raises:
        RouterCheckpointError: the routers do not fit the model (before any request).
        ValueError: the oracle shards were searched with another L (before any request).
    """
    started = time.perf_counter()
    routers_id = checkpoint_id(config.routers) if "routed" in config.policies else ""
    spec = evaluator or policy_evaluator_spec(
        model, config.routers if "routed" in config.policies else None,
        check_model_id=config.check_model_id)
    store = ResultStore(Path(out_dir), config.flush_rows)
    pool = EvaluationPool.create(spec, pool_config, in_process=in_process, enable_metrics=False)
    try:
        info = pool.info
        L = info.num_layers
        if "routed" in config.policies:
            _check_routers(config, L)
        fixed = [default_policy(L)] if "default" in config.policies else []
        if "routed" in config.policies:
            fixed += [routed_policy(a, config.routers, routers_id) for a in config.alphas]
            fixed += [routed_policy(0.0, config.routers, routers_id, g)
                      for g in run_gates(config)]
        if "oracle" in config.policies:
            fixed.append(oracle_policy(config.shards_dir, L))
        run = _Run(pool, store, config, info.model_id, L, render, progress)
        datasets = {}
        for es in sets:
            for policy in fixed:
                run.run_policy(policy, es)
            static, matching = ([], {})
            if "static" in config.policies:
                static, matching = _static_policies(run, es)
                for policy in static:
                    run.run_policy(policy, es)
            datasets[es.config.name] = _dataset_summary(run, es, [*fixed, *static], matching)
    finally:
        store.flush()
        pool.close()
    calibrated_gate = ((read_config(config.routers).get("calibration") or {}).get("gate")
                       if "routed" in config.policies else None)
    return {"model": info.model_id, "num_layers": L, "routers": config.routers,
            "shards_dir": config.shards_dir, "policies": list(config.policies),
            "alphas": list(config.alphas), "gates": list(run_gates(config)),
            "calibrated_gate": calibrated_gate, "datasets": datasets,
            "headline": headline(datasets, calibrated_gate),
            "results_dir": str(Path(out_dir).resolve()),
            "this_run": {"phases": run.phases, "wall_seconds": time.perf_counter() - started}}


def headline(datasets: Mapping[str, Any], gate: Optional[float] = None) -> dict[str, Any]:
    """The accuracy of what routed inference uses, on the first dataset: the checkpoint's
    calibrated ``gate`` policy ``routed(t=gate)`` where it was evaluated, else the first routed
    policy, else the first policy."""
    for name, ds in datasets.items():
        pols = list(ds["policies"].values())
        routed = [p for p in pols if p["kind"] == "routed"]
        calibrated = [p for p in routed
                      if gate is not None and p["policy"] == f"routed(t={gate:g})"]
        chosen = next(iter(calibrated or routed or pols), None)
        if chosen is not None:
            return {"dataset": name, "policy": chosen["policy"], HEADLINE: chosen["accuracy"]}
    return {"dataset": None, "policy": None, HEADLINE: None}
