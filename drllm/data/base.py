"""Dataset adapter base class, the ``DATASETS`` registry, :class:`DatasetConfig` and
:func:`load_examples`.

An adapter turns the rows of one dataset layout into :class:`drllm.types.Example` objects.
:func:`load_examples` drives every adapter the same way:

1. read the rows (hub by default, a local root mirroring the hub layout, or explicit
   ``data_files``; always through :func:`datasets.load_dataset`, see :mod:`drllm.data.sources`);
2. apply the difficulty-level filter (rows outside ``levels`` are *filtered*, not rejected);
3. parse each row; a malformed row (no gold, empty choices, unparseable answer, duplicate id)
   is *skipped and counted* under its reason, never raised;
4. shuffle the surviving rows with ``random.Random(seed)`` and walk them in that order, asking
   the grader to validate each gold answer, until ``num_examples`` are accepted.

So the same config always yields the same examples in the same order, and a larger
``num_examples`` extends a smaller one (the first ``n`` of ``n + k`` are the ``n``).
``skip = s`` drops the first ``s`` accepted examples of that order before taking
``num_examples``, so ``num_examples=200`` and ``skip=200 num_examples=300`` are disjoint by
construction (a search slice and an evaluation slice of one dataset).
Grader-rejected golds are counted among the rows walked (all rows when ``num_examples`` is
``None``).
"""

from __future__ import annotations

import dataclasses

import logging
import random
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from drllm.checks import check_bool, check_choice, check_int
from drllm.data.sharding import parse_shard
from drllm.data.sources import MALFORMED_LINE_MODES, Rows, load_rows
from drllm.registry import Registry
from drllm.types import Example

logger = logging.getLogger(__name__)

PROMPT_STYLES = ("chat", "base")
#: How an answer is rewarded: generated and graded, or (multiple choice) by the log-likelihood of
#: each choice (``loglik``: lm-eval ``acc``; ``loglik_norm``: per character, ``acc_norm``).
REWARD_MODES = ("generate", "loglik", "loglik_norm")
#: The plausibility guard's default (nats per token under the default path): see
#: ``DatasetConfig.min_plausibility``; chosen from measured distributions (README, *The
#: plausibility guard*).
DEFAULT_MIN_PLAUSIBILITY = -1.0
MIN_LEVEL, MAX_LEVEL = 1, 5
REJECT_DUPLICATE_ID = "duplicate id"
REJECT_UNPARSEABLE_LEVEL = "unparseable level"
REJECT_GRADER = "gold rejected by grader"


class RowRejected(Exception):
    """Raised by :meth:`DatasetAdapter.parse` for a row that cannot become an example.

    ``reason`` is a short fixed phrase (``"missing answerKey"``); rows are counted per reason.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def required_text(value: Any, reason: str) -> str:
    """``value`` unchanged if it is a non-blank string; otherwise reject the row with ``reason``."""
    if not isinstance(value, str) or not value.strip():
        raise RowRejected(reason)
    return value


class DatasetAdapter(ABC):
    """One dataset layout. Instances are stateless and registered in :data:`DATASETS`.

    Attributes:
        name: registry name (``arc_easy``); also ``Example.dataset``.
        default_grader: grader used unless ``DatasetConfig.grader`` overrides it.
        hub_repo: Hugging Face dataset repo read when neither ``path`` nor ``data_files`` is set
            (``None``: the adapter needs local files or generates its rows).
        hub_configs: hub config names whose rows are concatenated (``(None,)``: the default one).
            A local ``path`` is searched for sub-directories of the same names.
        has_levels: whether rows carry a difficulty level 1..5 (``levels`` filter allowed).
        columns: columns a row must have (checked once on the loaded table, not per row).
        default_max_new_tokens: generation budget of this dataset's answers (``None``: the
            grader's, :data:`GRADER_MAX_NEW_TOKENS`).
        multiple_choice: rows have lettered choices (``chance_shuffles`` applies).
    """

    name: str = ""
    default_grader: str = ""
    hub_repo: str | None = None
    hub_configs: tuple[str | None, ...] = (None,)
    has_levels: bool = False
    columns: tuple[str, ...] = ()
    default_max_new_tokens: int | None = None
    multiple_choice: bool = False

    def validate(self, config: "DatasetConfig") -> None:
        """Raise ``ValueError`` naming the field if ``config`` does not fit this adapter."""
        if config.levels is not None and not self.has_levels:
            with_levels = [n for n in DATASETS.names() if DATASETS.get(n).has_levels]
            raise ValueError(
                f"DatasetConfig.levels: dataset {self.name!r} has no difficulty levels; "
                f"levels apply to {', '.join(with_levels)}"
            )
        if config.field_map is not None:
            raise ValueError(
                f"DatasetConfig.field_map: only the 'local' dataset takes a field map, "
                f"not {self.name!r}"
            )
        if config.chance_shuffles > 1 and not self.multiple_choice:
            raise ValueError(
                f"DatasetConfig.chance_shuffles: dataset {self.name!r} is not multiple choice; "
                "shuffled choice orders apply to arc_easy / arc_challenge"
            )

    def effective_levels(self, config: "DatasetConfig") -> tuple[int, ...] | None:
        """The level filter in force (``None``: keep every level)."""
        return config.levels

    def rows(self, config: "DatasetConfig") -> Rows:
        """Rows to parse, their count, a human-readable source (hub id or file list) and the
        lines rejected before parsing."""
        return load_rows(config, self.hub_repo, self.hub_configs, self.columns)

    def level(self, row: Mapping[str, Any]) -> int | None:
        """Difficulty level 1..5 of a row, ``None`` if absent or unparseable."""
        return None

    @abstractmethod
    def parse(self, row: Mapping[str, Any], index: int, config: "DatasetConfig") -> Example:
        """Build the example for ``row`` (``index``: its position in the loaded table).

        Raises:
            RowRejected: the row has no usable question or gold answer.
        """


DATASETS: Registry[DatasetAdapter] = Registry("dataset")

#: Tokens an answer may take, by grader: a letter needs a few ("Answer: B. text"); math and
#: GSM8K answers reason first, then give the answer. Used unless the adapter or
#: ``DatasetConfig.max_new_tokens`` says otherwise.
GRADER_MAX_NEW_TOKENS = {
    "mc_letter": 16,
    "mc_letter_lenient": 16,
    "math_boxed": 512,
    "gsm8k_numeric": 512,
    "gsm8k_numeric_consistent": 512,
    "exact": 64,
}
FALLBACK_MAX_NEW_TOKENS = 256


def parse_level(value: Any) -> int | None:
    """A difficulty level 1..5 from ``3``, ``"3"`` or ``"Level 3"``; ``None`` otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.lower().startswith("level"):
            text = text[len("level"):].strip()
        if not text.isdigit() or not text.isascii():
            return None
        value = int(text)
    if isinstance(value, int) and MIN_LEVEL <= value <= MAX_LEVEL:
        return value
    return None


def _as_tuple(value: Any) -> tuple | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        return (value,)
    return tuple(value)


@dataclass(frozen=True)
class DatasetConfig:
    """Which examples to load; validated at construction (errors name the field).

    Attributes:
        name: adapter name in :data:`DATASETS`.
        split: dataset split (``train``, ``test``, ...).
        num_examples: how many examples to return after the seeded shuffle (``None``: all).
        skip: accepted examples of the seeded order to leave out before taking
            ``num_examples`` (0: none). An evaluation slice ``skip=n`` is disjoint from a
            search slice ``num_examples=n`` of the same config.
        seed: seed of the shuffle that picks the examples.
        path: local root mirroring the hub layout (overrides the hub name).
        data_files: explicit data files (parquet / jsonl / json / csv) instead of a root.
        levels: difficulty filter (1..5) for ``math``, ``dart*`` and ``synthetic_arith``.
        prompt_style: ``"chat"`` or ``"base"``: how consumers render the prompt
            (see :func:`drllm.data.prompts.render_prompt`).
        grader: override of the adapter's default grader.
        field_map: ``local`` only: ``{"question": col, "gold": col, "id": col (optional)}``.
        system_prompt: optional system message prepended to every example's chat messages.
        max_new_tokens: generation budget per answer (``None``: the adapter's, else the
            grader's, see :data:`GRADER_MAX_NEW_TOKENS`).
        stop_strings: generation of an answer stops at any of these (``None``: none).
        chance_shuffles: multiple choice only: ``m``, the number of choice orders an answer
            must be right under to count as correct (1: the paper's single order; ``m > 1``
            adds ``m - 1`` deterministic per-example shuffles, so a letter found by luck under
            one order rarely survives the others).
        reward: ``"generate"`` (generate along the path, grade the answer), or for multiple
            choice ``"loglik"`` / ``"loglik_norm"`` (no decoding: the gold choice must have the
            highest log-likelihood along the path, lm-eval's ``acc`` / ``acc_norm``; prompts
            are lm-eval's ``Question: ...\nAnswer:`` and the choices' own texts, so the score
            depends on neither their order nor their letters).
        answer_prefix: text the assistant turn starts with (lm-eval's ``gen_prefix``, e.g.
            ``"The answer is"``); the response is graded with it in front.
        min_plausibility: the plausibility guard: an edited path's accepted answer whose mean
            token log-likelihood under the default path is below this (nats per token) is
            rejected (reward 0, counted); None records the scores without rejecting.
        placebo: a control run: every gold is replaced by a wrong one (another choice, or
            another example's answer; :mod:`drllm.data.placebo`), so whatever the search then
            "improves" was won without answering -- by luck or by a gamed reward.
        malformed_lines: a ``.jsonl`` line that is not a JSON object is ``"reject"``-ed
            (counted under ``malformed jsonl line``, its file and line logged) or an
            ``"error"`` naming its file and line.
        shard: ``"k/N"``: keep only shard ``k`` of ``N`` of the selected examples, by a stable
            hash of the example id (``None``: all); N drivers with ``0/N`` .. ``N-1/N`` search
            disjoint slices whose union is the unsharded sample (:mod:`drllm.data.sharding`).
    """

    name: str = "synthetic_arith"
    split: str = "train"
    num_examples: int | None = 32
    seed: int = 0
    skip: int = 0
    path: str | None = None
    data_files: str | tuple[str, ...] | None = None
    levels: tuple[int, ...] | None = None
    prompt_style: str = "chat"
    grader: str | None = None
    field_map: Mapping[str, str] | None = None
    system_prompt: str | None = None
    max_new_tokens: int | None = None
    stop_strings: tuple[str, ...] | None = None
    chance_shuffles: int = 1
    reward: str = "generate"
    answer_prefix: str | None = None
    min_plausibility: float | None = DEFAULT_MIN_PLAUSIBILITY
    placebo: bool = False
    malformed_lines: str = "reject"
    shard: str | None = None

    def __post_init__(self) -> None:
        if self.name not in DATASETS:
            raise ValueError(
                f"DatasetConfig.name: unknown dataset {self.name!r}; known: "
                f"{', '.join(DATASETS.names())}"
            )
        if not isinstance(self.split, str) or not self.split:
            raise ValueError(
                f"DatasetConfig.split: expected a non-empty string, got {self.split!r}"
            )
        o = "DatasetConfig"
        if self.num_examples is not None:  # None: all
            check_int(o, "num_examples", self.num_examples, 1)
        check_int(o, "seed", self.seed)
        check_int(o, "skip", self.skip, 0)
        self._normalize_sources()
        check_choice(o, "malformed_lines", self.malformed_lines, MALFORMED_LINE_MODES)
        self._normalize_levels()
        check_choice(o, "prompt_style", self.prompt_style, PROMPT_STYLES)
        if self.grader is not None:
            from drllm.rewards import get_grader

            try:
                get_grader(self.grader)
            except KeyError as err:
                raise ValueError(f"DatasetConfig.grader: {err.args[0]}") from None
        if self.field_map is not None:
            field_map = {str(k): str(v) for k, v in self.field_map.items()}
            object.__setattr__(self, "field_map", field_map)
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            raise ValueError(
                f"DatasetConfig.system_prompt: expected a string, got {type(self.system_prompt)}"
            )
        self._normalize_generation()
        if self.shard is not None:
            object.__setattr__(self, "shard", str(parse_shard(self.shard)))
        self._check_reward()
        DATASETS.get(self.name).validate(self)

    def _check_reward(self) -> None:
        from drllm.rewards.plausibility import PlausibilityGuard

        check_bool("DatasetConfig", "placebo", self.placebo)
        check_choice("DatasetConfig", "reward", self.reward, REWARD_MODES)
        if self.answer_prefix is not None and not isinstance(self.answer_prefix, str):
            raise ValueError(f"DatasetConfig.answer_prefix: expected a string or null, got "
                             f"{self.answer_prefix!r}")
        try:
            PlausibilityGuard(self.min_plausibility)
        except ValueError as err:
            raise ValueError(f"DatasetConfig.min_plausibility: {err}") from None
        if self.reward != "generate":
            if not DATASETS.get(self.name).multiple_choice:
                raise ValueError(f"DatasetConfig.reward={self.reward!r}: dataset {self.name!r} "
                                 "is not multiple choice; log-likelihood rewards score choices")
            if self.chance_shuffles != 1:
                raise ValueError(f"DatasetConfig.chance_shuffles={self.chance_shuffles} with "
                                 f"reward={self.reward!r}: choice log-likelihoods do not depend "
                                 "on the choices' order; set chance_shuffles=1")
            if self.answer_prefix:
                raise ValueError("DatasetConfig.answer_prefix applies to generated answers, "
                                 f"not reward={self.reward!r}")

    def _normalize_generation(self) -> None:
        check_int("DatasetConfig", "chance_shuffles", self.chance_shuffles, 1)
        if self.max_new_tokens is not None:
            check_int("DatasetConfig", "max_new_tokens", self.max_new_tokens, 1)
        stops = _as_tuple(self.stop_strings)
        if stops is not None:
            if any(not isinstance(x, str) or not x for x in stops):
                raise ValueError(
                    f"DatasetConfig.stop_strings: expected non-empty strings, got {stops!r}"
                )
            object.__setattr__(self, "stop_strings", stops)

    @property
    def generation_budget(self) -> tuple[int, tuple[str, ...]]:
        """``(max_new_tokens, stop_strings)`` in force for this dataset's answers."""
        tokens = self.max_new_tokens
        if tokens is None:
            tokens = DATASETS.get(self.name).default_max_new_tokens
        if tokens is None:
            tokens = GRADER_MAX_NEW_TOKENS.get(self.grader_name, FALLBACK_MAX_NEW_TOKENS)
        return int(tokens), tuple(self.stop_strings or ())

    def _normalize_sources(self) -> None:
        data_files = _as_tuple(self.data_files)
        if data_files is not None:
            if not data_files or not all(isinstance(f, str) and f for f in data_files):
                raise ValueError(
                    f"DatasetConfig.data_files: expected file paths, got {self.data_files!r}"
                )
            object.__setattr__(self, "data_files", data_files)
        if self.path is not None and data_files is not None:
            raise ValueError("DatasetConfig.path / data_files: set one of them, not both")
        if self.path is not None and (not isinstance(self.path, str) or not self.path):
            raise ValueError(f"DatasetConfig.path: expected a directory path, got {self.path!r}")

    def _normalize_levels(self) -> None:
        levels = _as_tuple(self.levels)
        if levels is None:
            return
        if not levels:
            raise ValueError("DatasetConfig.levels: empty; use None to keep every level")
        bad = [lv for lv in levels if isinstance(lv, bool) or not isinstance(lv, int)
               or not MIN_LEVEL <= lv <= MAX_LEVEL]
        if bad:
            raise ValueError(
                f"DatasetConfig.levels: levels must be integers in {MIN_LEVEL}..{MAX_LEVEL}, "
                f"got {list(levels)}"
            )
        object.__setattr__(self, "levels", tuple(sorted(set(levels))))

    @property
    def grader_name(self) -> str:
        """The grader in force: ``grader`` if set, else the adapter's default."""
        return self.grader or DATASETS.get(self.name).default_grader


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_examples` returned and what it skipped.

    Attributes:
        examples: the sampled examples, in sampling order.
        rejected: reason -> number of rows skipped for it.
        rows_read: rows read from the source (before any filter).
        filtered: rows outside the ``levels`` filter (not errors).
        source: where the rows came from (hub repo / config, or the files read).
    """

    examples: tuple[Example, ...]
    rejected: Mapping[str, int]
    rows_read: int
    filtered: int = 0
    source: str = ""

    @property
    def num_rejected(self) -> int:
        return sum(self.rejected.values())


@dataclass
class _Scan:
    candidates: list[Example] = field(default_factory=list)
    rejected: Counter = field(default_factory=Counter)
    filtered: int = 0


def _scan(adapter: DatasetAdapter, config: DatasetConfig, rows: Iterable[Mapping]) -> _Scan:
    """Filter by level and parse every row; count rejections by reason."""
    levels = adapter.effective_levels(config)
    scan, seen = _Scan(), set()
    for index, row in enumerate(rows):
        if levels is not None:
            level = adapter.level(row)
            if level is None:
                scan.rejected[REJECT_UNPARSEABLE_LEVEL] += 1
                continue
            if level not in levels:
                scan.filtered += 1
                continue
        try:
            example = adapter.parse(row, index, config)
        except RowRejected as rej:
            scan.rejected[rej.reason] += 1
            continue
        if example.id in seen:
            scan.rejected[REJECT_DUPLICATE_ID] += 1
            continue
        if config.answer_prefix:
            example = _with_prefix(example, config.answer_prefix)
        seen.add(example.id)
        scan.candidates.append(example)
    return scan


def _with_prefix(example: Example, prefix: str) -> Example:
    variants = tuple(dataclasses.replace(v, answer_prefix=prefix) for v in example.variants)
    return dataclasses.replace(example, answer_prefix=prefix, variants=variants)


def load_examples(config: DatasetConfig) -> LoadReport:
    """Load, filter, parse and sample the examples ``config`` describes.

    Returns:
        A :class:`LoadReport`; ``examples`` has ``min(num_examples, usable rows)`` entries.
    """
    from drllm.rewards import get_grader

    adapter = DATASETS.get(config.name)
    grader = get_grader(config.grader_name)
    loaded = adapter.rows(config)
    rows_read, source = loaded.count, loaded.source
    scan = _scan(adapter, config, loaded.rows)
    scan.rejected.update(loaded.rejected)
    order = list(range(len(scan.candidates)))
    random.Random(config.seed).shuffle(order)
    examples: list[Example] = []
    skipped = 0
    for i in order:
        if config.num_examples is not None and len(examples) == config.num_examples:
            break
        example = scan.candidates[i]
        try:
            grader.validate_gold(example.gold)
        except ValueError as err:
            scan.rejected[REJECT_GRADER] += 1
            logger.debug("%s: gold of %s rejected: %s", config.name, example.id, err)
            continue
        if skipped < config.skip:
            skipped += 1
            continue
        examples.append(example)
    rejected = dict(sorted(scan.rejected.items()))
    logger.info(
        "%s/%s from %s: %d rows read, %d filtered by level, %d rejected %s, %d skipped, "
        "%d examples", config.name, config.split, source, rows_read, scan.filtered,
        sum(rejected.values()), rejected, skipped, len(examples),
    )
    if config.num_examples is not None and len(examples) < config.num_examples:
        logger.warning(
            "%s/%s: asked for %d examples, only %d usable", config.name, config.split,
            config.num_examples, len(examples),
        )
    if config.placebo:
        from drllm.data.placebo import placebo_examples

        examples = list(placebo_examples(examples, config.seed))
        logger.warning("%s: placebo golds (a control run): every gold is a wrong answer",
                       config.name)
    shard = parse_shard(config.shard)
    if shard is not None:
        selected = len(examples)
        examples = shard.select(examples)
        logger.info("%s: shard %s keeps %d of the %d selected examples", config.name, shard,
                    len(examples), selected)
    return LoadReport(
        examples=tuple(examples), rejected=rejected, rows_read=rows_read,
        filtered=scan.filtered, source=source,
    )
