"""The run summary of a search job: what was searched, skipped, rejected, found, and how fast."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class RunSummary:
    """Totals of one search run (one call of ``run_search_job`` / ``SearchDriver.run``).

    Attributes:
        model_id: the frozen model searched.
        num_layers: L.
        num_workers: evaluator actors (or in-process workers) the pool started with.
        examples_given: examples handed to the run.
        skipped_done: examples skipped because the shard directory already holds them (resume).
        duplicates: examples skipped because their id appeared earlier in the same run.
        rejected: examples that failed validation, by reason (dataset adapter rejections passed
            in, plus unknown grader / invalid gold / prompt rendering failures); never searched.
        searched: examples whose search finished in this run (each handed to the writer once).
        improved: searched examples whose best path's reward beats the default path's.
        solved: searched examples where the default path or some path reached the success
            reward (only those carry a non-default label).
        default_failed: examples whose default path could not be evaluated, ``{id: error}``;
            not written (no supervision without a default outcome), searched again on resume.
        default_correct: searched examples whose default path was already correct.
        evaluations: paths evaluated (generated and graded) in this run.
        memo_hits: MCTS simulations answered from the per-question memo.
        failed_evaluations: requests that failed after their retries (failures, not rewards:
            never told to a tree as a reward).
        retries: request re-sends after evaluator errors.
        requeued: request re-sends after their actor died.
        worker_losses: worker losses (deaths, kills) that lost requests (all requeued).
        workers_gone: actors that died for good (restarts exhausted); the others finished.
        mean_layers_saved_solved: mean of ``L - best_cost`` over the **solved** examples (blocks
            per forward pass; an unsolved example's label is the default path).
        mean_batch_size: mean requests per send to a worker.
        wall_seconds: wall time of the run (pool start excluded).
        evals_per_s: ``evaluations / wall_seconds``.
    """

    model_id: str
    num_layers: int
    num_workers: int
    examples_given: int
    skipped_done: int = 0
    duplicates: int = 0
    rejected: Mapping[str, int] = field(default_factory=dict)
    searched: int = 0
    improved: int = 0
    solved: int = 0
    default_failed: Mapping[str, str] = field(default_factory=dict)
    default_correct: int = 0
    evaluations: int = 0
    memo_hits: int = 0
    failed_evaluations: int = 0
    retries: int = 0
    requeued: int = 0
    worker_losses: int = 0
    workers_gone: int = 0
    mean_layers_saved_solved: float = 0.0
    mean_batch_size: float = 0.0
    wall_seconds: float = 0.0
    evals_per_s: float = 0.0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field (``rejected`` as a plain dict)."""
        out = asdict(self)
        out["rejected"] = dict(self.rejected)
        out["rejected_total"] = self.rejected_total
        return out

    def format(self) -> str:
        """A short human-readable report (a few lines)."""
        rejected = ", ".join(f"{k}: {v}" for k, v in sorted(self.rejected.items())) or "none"
        lines = [
            f"model {self.model_id} (L={self.num_layers}), {self.num_workers} evaluator(s)",
            f"examples: {self.examples_given} given, {self.searched} searched, "
            f"{self.skipped_done} already done, {self.duplicates} duplicate, "
            f"{self.rejected_total} rejected ({rejected})",
            f"solved: {self.solved}/{self.searched}, improved: {self.improved}/{self.searched}, "
            f"default correct: {self.default_correct}/{self.searched}, mean layers saved over "
            f"solved: {self.mean_layers_saved_solved:.2f}",
            f"default path not evaluable (not written, retried on resume): "
            f"{len(self.default_failed)}",
            f"evaluations: {self.evaluations} ({self.evals_per_s:.2f}/s over "
            f"{self.wall_seconds:.1f} s), memo hits: {self.memo_hits}, mean batch "
            f"{self.mean_batch_size:.1f}",
            f"faults: {self.failed_evaluations} failed evaluations, {self.retries} retries, "
            f"{self.requeued} requeued after {self.worker_losses} worker losses, "
            f"{self.workers_gone} evaluator(s) gone",
        ]
        return "\n".join(lines)
