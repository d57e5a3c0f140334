"""The science report of a search run: what the supervision says, over which examples.

Computed from the shard rows themselves (so a resumed run reports the whole sample, not only
what this process searched), restricted to one dataset and, optionally, to the configured
sample of example ids. Every figure names the rows it is taken over:

* ``examples`` rows in all; ``solved`` those whose default path or some path reached the
  success reward (the only rows that carry a non-default label);
* accuracy of the default and of the best response under the configured grader (the search's
  reward) **and** re-graded under its strict and lenient counterparts, side by side (with
  chance shuffles the re-grade reads the first choice order only);
* layers saved over the solved rows (mean and histogram, blocks per forward pass);
* edits per label path and label shares / per-layer frequencies of skip, execute, repeat;
* evaluations per example (mean, p50, p95), memo / transposition / prior hits, failed
  evaluations, and the depth histograms of label paths and of every evaluated path.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

REPORT_COLUMNS = [
    "example_id", "dataset", "gold", "grader", "num_layers", "default_reward", "default_response",
    "best_reward", "best_response", "best_path", "layers_saved", "improved", "solved",
    "label_edits", "evaluations", "failed_evaluations", "memo_hits", "transposition_hits",
    "prior_hits", "evaluated_depths", "trace", "prompt",
]
DECISION_NAMES = ("skip", "execute", "repeat")


def related_graders(name: str) -> list[str]:
    """The configured grader, then the others that read the same answers more or less strictly
    (those sharing its lenient counterpart), then the lenient one (each once)."""
    from drllm.rewards import GRADERS, lenient_counterpart

    lenient = lenient_counterpart(name)
    out = [name]
    out += [g for g in GRADERS.names()
            if g != name and lenient_counterpart(g) in {name, lenient} - {None} and g != lenient]
    if lenient:
        out.append(lenient)
    return list(dict.fromkeys(out))


def _histogram(values: Iterable[int]) -> dict[str, int]:
    counts = Counter(int(v) for v in values)
    return {str(k): counts[k] for k in sorted(counts)}


def _regraded(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Accuracy of the default and best responses under each related grader."""
    from drllm.rewards import get_grader

    rows_by: dict[str, list] = {}
    for r in table.itertuples():
        for name in related_graders(r.grader):
            rows_by.setdefault(name, []).append(
                (r.default_response, r.best_response, r.gold, getattr(r, "prompt", None)))
    out: dict[str, dict[str, float]] = {}
    for name in sorted(rows_by):
        grader, rows = get_grader(name), rows_by[name]
        default = np.mean([grader.grade(d, g, prompt=p).reward >= 1.0 for d, _, g, p in rows])
        best = np.mean([grader.grade(b, g, prompt=p).reward >= 1.0 for _, b, g, p in rows])
        out[name] = {"default_accuracy": float(default), "best_accuracy": float(best),
                     "rows": len(rows)}
    return out


def _labels(solved: pd.DataFrame, num_layers: int) -> dict[str, Any]:
    """Label shares and per-layer frequencies over the solved rows' best paths."""
    if solved.empty:
        return {"label_shares": None, "per_layer_label_freq": None}
    paths = np.stack([np.asarray(p, dtype=np.int64) for p in solved["best_path"]])
    assert paths.shape[1] == num_layers, (paths.shape, num_layers)
    shares = {name: float((paths == d).mean()) for d, name in enumerate(DECISION_NAMES)}
    per_layer = {name: [float(x) for x in (paths == d).mean(axis=0)]
                 for d, name in enumerate(DECISION_NAMES)}
    return {"label_shares": shares, "per_layer_label_freq": per_layer}


def science_report(table: pd.DataFrame, success_reward: float = 1.0) -> dict[str, Any]:
    """The report of the shard rows in ``table`` (columns :data:`REPORT_COLUMNS`)."""
    n = int(len(table))
    if n == 0:
        return {"examples": 0}
    num_layers = int(table["num_layers"].iloc[0])
    solved = table[table["solved"].astype(bool)]
    evals = table["evaluations"].to_numpy()
    depths = [int(d) for ds in table["evaluated_depths"] for d in ds]
    report: dict[str, Any] = {
        "examples": n,
        "over": f"{n} searched examples; label figures over the {len(solved)} solved ones",
        "num_layers": num_layers,
        "solved": int(len(solved)),
        "solved_fraction": len(solved) / n,
        "improved": int(table["improved"].sum()),
        "improved_fraction": float(table["improved"].mean()),
        "default_accuracy": float((table["default_reward"] >= success_reward).mean()),
        "search_accuracy": float((table["best_reward"] >= success_reward).mean()),
        "accuracy_by_grader": _regraded(table),
        "layers_saved_solved_mean": float(solved["layers_saved"].mean()) if len(solved) else 0.0,
        "layers_saved_solved_hist": _histogram(solved["layers_saved"]),
        "label_edits_solved_hist": _histogram(solved["label_edits"]),
        "evaluated_depth_hist": _histogram(depths),
        "evaluations_per_example": {
            "mean": float(evals.mean()), "p50": float(np.percentile(evals, 50)),
            "p95": float(np.percentile(evals, 95)), "total": int(evals.sum()),
        },
        "memo_hits": int(table["memo_hits"].sum()),
        "transposition_hits": int(table["transposition_hits"].sum()),
        "prior_hits": int(table["prior_hits"].sum()),
        "failed_evaluations": int(table["failed_evaluations"].sum()),
    }
    report.update(_labels(solved, num_layers))
    if "trace" in table.columns:
        report["trace"] = _trace_figures(table["trace"])
    return report


def _trace_figures(traces: pd.Series) -> dict[str, Any]:
    """What the full traces say about the reward guards (schema 3 shards)."""
    entries = [e for trace in traces for e in (trace if trace is not None else [])]
    defaults = [e for e in entries if e["simulation"] == 0]
    edited = [e for e in entries if e["simulation"] != 0 and not e["failed"]]
    implausible = [e for e in edited if e["implausible"]]
    rows_hit = sum(any(e["implausible"] for e in (t if t is not None else [])) for t in traces)

    def stats(values: list[float]) -> dict[str, float] | None:
        return ({"n": len(values), "min": float(min(values)),
                 "median": float(np.median(values))} if values else None)

    margins = [e["margin"] for e in defaults if e["margin"] is not None]
    return {
        "evaluated_paths": len(entries),
        "implausible_rejections": len(implausible),
        "examples_with_implausible_rejections": int(rows_hit),
        "plausibility_default_accepted": stats(
            [e["plausibility"] for e in defaults if e["plausibility"] is not None]),
        "plausibility_edited_accepted": stats(
            [e["plausibility"] for e in edited
             if e["plausibility"] is not None and not e["implausible"]]),
        "plausibility_rejected": stats([e["plausibility"] for e in implausible]),
        "default_loglik_margin": stats(margins),
        "default_near_ties": int(sum(abs(m) < 0.1 for m in margins)),
        "answer_read_at": dict(Counter(str(e["where"]) for e in defaults)),
    }


def label_changes(new: pd.DataFrame, old: pd.DataFrame, success_reward: float = 1.0,
                  sample: int = 10) -> dict[str, Any]:
    """How the labels of the same questions differ between two searches (``new`` vs ``old``).

    Typically the same questions searched again under another reward (the stated-answer grader
    and plausibility guard against the last-number reading): rows are matched on
    ``(dataset, example_id)``; a label changed when ``best_path`` differs. ``sample`` changed
    rows are listed with both label responses verbatim.
    """
    def keyed(table: pd.DataFrame) -> pd.DataFrame:
        out = table.copy()
        out["_key"] = out["dataset"].astype(str) + "/" + out["example_id"].astype(str)
        return out.set_index("_key")

    a, b = keyed(new), keyed(old)
    shared = a.index.intersection(b.index)
    if not len(shared):
        return {"shared_examples": 0}
    a, b = a.loc[shared], b.loc[shared]
    changed = [k for k in shared if list(a.at[k, "best_path"]) != list(b.at[k, "best_path"])]

    def edited(t: pd.DataFrame) -> int:
        return int(sum(bool(s) and any(int(d) != 1 for d in p)
                       for s, p in zip(t["solved"], t["best_path"])))

    solved_a, solved_b = a["solved"].astype(bool), b["solved"].astype(bool)
    default_a = a["default_reward"] >= success_reward
    default_b = b["default_reward"] >= success_reward
    return {
        "shared_examples": int(len(shared)),
        "labels_changed": len(changed),
        "solved": {"new": int(solved_a.sum()), "old": int(solved_b.sum()),
                   "lost": int((solved_b & ~solved_a).sum()),
                   "gained": int((solved_a & ~solved_b).sum())},
        "default_correct": {"new": int(default_a.sum()), "old": int(default_b.sum()),
                            "changed": int((default_a != default_b).sum())},
        "edited_labels": {"new": edited(a), "old": edited(b)},
        "changed_sample": [
            {"example": k, "gold": str(a.at[k, "gold"]),
             "new": {"solved": bool(a.at[k, "solved"]), "response": a.at[k, "best_response"]},
             "old": {"solved": bool(b.at[k, "solved"]), "response": b.at[k, "best_response"]}}
            for k in changed[:sample]],
    }


def load_report_table(
    shards_dir: Path, dataset: str, example_ids: set[str] | None = None
) -> pd.DataFrame:
    """The shard rows of ``dataset`` (restricted to ``example_ids``) with the report's columns."""
    from drllm.shards import read_shards, shard_files

    if not shard_files(shards_dir):
        return pd.DataFrame(columns=REPORT_COLUMNS)
    table = read_shards(shards_dir, columns=REPORT_COLUMNS).to_pandas()
    table = table[table["dataset"].astype(str) == dataset]
    if example_ids is not None:
        table = table[table["example_id"].isin(example_ids)]
    return table.reset_index(drop=True)


def _pct(value: float) -> str:
    return f"{value:6.1%}"


def format_report(report: Mapping[str, Any]) -> str:
    """The printed table at the end of a run."""
    if not report.get("examples"):
        return "no examples searched"
    ev = report["evaluations_per_example"]
    lines = [
        f"examples              {report['examples']}  ({report['over']})",
        f"solved                {_pct(report['solved_fraction'])}  ({report['solved']})",
        f"improved              {_pct(report['improved_fraction'])}  ({report['improved']})",
        f"default accuracy      {_pct(report['default_accuracy'])}  (search reward)",
        f"accuracy after MCTS   {_pct(report['search_accuracy'])}",
    ]
    for name, acc in report["accuracy_by_grader"].items():
        lines.append(f"  under {name:<26} default {_pct(acc['default_accuracy'])}  "
                     f"best {_pct(acc['best_accuracy'])}")
    shares = report.get("label_shares") or {}
    share_text = "  ".join(f"{k} {v:.1%}" for k, v in shares.items()) or "n/a (nothing solved)"
    lines += [
        f"layers saved (solved) {report['layers_saved_solved_mean']:.2f} blocks / forward pass"
        f"  hist {report['layers_saved_solved_hist']}",
        f"edits per label       {report['label_edits_solved_hist']}",
        f"label shares (solved) {share_text}",
        f"evaluated depths      {report['evaluated_depth_hist']}",
        f"evaluations / example mean {ev['mean']:.1f}  p50 {ev['p50']:.0f}  p95 {ev['p95']:.0f}"
        f"  (total {ev['total']})",
        f"memo / transposition / prior hits  {report['memo_hits']} / "
        f"{report['transposition_hits']} / {report['prior_hits']}",
        f"failed evaluations    {report['failed_evaluations']}",
    ]
    changes = report.get("label_changes")
    if changes and changes.get("shared_examples"):
        lines.append(f"labels vs --against  {changes['labels_changed']} of "
                     f"{changes['shared_examples']} changed; solved {changes['solved']['old']} -> "
                     f"{changes['solved']['new']}; edited labels "
                     f"{changes['edited_labels']['old']} -> {changes['edited_labels']['new']}")
    trace = report.get("trace")
    if trace:
        lines.append(f"implausible (guard)   {trace['implausible_rejections']} accepted edited "
                     f"responses rejected in {trace['examples_with_implausible_rejections']} "
                     "examples")
    return "\n".join(lines)
