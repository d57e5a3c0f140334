"""Teacher-forced scoring of continuations along per-row layer paths, and routing once per context.

The log-likelihood side of evaluation (lm-evaluation-harness ``loglikelihood`` requests, see
:mod:`drllm.inference.lm_eval`), built on the edited-path executor's public
:meth:`~drllm.models.executor.PathExecutor.logits`:

* :func:`fit_window` cuts a ``(context, continuation)`` pair to the model's window the way
  lm-eval's own ``hf`` model does (from the left; the continuation always fits) and names the
  context tokens left inside the window;
* :func:`score_continuations` runs batches of such inputs, each row along its own path, and
  returns the continuation's summed log-probability and whether greedy decoding would have
  produced it;
* :class:`PathCache` asks a path chooser (fixed path or routers) once per distinct token
  sequence, so the choices of a multiple-choice question share one routing prefill.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from drllm.models.executor import PathExecutor
from drllm.paths import LayerPath

logger = logging.getLogger(__name__)

PathChooser = Callable[[Sequence[Sequence[int]]], Sequence[LayerPath]]
"""``token sequences -> one path per sequence`` (a fixed path, or routed prefills)."""


@dataclass(frozen=True)
class Window:
    """One teacher-forced input.

    Attributes:
        input_ids: the tokens fed to the model: ``(context + continuation)[-(M + 1):][:-1]``.
        continuation: the scored tokens; their logits are the last ``len(continuation)``
            positions of the input.
        context_len: how many leading tokens of ``input_ids`` belong to the context (>= 1);
            these are what routers decide from.
    """

    input_ids: tuple[int, ...]
    continuation: tuple[int, ...]
    context_len: int

    @property
    def context(self) -> tuple[int, ...]:
        """The context tokens inside the window (the prompt as generation would see it)."""
        return self.input_ids[: self.context_len]


def fit_window(context: Sequence[int], continuation: Sequence[int], max_length: int) -> Window:
    """The model input for scoring ``continuation`` after ``context`` in ``max_length`` tokens.

    Raises:
        ValueError: empty context or continuation, or a continuation longer than the window.
    """
    if not context or not continuation:
        raise ValueError("a scored request needs a non-empty context and continuation")
    if len(continuation) > max_length:
        raise ValueError(
            f"continuation of {len(continuation)} tokens does not fit the model's window of "
            f"{max_length} tokens"
        )
    whole = (list(context) + list(continuation))[-(max_length + 1):][:-1]
    return Window(tuple(whole), tuple(continuation), len(whole) - len(continuation) + 1)


class PathCache:
    """Memoises a :data:`PathChooser` by token sequence (within one cache's lifetime)."""

    def __init__(self, choose: PathChooser, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._choose = choose
        self._batch_size = batch_size
        self._paths: dict[tuple[int, ...], LayerPath] = {}

    def __call__(self, sequences: Sequence[Sequence[int]]) -> list[LayerPath]:
        """One path per sequence; each distinct sequence is passed to the chooser once."""
        keys = [tuple(int(t) for t in seq) for seq in sequences]
        todo = sorted({k for k in keys if k not in self._paths}, key=len)
        for start in range(0, len(todo), self._batch_size):
            chunk = todo[start : start + self._batch_size]
            chosen = list(self._choose([list(k) for k in chunk]))
            if len(chosen) != len(chunk):
                raise RuntimeError(f"path chooser gave {len(chosen)} paths for {len(chunk)} rows")
            self._paths.update(zip(chunk, chosen))
        return [self._paths[k] for k in keys]


@torch.inference_mode()
def score_continuations(
    executor: PathExecutor,
    windows: Sequence[Window],
    paths: Sequence[LayerPath],
    batch_size: int,
    *,
    progress: bool = True,
) -> list[tuple[float, bool]]:
    """``(sum of continuation log-probs, is greedy)`` of each window along its path.

    Rows are batched longest first (left padded, one forward per batch, each row along its own
    path, micro-batched per block by the executor); log-softmax in float32. Outputs keep the
    input order.
    """
    if len(windows) != len(paths):
        raise ValueError(f"got {len(paths)} paths for {len(windows)} windows")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i].input_ids))
    out: list[tuple[float, bool] | None] = [None] * len(windows)
    bar = tqdm(total=len(windows), desc="drllm loglikelihood", disable=not progress)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        input_ids, mask = executor.left_pad([windows[i].input_ids for i in rows])
        logits = executor.logits(input_ids, mask, [paths[i] for i in rows])
        for pos, i in enumerate(rows):
            out[i] = _continuation_score(logits[pos], windows[i].continuation)
        bar.update(len(rows))
    bar.close()
    return out  # type: ignore[return-value]


def _continuation_score(logits: torch.Tensor, continuation: Sequence[int]) -> tuple[float, bool]:
    """Score from one left-padded row's ``[T, V]`` logits: its last positions predict the
    continuation."""
    n = len(continuation)
    logprobs = F.log_softmax(logits[-n:].float(), dim=-1)
    target = torch.tensor(continuation, dtype=torch.long, device=logprobs.device)
    greedy = bool((logprobs.argmax(dim=-1) == target).all())
    return float(logprobs.gather(1, target[:, None]).sum()), greedy
