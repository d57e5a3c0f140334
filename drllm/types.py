"""Frozen dataclasses that cross module and actor boundaries, all in one place.

Nothing here imports torch or ray: the search, the data adapters, the executor, the Ray actors
and the shard writer all exchange these objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Mapping, Optional, TypeVar

from drllm.paths import LayerPath


#: The letter of each choice of a multiple-choice example, in order: ``A`` names the first
#: (``Example.choices``, gold letters).
CHOICE_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class Example:
    """One question to search or evaluate.

    Attributes:
        id: stable id, unique within ``dataset`` (e.g. the hub id, or ``split-rowindex``).
        dataset: adapter name (``arc_easy``, ``gsm8k``, ...).
        split: dataset split the row came from.
        prompt: the user message text (question plus instructions).
        messages: chat messages (``{"role", "content"}`` dicts) for instruct models; the last one
            is the user turn holding ``prompt``.
        gold: the reference answer in the form the grader expects (letter, number, LaTeX).
        grader: name of a grader in :mod:`drllm.rewards`.
        base_prompt: plain-text prompt for base (non-chat) models, as in the paper.
        meta: free-form extra fields (level, subject, ...), JSON-serializable.
        variants: the same question under other orders of its choices (multiple choice with
            ``DatasetConfig.chance_shuffles = m > 1``: ``m - 1`` examples with the same id,
            their own prompt and gold letter, and no variants of their own). An answer counts
            as correct only if it is correct under this order and every variant.
        answer_prefix: text the assistant turn starts with (lm-eval's ``gen_prefix``, e.g.
            ``"The answer is"``): appended to the rendered prompt; the response is graded, and
            stored, with it in front.
        choices: multiple choice scored by log-likelihood (``DatasetConfig.reward="loglik"``):
            the continuation text of each choice, in the order of the gold's letters (``A``
            first); empty for generated answers.
    """

    id: str
    dataset: str
    split: str
    prompt: str
    messages: tuple[Mapping[str, str], ...]
    gold: str
    grader: str
    base_prompt: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)
    variants: tuple["Example", ...] = ()
    answer_prefix: str = ""
    choices: tuple[str, ...] = ()


RenderFn = Callable[[Example], str]
"""Example -> the exact prompt text the model is fed (chat template applied)."""


@dataclass(frozen=True)
class Generation:
    """One row of executor output.

    Attributes:
        text: decoded new tokens (stop string, if any, cut off; special tokens removed).
        token_ids: generated token ids (including a final EOS if one was produced).
        layers_executed: blocks executed summed over every forward pass of this row
            (prefill counts once, plus one per generated token after the first).
        prompt_tokens: number of (unpadded) prompt tokens.
        finish_reason: ``"eos"``, ``"length"`` or ``"stop"``.
    """

    text: str
    token_ids: tuple[int, ...]
    layers_executed: int
    prompt_tokens: int
    finish_reason: str


@dataclass(frozen=True)
class Grade:
    """A grader's verdict on one response.

    Attributes:
        reward: 1.0 correct, 0.0 wrong (graders here are binary).
        reason: short human-readable explanation (``"match"``, ``"no boxed answer"``, ...).
        extracted: the answer the grader pulled out of the response, if any.
        where: where in the response it was read (``"answer marker"``, ``"####"``,
            ``"boxed"``, ``"bare"``, ``"final ="``, ``"last number"``, ``"whole response"``,
            ...), None when nothing was read.
    """

    reward: float
    reason: str = ""
    extracted: str | None = None
    where: str | None = None


X = TypeVar("X")
"""A caller's own fields on a request or an evaluation (``EvalRequest[PolicyOptions]``, as
mctx's ``PolicyOutput[T]``): carried through pools, transports and actors unchanged."""


@dataclass(frozen=True)
class Evaluation(Generic[X]):
    """Outcome of generating along one path for one example and grading it.

    Attributes:
        reward: the grader's reward (1.0 correct, 0.0 wrong). Meaningless when ``failed``.
        response: the generated text.
        layers_executed: block applications summed over every forward pass of the answer.
        reason: the grader's explanation, or the error when ``failed``.
        failed: the evaluation could not be carried out (the evaluator raised after its retries,
            or its worker kept dying). A failed evaluation is **not a reward**: the search
            never backpropagates or memoizes it, and it is counted apart.
        extracted: the answer the grader read (for log-likelihood choices: the chosen letter).
        where: where in the response the grader read it (see :class:`Grade`).
        plausibility: mean token log-likelihood (nats per token) of the response under the
            default path, teacher-forced; computed for responses the grader accepted (None
            otherwise).
        implausible: the grader accepted the response but the plausibility guard rejected it
            (too unlikely under the default model); ``reward`` is then 0.
        margin: log-likelihood choices only: the gold choice's score minus the best other
            choice's (nats; > 0 when correct); near 0 is a near-tie.
        response_tokens: tokens generated (0 for log-likelihood choices).
        finish_reason: why generation stopped (``"eos"``, ``"length"``, ``"stop"``,
            ``"grader"``; ``"loglik"`` for scored choices; ``""`` when unknown).
        extra: the evaluator's own fields of type ``X`` (``None``: none, or a failed
            evaluation that never reached the evaluator).
    """

    reward: float
    response: str = ""
    layers_executed: int = 0
    reason: str = ""
    failed: bool = False
    extracted: str | None = None
    where: str | None = None
    plausibility: float | None = None
    implausible: bool = False
    margin: float | None = None
    response_tokens: int = 0
    finish_reason: str = ""
    extra: Optional[X] = None


@dataclass(frozen=True)
class EvalRequest(Generic[X]):
    """Ask an evaluator to generate along ``path`` for one example and grade the answer.

    ``variants`` holds ``(rendered prompt, gold)`` of the example's other choice orders
    (:attr:`Example.variants`): the evaluator answers each along the same path, and the
    reward is 1 only if every order's answer is correct (chance-robust multiple choice).
    ``answer_prefix`` (:attr:`Example.answer_prefix`, already at the end of ``prompt``) is put
    in front of the response before grading. With ``choices`` the evaluator generates nothing:
    it scores each choice continuation after ``prompt`` along the path, and the reward is 1
    when the gold letter's choice scores highest (:attr:`Example.choices`). ``extra`` holds a
    caller's own fields of type ``X`` (the evaluation job's policy options), which only its
    own evaluator reads.
    """

    example_id: str
    prompt: str
    gold: str
    grader: str
    path: LayerPath
    variants: tuple[tuple[str, str], ...] = ()
    answer_prefix: str = ""
    choices: tuple[str, ...] = ()
    extra: Optional[X] = None


@dataclass(frozen=True)
class EvalResult:
    """An evaluator's answer to an :class:`EvalRequest`."""

    example_id: str
    path: LayerPath
    evaluation: Evaluation


@dataclass(frozen=True)
class TraceEntry:
    """One evaluated path of a search (the full trace keeps the negatives too).

    Attributes:
        path: the evaluated path.
        evaluation: its outcome (failed ones included).
        simulation: index of the simulation that handed the path out (0: the default path).
    """

    path: LayerPath
    evaluation: Evaluation
    simulation: int


@dataclass(frozen=True)
class SearchResult:
    """What one length-aware MCTS search found for one example (see DESIGN.md shard contract).

    Attributes:
        num_layers: L.
        default_path / default_reward / default_response: the unedited path and its outcome.
        best_path / best_reward / best_response: highest reward, then lowest cost, among
            retained paths (the default path if nothing better was found).
        best_cost: ``sum(best_path)`` in blocks per forward pass.
        layers_saved: ``L - best_cost`` (negative if the best path repeats more than it skips).
        improved: ``best_reward > default_reward``.
        good_paths: solved searches: every evaluated correct path (reward ``>= success``)
            whose reward is ``>= default_reward``, best first; unsolved searches: empty.
        good_rewards: their rewards, aligned with ``good_paths``.
        simulations: MCTS simulations run.
        evaluations: distinct paths actually evaluated (memo hits excluded).
        memo_hits: simulations answered from the per-question memo.
        stopped_early: whether the paper's early-stop rule ended the search.
        solved: the default path or some evaluated path reached the success reward. An
            unsolved search's ``best_path`` is the default path and ``good_paths`` is empty.
        failed_evaluations: evaluations that failed (not rewards; never backpropagated).
        evaluated_depths: for every evaluated path, in evaluation order, its number of edits
            away from the default path (0 for the default path itself).
        transposition_hits: expansions that reached a path already in the tree through
            another order of edits (joined to that node instead of evaluated again).
        prior_hits: expansions whose new path reached the success reward (how often the
            expansion order, uniform or from a prior, led straight to a correct path).
        trace: every evaluated path in the order its result arrived, failed ones included.
    """

    num_layers: int
    default_path: LayerPath
    default_reward: float
    default_response: str
    best_path: LayerPath
    best_reward: float
    best_response: str
    best_cost: int
    layers_saved: int
    improved: bool
    good_paths: tuple[LayerPath, ...]
    good_rewards: tuple[float, ...]
    simulations: int
    evaluations: int
    memo_hits: int
    stopped_early: bool
    solved: bool = False
    failed_evaluations: int = 0
    evaluated_depths: tuple[int, ...] = ()
    transposition_hits: int = 0
    prior_hits: int = 0
    trace: tuple[TraceEntry, ...] = ()
