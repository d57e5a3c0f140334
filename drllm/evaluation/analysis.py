"""The paper's analyses of routed models, each one JSON-able dict and one figure.

* :func:`policy_table` / :func:`alpha_sweep` -- accuracy vs average layers per policy, the
  routed alpha curve and the action shares vs alpha (from an evaluation's per-example Parquet).
* :func:`decision_frequencies` -- per-layer skip / execute / repeat frequencies of the routed
  policies on the evaluated (test) examples (paper Fig. 11).
* :func:`throughput` -- tokens/s of routed vs default generation at several batch sizes on
  the same prompts (paper Table 7), with the decision consensus of each batch: the mean over
  pairs of rows of the fraction of blocks where their decisions agree (Table 8).

Figures use matplotlib's Agg backend (imported when a figure is drawn).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from drllm.evaluation.evaluator import DecisionRecorder
from drllm.evaluation.results import load_results
from drllm.evaluation.summary import policy_summary
from drllm.report import DECISION_NAMES

logger = logging.getLogger(__name__)


def policy_table(results_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per (dataset, policy) of the results: accuracy, CI, cost, action shares."""
    table = load_results(results_dir)
    if table.empty:
        raise FileNotFoundError(f"no results (part-*.parquet) in {results_dir}")
    out = []
    for (dataset, _key), rows in table.groupby(["dataset", "policy_key"], sort=False):
        lengths = [len(p) for p in rows["path"] if len(p)]
        num_layers = lengths[0] if lengths else 0
        s = policy_summary(rows, str(rows["grader"].iloc[0]), num_layers, len(rows))
        shares = s["action_shares"] or {}
        out.append({"dataset": dataset, "policy": s["policy"], "kind": s["kind"],
                    "alpha": s["alpha"], "gate": s.get("gate"), "k": s["k"], "n": s["examples"],
                    "accuracy": s["accuracy"], "ci_low": s["ci95"][0], "ci_high": s["ci95"][1],
                    "blocks_per_pass": s["blocks_per_pass"],
                    "layers_per_answer": s["layers_per_answer"],
                    **{f"{d}_share": shares.get(d) for d in DECISION_NAMES},
                    "per_layer_freq": s["per_layer_freq"]})
    return pd.DataFrame(out)


def _clean(value: Any) -> Any:
    """NaN (pandas' missing alpha / k) as None, so the result is strict JSON."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def alpha_sweep(results_dir: str | os.PathLike, out: Optional[str | os.PathLike] = None) -> dict:
    """Accuracy vs blocks per forward pass (every policy), the routed curve, shares vs alpha."""
    table = policy_table(results_dir)
    result: dict[str, Any] = {"analysis": "alpha_sweep", "datasets": {}}
    for dataset, rows in table.groupby("dataset", sort=False):
        routed = rows[rows["kind"] == "routed"].sort_values("alpha")
        result["datasets"][dataset] = {
            "policies": rows.drop(columns=["per_layer_freq", "dataset"]).to_dict("records"),
            "routed_curve": [{"alpha": r.alpha, "accuracy": r.accuracy,
                              "blocks_per_pass": r.blocks_per_pass,
                              **{f"{d}_share": getattr(r, f"{d}_share") for d in DECISION_NAMES}}
                             for r in routed.itertuples()],
        }
    if out is not None:
        plt = _pyplot()
        fig, axes = plt.subplots(len(result["datasets"]), 2, figsize=(11, 4 * len(result["datasets"])),
                                 squeeze=False)
        for (dataset, rows), (ax, ax2) in zip(table.groupby("dataset", sort=False), axes):
            for r in rows.itertuples():
                err = [[max(0.0, r.accuracy - r.ci_low)], [max(0.0, r.ci_high - r.accuracy)]]
                ax.errorbar(r.blocks_per_pass, r.accuracy, yerr=err, fmt="o", capsize=3,
                            label=r.policy)
            routed = rows[rows["kind"] == "routed"].sort_values("alpha")
            ax.plot(routed["blocks_per_pass"], routed["accuracy"], "k--", lw=1)
            ax.set(xlabel="blocks per forward pass", ylabel="accuracy (95% Wilson CI)",
                   title=f"{dataset}: accuracy vs layers")
            ax.legend(fontsize=7)
            for d in DECISION_NAMES:
                ax2.plot(routed["alpha"], routed[f"{d}_share"], "o-", label=d)
            ax2.set(xlabel="alpha", ylabel="share of decisions", title=f"{dataset}: actions vs alpha")
            ax2.legend()
        fig.tight_layout()
        fig.savefig(out, dpi=110)
        plt.close(fig)
        result["figure"] = str(out)
    return _clean(result)


def decision_frequencies(results_dir: str | os.PathLike,
                         out: Optional[str | os.PathLike] = None) -> dict:
    """Per-layer decision frequencies (``[3][L]``) of every routed policy, as heatmaps."""
    table = policy_table(results_dir)
    routed = table[table["kind"] == "routed"].sort_values(["dataset", "alpha"])
    if routed.empty:
        raise ValueError(f"no routed policy in {results_dir}; evaluate with policies=[routed]")
    result = {"analysis": "decisions",
              "policies": [{"dataset": r.dataset, "policy": r.policy, "alpha": r.alpha, "n": r.n,
                            "per_layer_freq": r.per_layer_freq} for r in routed.itertuples()]}
    if out is not None:
        plt = _pyplot()
        fig, axes = plt.subplots(len(routed), 1, figsize=(10, 1.6 + 1.3 * len(routed)),
                                 squeeze=False)
        for r, ax in zip(routed.itertuples(), axes[:, 0]):
            grid = np.array([r.per_layer_freq[d] for d in DECISION_NAMES])
            im = ax.imshow(grid, aspect="auto", vmin=0, vmax=1, cmap="viridis")
            ax.set_yticks(range(3), DECISION_NAMES)
            ax.set_title(f"{r.dataset} {r.policy} (n={r.n})", fontsize=9)
        axes[-1, 0].set_xlabel("block")
        fig.colorbar(im, ax=axes[:, 0].tolist(), label="frequency")
        fig.savefig(out, dpi=110)
        plt.close(fig)
        result["figure"] = str(out)
    return _clean(result)


def consensus(paths: Sequence[Sequence[int]]) -> Optional[float]:
    """Mean over pairs of rows of the fraction of blocks with equal decisions (None: < 2 rows)."""
    pairs = list(itertools.combinations(range(len(paths)), 2))
    if not pairs:
        return None
    arr = np.asarray(paths)
    return float(np.mean([(arr[i] == arr[j]).mean() for i, j in pairs]))


def _timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def throughput(routed_model: Any, prompts: Sequence[Sequence[int]], batch_sizes: Sequence[int],
               *, max_new_tokens: int = 16, alpha: float = 0.0,
               out: Optional[str | os.PathLike] = None) -> dict:
    """Routed vs default generation of the same prompts at each batch size.

    Args:
        routed_model: a :class:`~drllm.inference.routed.RoutedModel`.
        prompts: token ids (each batch size runs all of them, in chunks of that size).
    """
    ex, rows = routed_model.executor, []
    for b in batch_sizes:
        chunks = [list(prompts[i:i + b]) for i in range(0, len(prompts), b)]
        default_tokens, default_s, routed_tokens, routed_s, agree = 0, 0.0, 0, 0.0, []
        for chunk in chunks:
            gens, s = _timed(lambda: ex.generate(chunk, None, max_new_tokens=max_new_tokens))
            default_tokens, default_s = default_tokens + sum(len(g.token_ids) for g in gens), default_s + s
            rec = DecisionRecorder(routed_model.block_hook(alpha, token_ids=chunk),
                                   ex.num_layers, ex.device)
            gens, s = _timed(lambda: ex.generate(chunk, None, max_new_tokens=max_new_tokens,
                                                 block_hook=rec))
            routed_tokens, routed_s = routed_tokens + sum(len(g.token_ids) for g in gens), routed_s + s
            c = consensus(rec.paths())
            if c is not None:
                agree.append(c)
        rows.append({"batch_size": b, "default_tokens_per_s": default_tokens / default_s,
                     "routed_tokens_per_s": routed_tokens / routed_s,
                     "speed_ratio": (routed_tokens / routed_s) / (default_tokens / default_s),
                     "consensus": float(np.mean(agree)) if agree else None})
        logger.info("batch %d: %s", b, rows[-1])
    result = {"analysis": "throughput", "prompts": len(prompts), "alpha": alpha,
              "max_new_tokens": max_new_tokens, "rows": rows}
    if out is not None:
        plt = _pyplot()
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
        bs = [r["batch_size"] for r in rows]
        ax.plot(bs, [r["default_tokens_per_s"] for r in rows], "o-", label="default")
        ax.plot(bs, [r["routed_tokens_per_s"] for r in rows], "o-", label=f"routed a={alpha:g}")
        ax.set(xscale="log", xlabel="batch size", ylabel="tokens / s", title="throughput")
        ax.legend()
        ax2.plot(bs, [r["consensus"] for r in rows], "o-")
        ax2.set(xscale="log", xlabel="batch size", ylabel="mean pairwise agreement",
                title="decision consensus", ylim=(0, 1.05))
        fig.tight_layout()
        fig.savefig(out, dpi=110)
        plt.close(fig)
        result["figure"] = str(out)
    return result
