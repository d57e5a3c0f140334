"""The accuracy / cost frontier of an evaluation: does routing beat the default and static skips?

:func:`frontier` reads an evaluation's per-example results and, per dataset, places every
policy at (blocks per forward pass, accuracy with its 95 % Wilson interval): the default path,
the routers at every gate ``tau`` (a curve) and every knob ``alpha`` (a curve), the oracle
(MCTS best paths, where held) and the ShortGPT / random static skips. Each routed policy is
paired with the static policies of matched cost (``k = round(L - blocks per pass)``, as the
evaluation job matched them) and compared with the default:

* ``vs_default``: accuracy difference, and whether the intervals overlap;
* ``vs_static``: per matched static policy, the accuracy difference (positive: routing wins).

Run it as ``python -m drllm.jobs.analyze frontier --results DIR [--out frontier.png]
[--json frontier.json]``; the figure and the JSON hold the same points.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from drllm.evaluation.analysis import _clean, _pyplot, policy_table
from drllm.evaluation.policies import matched_k

logger = logging.getLogger(__name__)

POINT_COLUMNS = ["policy", "kind", "alpha", "gate", "k", "n", "accuracy", "ci_low", "ci_high",
                 "blocks_per_pass", "layers_per_answer"]


def _comparisons(rows: pd.DataFrame, num_layers: int) -> list[dict[str, Any]]:
    """Each routed policy against the default and the static policies of matched cost."""
    default = rows[rows["kind"] == "default"]
    d = default.iloc[0] if len(default) else None
    out = []
    for r in rows[rows["kind"] == "routed"].itertuples():
        k = matched_k(float(r.blocks_per_pass), num_layers)
        static = rows[rows["kind"].str.startswith("static") & (rows["k"] == k)]
        entry: dict[str, Any] = {"policy": r.policy, "blocks_per_pass": r.blocks_per_pass,
                                 "accuracy": r.accuracy, "matched_k": k,
                                 "vs_static": {s.policy: float(r.accuracy - s.accuracy)
                                               for s in static.itertuples()}}
        if d is not None:
            entry["vs_default"] = {
                "accuracy_difference": float(r.accuracy - d["accuracy"]),
                "blocks_saved": float(d["blocks_per_pass"] - r.blocks_per_pass),
                "intervals_overlap": bool(r.ci_low <= d["ci_high"] and d["ci_low"] <= r.ci_high),
            }
        out.append(entry)
    return out


def _draw(ax: Any, rows: pd.DataFrame, dataset: str) -> None:
    styles = {"default": ("*", "black"), "oracle": ("P", "tab:green"),
              "static_importance": ("s", "tab:orange"), "static_random": ("x", "tab:gray")}
    for r in rows.itertuples():
        marker, color = styles.get(r.kind, ("o", "tab:blue" if pd.notna(r.gate)
                                                     else "tab:purple"))
        err = [[max(0.0, r.accuracy - r.ci_low)], [max(0.0, r.ci_high - r.accuracy)]]
        ax.errorbar(r.blocks_per_pass, r.accuracy, yerr=err, fmt=marker, color=color,
                    capsize=3, ms=8 if r.kind == "default" else 5, alpha=0.85)
        ax.annotate(r.policy, (r.blocks_per_pass, r.accuracy), fontsize=6,
                    xytext=(3, 3), textcoords="offset points")
    routed = rows[rows["kind"] == "routed"]
    gates = routed[routed["gate"].notna()].sort_values("blocks_per_pass")
    alphas = routed[routed["gate"].isna()].sort_values("blocks_per_pass")
    ax.plot(gates["blocks_per_pass"], gates["accuracy"], "-", color="tab:blue", lw=1,
            label="routed, gate sweep")
    ax.plot(alphas["blocks_per_pass"], alphas["accuracy"], "--", color="tab:purple", lw=1,
            label="routed, alpha sweep")
    for kind, (marker, color) in styles.items():
        if (rows["kind"] == kind).any():
            ax.plot([], [], marker, color=color, label=kind)
    ax.set(xlabel="blocks per forward pass", ylabel="accuracy (95% Wilson CI)",
           title=f"{dataset}: accuracy / cost frontier")
    ax.legend(fontsize=7)


def frontier(results_dir: str | os.PathLike, out: Optional[str | os.PathLike] = None,
             json_out: Optional[str | os.PathLike] = None) -> dict:
    """Points and comparisons per dataset (see the module docstring); writes the PNG ``out``
    and the JSON ``json_out`` when given."""
    table = policy_table(results_dir)
    result: dict[str, Any] = {"analysis": "frontier", "results": str(results_dir),
                              "datasets": {}}
    groups = list(table.groupby("dataset", sort=False))
    for dataset, rows in groups:
        rows = rows.sort_values("blocks_per_pass")
        lengths = [len(next(iter(f.values()))) for f in rows["per_layer_freq"] if f]
        num_layers = lengths[0] if lengths else 0
        result["datasets"][dataset] = {
            "num_layers": num_layers,
            "points": [{**p, "k": None if pd.isna(p["k"]) else int(p["k"])}
                       for p in rows[POINT_COLUMNS].to_dict("records")],
            "routed": _comparisons(rows, num_layers),
        }
    result = _clean(result)
    if out is not None:
        plt = _pyplot()
        fig, axes = plt.subplots(len(groups), 1, figsize=(8, 5 * len(groups)), squeeze=False)
        for (dataset, rows), ax in zip(groups, axes[:, 0]):
            _draw(ax, rows, str(dataset))
        fig.tight_layout()
        fig.savefig(out, dpi=120)
        plt.close(fig)
        result["figure"] = str(out)
    if json_out is not None:
        Path(json_out).write_text(json.dumps(result, indent=2, default=str) + "\n")
        result["json"] = str(json_out)
    return result
