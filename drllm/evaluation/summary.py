"""Figures of an evaluation, per dataset and policy, from the per-example results.

Every figure is taken over the policy's answered examples of the evaluated sample (failed
evaluations and oracle examples the shards do not hold are counted, never graded): accuracy
with a 95 % Wilson interval under the configured grader and re-graded under its strict and
lenient counterparts (:func:`drllm.report.related_graders`), average blocks per forward pass,
block applications per answer (prefill + decode), tokens generated, wall time and the routers'
share of it, decision shares and per-layer decision frequencies.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from drllm.evaluation.results import grades_of
from drllm.report import DECISION_NAMES, related_graders

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (``(0, 1)`` when ``n == 0``)."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes}")
    p, z2 = successes / n, z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def _accuracy(flags: Sequence[bool]) -> dict[str, Any]:
    n, hits = len(flags), int(sum(bool(f) for f in flags))
    lo, hi = wilson_interval(hits, n)
    return {"accuracy": hits / n if n else None, "correct": hits, "n": n, "ci95": [lo, hi]}


def decision_stats(paths: Sequence[Sequence[int]], num_layers: int) -> dict[str, Any]:
    """Shares of skip / execute / repeat over all blocks, and per layer (``[3][L]``)."""
    if not len(paths):
        return {"action_shares": None, "per_layer_freq": None}
    arr = np.stack([np.asarray(p, dtype=np.int64) for p in paths])
    assert arr.shape[1] == num_layers, (arr.shape, num_layers)
    return {
        "action_shares": {n: float((arr == d).mean()) for d, n in enumerate(DECISION_NAMES)},
        "per_layer_freq": {n: [float(x) for x in (arr == d).mean(axis=0)]
                           for d, n in enumerate(DECISION_NAMES)},
    }


def policy_summary(rows: pd.DataFrame, grader: str, num_layers: int, expected: int) -> dict:
    """Figures of one policy on one dataset; ``expected``: examples in the evaluated sample."""
    ok = rows[~rows["failed"].astype(bool)]
    per_grader = {}
    graded = [grades_of(r) for r in ok.to_dict("records")]
    for name in related_graders(grader):
        per_grader[name] = _accuracy([g.get(name, False) for g in graded])
    seconds, router = float(ok["seconds"].sum()), float(ok["router_seconds"].sum())
    first = rows.iloc[0] if len(rows) else None
    return {
        "policy": str(first["policy"]) if first is not None else "",
        "kind": str(first["kind"]) if first is not None else "",
        "alpha": None if first is None or pd.isna(first["alpha"]) else float(first["alpha"]),
        "gate": (None if first is None or "gate" not in first or pd.isna(first["gate"])
                 else float(first["gate"])),
        "k": None if first is None or pd.isna(first["k"]) else int(first["k"]),
        "examples": int(len(ok)),
        "failed": int(rows["failed"].astype(bool).sum()),
        "missing": int(expected - len(rows)),
        **_accuracy(list(ok["correct"].astype(bool))),
        "accuracy_by_grader": per_grader,
        "blocks_per_pass": float(ok["cost"].mean()) if len(ok) else None,
        "layers_per_answer": float(ok["layers_executed"].mean()) if len(ok) else None,
        "tokens_per_answer": float(ok["tokens"].mean()) if len(ok) else None,
        "wall_seconds": seconds,
        "seconds_per_example": seconds / len(ok) if len(ok) else None,
        "router_seconds": router,
        "router_share": router / seconds if seconds > 0 else 0.0,
        **decision_stats(list(ok["path"]), num_layers),
    }


def _pct(x: Any) -> str:
    return "   n/a" if x is None else f"{x:6.1%}"


def format_table(summary: Mapping[str, Any]) -> str:
    """The printed table: one line per policy and dataset."""
    lines = []
    for name, ds in summary["datasets"].items():
        grader = ds["grader"]
        lenient = [g for g in related_graders(grader) if g != grader]
        lines.append(f"{name}: {ds['examples']} examples ({ds['ids_note']}), grader {grader}, "
                     f"L = {summary['num_layers']}")
        head = (f"  {'policy':<18} {'n':>4} {'acc':>6} {'95% CI':>15} "
                + "".join(f"{g[:14]:>15}" for g in lenient)
                + f" {'blocks/pass':>11} {'layers/ans':>10} {'tokens':>6} {'wall s':>7}"
                  f" {'router':>6}")
        lines.append(head)
        for p in ds["policies"].values():
            ci = f"[{p['ci95'][0]:5.1%},{p['ci95'][1]:5.1%}]"
            extra = "".join(f"{_pct(p['accuracy_by_grader'][g]['accuracy']):>15}"
                            for g in lenient)
            blocks = "n/a" if p["blocks_per_pass"] is None else f"{p['blocks_per_pass']:.2f}"
            layers = "n/a" if p["layers_per_answer"] is None else f"{p['layers_per_answer']:.1f}"
            tokens = "n/a" if p["tokens_per_answer"] is None else f"{p['tokens_per_answer']:.1f}"
            note = f"  (+{p['missing']} not held)" if p["missing"] else ""
            note += f"  ({p['failed']} failed)" if p["failed"] else ""
            lines.append(f"  {p['policy']:<18} {p['examples']:>4} {_pct(p['accuracy'])} {ci:>15}"
                         f"{extra} {blocks:>11} {layers:>10} {tokens:>6} "
                         f"{p['wall_seconds']:>7.1f} {p['router_share']:>6.1%}{note}")
    return "\n".join(lines)


