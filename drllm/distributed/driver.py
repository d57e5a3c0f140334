"""The central MCTS driver: many incremental search trees at once over one evaluation pool.

The driver keeps up to ``max_concurrent_trees`` :class:`~drllm.search.SearchTree` objects (one
per example), asks them for paths while the pool can take more work, sends the (example, path)
requests to the :class:`~drllm.distributed.pool.EvaluationPool` (which streams them to the
evaluator actors, each holding a bounded number), tells each tree its rewards as they arrive
(each request is answered as soon as its generation finishes, and the tree asks again), and
hands every finished search to the record sink (the shard writer) as one
:class:`~drllm.shards.SupervisionRecord` with its wall time.

With ``max_pending_per_tree=1`` each tree runs exactly the sequential search of
:func:`drllm.search.run` with its seed, whatever the streaming order, the number of actors or the
arrival order, so results are reproducible and a resumed run finds the same paths.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import logging
import time
from collections import Counter, OrderedDict, deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping, Optional, Sequence

from drllm import interrupt
from drllm.distributed.config import DriverConfig
from drllm.distributed.pool import EvaluationPool
from drllm.distributed.metrics import SearchMetrics
from drllm.distributed.sinks import ListSink, RecordSink  # noqa: F401 - ListSink re-exported
from drllm.distributed.summary import RunSummary
from drllm.search import MCTSConfig, SearchTree
from drllm.search.prior import Prior
from drllm.shards import SupervisionRecord
from drllm.types import EvalRequest, EvalResult, Example, RenderFn

logger = logging.getLogger(__name__)


PriorFn = Callable[[Example], Optional[Prior]]
"""Example -> the expansion prior of its search tree (``None``: uniform)."""


GC_YOUNG_THRESHOLD = 50_000
"""Allocations between two collections of Python's youngest GC generation while the driver
runs (CPython's default is 700). The trees hold ~10^5 long-lived containers that every older
collection walks again; at the default the cyclic GC took ~30 % of the driver's time with an
instant evaluator, at 50,000 it takes a few percent (``bench driver``: ~14k -> ~18k evals/s)."""


@contextmanager
def young_gc_threshold(threshold: int) -> Iterator[None]:
    """Raise the youngest GC generation's threshold to at least ``threshold`` inside the
    block; the previous thresholds are restored on the way out."""
    before = gc.get_threshold()
    gc.set_threshold(max(threshold, before[0]), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def tree_seed(seed: int, example_id: str) -> int:
    """Seed of one example's tree: a stable hash of the MCTS seed and the example id."""
    digest = hashlib.blake2b(f"{seed}|{example_id}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def tree_config(mcts: MCTSConfig, example_id: str, seed_per_example: bool = True) -> MCTSConfig:
    """The MCTS config of one example's tree (its own seed when ``seed_per_example``)."""
    if not seed_per_example:
        return mcts
    return dataclasses.replace(mcts, seed=tree_seed(mcts.seed, example_id))


@dataclass
class _Active:
    """A search in progress; ``outstanding`` mirrors ``tree.pending`` (the driver is the
    only caller of the tree's ask / tell), as a set, so a result is checked in O(1)."""

    example: Example
    prompt: str
    tree: SearchTree
    started: float
    variants: tuple[tuple[str, str], ...] = ()
    outstanding: set = dataclasses.field(default_factory=set)


@dataclass
class _Totals:
    searched: int = 0
    improved: int = 0
    solved: int = 0
    default_correct: int = 0
    evaluations: int = 0
    memo_hits: int = 0
    layers_saved_solved: int = 0
    stale_results: int = 0
    default_failures: dict = dataclasses.field(default_factory=dict)


def _validation_error(example: Example) -> Optional[str]:
    """Why an example cannot be searched (unknown grader, unusable gold), or None."""
    from drllm.rewards import get_grader

    try:
        grader = get_grader(example.grader)
    except KeyError:
        return "unknown grader"
    try:
        grader.validate_gold(example.gold)
    except ValueError:
        return "invalid gold"
    return None


class SearchDriver:
    """Runs the searches of many examples concurrently over a started pool.

    Args:
        pool: a started :class:`EvaluationPool` (its ``info`` gives L and the model id).
        mcts: search knobs shared by every tree (each tree gets its own seed, see
            :func:`tree_config`).
        config: concurrency and polling.
        sink: receives one :class:`SupervisionRecord` per finished search.
        render: example -> prompt text.
        metrics: optional metrics (examples done / improved, evaluations, memo hits).
        progress: show a tqdm bar (examples done, improved, evaluations/s).
        prior: example -> the expansion prior of its tree (``None``: uniform), see
            :mod:`drllm.search.prior`.
    """

    def __init__(
        self,
        pool: EvaluationPool,
        mcts: MCTSConfig,
        config: DriverConfig,
        *,
        sink: RecordSink,
        render: RenderFn,
        metrics: Optional[SearchMetrics] = None,
        progress: bool = False,
        prior: Optional[PriorFn] = None,
    ) -> None:
        if pool.info is None:
            raise ValueError("the pool must be started (EvaluationPool.start()) before driving it")
        self.pool = pool
        self.mcts = mcts
        self.config = config
        self.sink = sink
        self.render = render
        self.metrics = metrics
        self.progress = progress
        self.prior_for: PriorFn = prior or (lambda example: None)
        self.num_layers = pool.info.num_layers
        self.model_id = pool.info.model_id
        # Fail now, not on the first tree, if the config cannot search this model.
        SearchTree(self.num_layers, mcts)

    # ------------------------------------------------------------------ public

    def run(
        self,
        examples: Iterable[Example],
        *,
        done_keys: Iterable[tuple[str, str]] = (),
        rejected: Mapping[str, int] | None = None,
    ) -> RunSummary:
        """Search every example not already done; returns the run's totals.

        Args:
            examples: the questions. Duplicate ids are searched once.
            done_keys: ``(dataset, example_id)`` already written (resume); skipped.
            rejected: rows the dataset adapter rejected, by reason (counted, never searched).
        """
        start = time.perf_counter()
        examples = list(examples)
        done = set(done_keys)
        self._rejected: Counter = Counter(rejected or {})
        self._totals = _Totals()
        stats = self.pool.stats
        self._faults0 = (stats.failed, stats.retries, stats.requeued, stats.worker_losses,
                         stats.workers_gone)
        todo, skipped, duplicates = self._plan(examples, done)
        self._queue: deque[Example] = deque(todo)
        self._active: dict[str, _Active] = {}
        # Trees that may hand out paths (new, or told a result since they were last asked),
        # and trees that may have finished (asked or told since the last check), in order.
        self._askable: OrderedDict[str, _Active] = OrderedDict()
        self._touched: dict[str, _Active] = {}
        self._bar = self._make_bar(len(todo))
        self._last_redraw = 0.0
        self._start = start
        try:
            self._loop()
        finally:
            if self._bar is not None:
                self._bar.close()
        return self._summary(len(examples), skipped, duplicates, time.perf_counter() - start)

    # ------------------------------------------------------------------ planning

    def _plan(
        self, examples: Sequence[Example], done: set[tuple[str, str]]
    ) -> tuple[list[Example], int, int]:
        todo: list[Example] = []
        seen: set[str] = set()
        skipped = duplicates = 0
        for ex in examples:
            if (ex.dataset, str(ex.id)) in done:
                skipped += 1
            elif ex.id in seen:
                duplicates += 1
                logger.warning("example id %r appears twice; searching it once", ex.id)
            else:
                seen.add(ex.id)
                reason = _validation_error(ex)
                if reason is None:
                    todo.append(ex)
                else:
                    self._rejected[reason] += 1
                    logger.warning("rejecting example %s/%s: %s", ex.dataset, ex.id, reason)
        logger.info("search plan: %d to search, %d already done, %d duplicate, %d rejected",
                    len(todo), skipped, duplicates, sum(self._rejected.values()))
        return todo, skipped, duplicates

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        # SIGTERM (drllm.interrupt) stops the run between polls, never inside a pool call or
        # the writer: every finished search is then in the sink, which the caller closes.
        with interrupt.deferred(), young_gc_threshold(GC_YOUNG_THRESHOLD):
            self._poll_until_done()

    def _poll_until_done(self) -> None:
        while self._queue or self._active:
            interrupt.raise_if_requested()
            self._activate()
            asked = self._ask()
            self._finish_done_trees()
            if self.pool.idle and not asked and self._active:
                self._askable.update(self._active)  # ask every tree once more before failing
                if self._ask():
                    continue
                stuck = [a.example.id for a in self._active.values() if not a.tree.done]
                raise RuntimeError(
                    f"search stalled: trees {stuck[:5]} are not done, have nothing pending and "
                    "hand out no path (a SearchTree bug)"
                )
            if not self._active:
                continue
            results = self.pool.wait(self.config.poll_interval_s)
            self._tell(results)
            self._finish_done_trees()
            self.sink.flush_if_due()
            self._refresh_bar()

    def _activate(self) -> None:
        while self._queue and len(self._active) < self.config.max_concurrent_trees:
            ex = self._queue.popleft()
            try:
                prompt = self.render(ex)
                variants = tuple((self.render(v), v.gold) for v in ex.variants)
            except Exception as err:  # noqa: BLE001 - one bad row never stops the run
                self._rejected["prompt render failed"] += 1
                logger.warning("rejecting example %s/%s: prompt rendering failed: %s: %s",
                               ex.dataset, ex.id, type(err).__name__, err)
                continue
            cfg = tree_config(self.mcts, ex.id, self.config.seed_per_example)
            tree = SearchTree(self.num_layers, cfg, prior=self.prior_for(ex))
            state = _Active(ex, prompt, tree, time.perf_counter(), variants)
            self._active[ex.id] = self._askable[ex.id] = self._touched[ex.id] = state

    def _ask(self) -> int:
        """Ask trees for paths while the pool wants more work; the number of paths sent.

        Only trees that may hand out a path are asked (new ones, and those told a result since
        they were last asked: a tree that gave out nothing waits on its pending results), in
        the order they became askable; the pool's free room is counted down as paths are
        queued, as :attr:`EvaluationPool.wants_more` would say before each tree.
        """
        pool, per_tree = self.pool, self.config.max_pending_per_tree
        room = pool.capacity - pool.queued - pool.in_flight
        sent = 0
        requests: list[EvalRequest] = []
        askable = self._askable
        while room > 0 and askable:  # O(1) per tree asked, however many trees wait
            example_id, state = askable.popitem(last=False)
            tree = state.tree
            want = per_tree - len(state.outstanding)
            if want <= 0 or tree.done:
                continue
            self._touched[example_id] = state
            paths = tree.ask(want)
            if not paths:
                continue
            ex, prompt, variants = state.example, state.prompt, state.variants
            requests.extend(EvalRequest(example_id, prompt, ex.gold, ex.grader, p, variants,
                                        ex.answer_prefix, ex.choices) for p in paths)
            state.outstanding.update(paths)
            room -= len(paths)
            sent += len(paths)
        if sent:
            pool.submit(requests)
            pool.dispatch()
        return sent

    def _tell(self, results: Sequence[EvalResult]) -> None:
        per_dataset: Counter = Counter()
        active, askable, touched = self._active, self._askable, self._touched
        for res in results:
            state = active.get(res.example_id)
            if state is None or res.path not in state.outstanding:
                self._totals.stale_results += 1  # its tree already finished (early stop)
                continue
            state.outstanding.discard(res.path)
            state.tree.tell(res.path, res.evaluation)
            askable[res.example_id] = touched[res.example_id] = state
            per_dataset[state.example.dataset] += 1
        self._totals.evaluations += sum(per_dataset.values())
        if self.metrics is not None:
            for dataset, count in per_dataset.items():
                self.metrics.evaluations(count, dataset)

    def _finish_done_trees(self) -> None:
        touched, self._touched = self._touched, {}
        for example_id, state in touched.items():
            if not state.tree.done or self._active.get(example_id) is not state:
                continue
            del self._active[example_id]
            self._askable.pop(example_id, None)
            if state.outstanding:  # early stop: drop its queued requests
                self.pool.cancel(example_id)
            else:
                self.pool.forget(example_id)
            if state.tree.default_failed:
                self._default_failed(state)
                continue
            result = state.tree.result()
            seconds = time.perf_counter() - state.started
            self.sink.add(SupervisionRecord(
                example=state.example, result=result, model_id=self.model_id,
                rendered_prompt=state.prompt, search_seconds=seconds,
            ))
            t = self._totals
            t.searched += 1
            t.improved += int(result.improved)
            t.solved += int(result.solved)
            t.default_correct += int(result.default_reward >= self.mcts.success_reward)
            t.memo_hits += result.memo_hits
            t.layers_saved_solved += result.layers_saved if result.solved else 0
            if self.metrics is not None:
                self.metrics.example_done(state.example.dataset, improved=result.improved,
                                          memo_hits=result.memo_hits)
            if self._bar is not None:
                self._bar.update(1)
            logger.debug("finished %s: best %s reward %.2f (default %.2f), %d evals, %.1f s",
                         example_id, result.best_path, result.best_reward,
                         result.default_reward, result.evaluations, seconds)

    def _default_failed(self, state: _Active) -> None:
        """The default path could not be evaluated: no supervision row; searched on resume."""
        ex = state.example
        reason = state.tree.default_failure_reason
        self._totals.default_failures[str(ex.id)] = reason
        logger.error("example %s/%s not written: its default path could not be evaluated (%s); "
                     "a rerun searches it again", ex.dataset, ex.id, reason)
        if self._bar is not None:
            self._bar.update(1)

    # ------------------------------------------------------------------ reporting

    def _make_bar(self, total: int):
        if not self.progress:
            return None
        import sys

        from tqdm.auto import tqdm

        # In a log file (Ray Job, CI) a bar redrawn every poll floods it: redraw every 30 s.
        interactive = sys.stderr.isatty()
        return tqdm(total=total, desc="search", unit="ex", dynamic_ncols=True,
                    mininterval=0.1 if interactive else 30.0)

    def _refresh_bar(self) -> None:
        if self._bar is None:
            return
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        self._bar.set_postfix(
            improved=self._totals.improved,
            evals_s=f"{self._totals.evaluations / elapsed:.2f}",
            in_flight=self.pool.in_flight,
            refresh=False,
        )
        # tqdm's own mininterval paces redraws on updates; a forced redraw (for the live
        # evals/s) is paced the same way so a log file gets a line every 30 s, not every poll.
        now = time.monotonic()
        if now - self._last_redraw >= self._bar.mininterval:
            self._last_redraw = now
            self._bar.refresh()

    def _summary(self, given: int, skipped: int, duplicates: int, wall: float) -> RunSummary:
        t, stats = self._totals, self.pool.stats
        failed, retries, requeued, lost, gone = (now - before for now, before in zip(
            (stats.failed, stats.retries, stats.requeued, stats.worker_losses, stats.workers_gone),
            self._faults0))
        return RunSummary(
            model_id=self.model_id,
            num_layers=self.num_layers,
            num_workers=self.pool.transport.num_workers,
            examples_given=given,
            skipped_done=skipped,
            duplicates=duplicates,
            rejected=dict(self._rejected),
            searched=t.searched,
            improved=t.improved,
            solved=t.solved,
            default_failed=dict(t.default_failures),
            default_correct=t.default_correct,
            evaluations=t.evaluations,
            memo_hits=t.memo_hits,
            failed_evaluations=failed,
            retries=retries,
            requeued=requeued,
            worker_losses=lost,
            workers_gone=gone,
            mean_layers_saved_solved=t.layers_saved_solved / t.solved if t.solved else 0.0,
            mean_batch_size=stats.mean_batch_size,
            wall_seconds=wall,
            evals_per_s=t.evaluations / wall if wall > 0 else 0.0,
        )
