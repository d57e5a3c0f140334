"""Layer paths: the per-block decisions skip / execute / repeat, their validation, cost and edits.

A path over a model with ``L`` decoder blocks is a tuple of ``L`` decisions:
``0`` = skip the block, ``1`` = execute it once, ``2`` = repeat it (run twice in succession).
Block order never changes. The **cost** of a path is the number of blocks executed per forward
pass (``sum(path)``, unit: blocks per forward pass).

``LayerPath`` subclasses ``tuple`` so it is hashable, cheap, and usable as a dict key or memo key.
The compact text form writes one letter per block: ``S`` skip, ``E`` execute, ``R`` repeat.

This module imports neither torch nor ray; the search and the executor both build on it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterable, Literal

SKIP, EXECUTE, REPEAT = 0, 1, 2
DECISIONS = (SKIP, EXECUTE, REPEAT)
_LETTERS = {SKIP: "S", EXECUTE: "E", REPEAT: "R"}
_FROM_LETTER = {v: k for k, v in _LETTERS.items()}
_LETTER_TABLE = bytes.maketrans(bytes(_LETTERS), "".join(_LETTERS.values()).encode("ascii"))


class InvalidPathError(ValueError):
    """A path violates its length, value or constraint rules."""


@dataclass(frozen=True)
class PathConstraints:
    """Rules every path handed to the executor or the search must obey.

    Attributes:
        max_consecutive_skips: longest allowed run of skipped blocks (paper: 2).
        max_cost_factor: cost must be ``<= max_cost_factor * L`` (paper: 2, i.e. every block
            repeated is still allowed).
        min_executed: at least this many blocks must run (a path that skips every block is
            meaningless).
    """

    max_consecutive_skips: int = 2
    max_cost_factor: float = 2.0
    min_executed: int = 1

    def __post_init__(self) -> None:
        if self.max_consecutive_skips < 0:
            raise ValueError(f"max_consecutive_skips must be >= 0, got {self.max_consecutive_skips}")
        if not 0 < self.max_cost_factor <= 2:
            raise ValueError(f"max_cost_factor must be in (0, 2], got {self.max_cost_factor}")
        if self.min_executed < 0:
            raise ValueError(f"min_executed must be >= 0, got {self.min_executed}")


DEFAULT_CONSTRAINTS = PathConstraints()


class LayerPath(tuple):
    """An immutable tuple of per-block decisions in ``{0, 1, 2}``.

    Construction checks only the value domain; call :meth:`validate` (or :func:`validate_path`)
    for the length and constraint rules, which depend on the model and the configuration.
    """

    __slots__ = ()

    def __new__(cls, decisions: Iterable[int]) -> "LayerPath":
        values = tuple(int(d) for d in decisions)
        for i, d in enumerate(values):
            if d not in (0, 1, 2):
                raise InvalidPathError(
                    f"block {i}: decision {d!r} is not one of 0 (skip), 1 (execute), 2 (repeat)"
                )
        return super().__new__(cls, values)

    @classmethod
    def default(cls, num_layers: int) -> "LayerPath":
        """The unedited path: every block executed once."""
        if num_layers <= 0:
            raise InvalidPathError(f"num_layers must be positive, got {num_layers}")
        return cls((EXECUTE,) * num_layers)

    @classmethod
    def parse(cls, text: str) -> "LayerPath":
        """Parse the compact form, e.g. ``"EESRE"`` (case-insensitive, whitespace ignored)."""
        cleaned = "".join(text.split()).upper()
        bad = sorted({c for c in cleaned if c not in _FROM_LETTER})
        if bad:
            raise InvalidPathError(
                f"path text {text!r} has letters {bad}; use S (skip), E (execute), R (repeat)"
            )
        if not cleaned:
            raise InvalidPathError("empty path text")
        return cls(_FROM_LETTER[c] for c in cleaned)

    @property
    def num_layers(self) -> int:
        return len(self)

    @property
    def cost(self) -> int:
        """Blocks executed per forward pass: ``sum(path)``."""
        return sum(self)

    @property
    def is_default(self) -> bool:
        return all(d == EXECUTE for d in self)

    @property
    def edits(self) -> int:
        """Minimal number of MCTS edits from the default path (see :func:`edit_count`)."""
        return edit_count(self)

    def to_str(self) -> str:
        return bytes(self).translate(_LETTER_TABLE).decode("ascii")

    def __str__(self) -> str:
        return self.to_str()

    def __repr__(self) -> str:
        return f"LayerPath({self.to_str()!r})"

    def executed_steps(self) -> list[tuple[int, int]]:
        """The (block, pass) pairs run per forward pass, in order; pass is 0 or 1."""
        return [(i, p) for i, d in enumerate(self) for p in range(d)]

    def validate(
        self, num_layers: int | None = None, constraints: PathConstraints = DEFAULT_CONSTRAINTS
    ) -> "LayerPath":
        """Raise :class:`InvalidPathError` with a clear message if the path breaks a rule."""
        validate_path(self, num_layers, constraints)
        return self


def max_skip_run(path: tuple[int, ...]) -> int:
    """Length of the longest run of consecutive skipped blocks."""
    best = run = 0
    for d in path:
        run = run + 1 if d == SKIP else 0
        best = max(best, run)
    return best


def edit_count(path: tuple[int, ...]) -> int:
    """The minimal number of :class:`Action` edits that turn the default path into ``path``.

    An edit skips 1 or 2 consecutive executed blocks or repeats one block, so a maximal run of
    ``r`` skipped blocks takes ``ceil(r / 2)`` skip edits and every repeated block one repeat
    edit: ``edit_count = sum(ceil(r / 2) over skip runs) + number of repeats``. This is also
    reachable whenever ``path`` and the default path are both valid (skips first, then repeats:
    every intermediate path skips a subset of ``path``'s skipped blocks, executes at least as
    many blocks and costs at most ``max(L, cost(path))``), so it is the search depth at which
    ``path`` can first appear. The default path has 0 edits.
    """
    edits = run = 0
    for d in path:
        if d == SKIP:
            run += 1
            continue
        edits += (run + 1) // 2 + (d == REPEAT)
        run = 0
    return edits + (run + 1) // 2


def check_path(
    path: tuple[int, ...],
    num_layers: int | None = None,
    constraints: PathConstraints = DEFAULT_CONSTRAINTS,
) -> str | None:
    """Return why ``path`` is invalid, or ``None`` if it is valid."""
    if num_layers is not None and len(path) != num_layers:
        return f"path has {len(path)} decisions but the model has {num_layers} blocks"
    if not path:
        return "path is empty"
    for i, d in enumerate(path):
        if d not in (0, 1, 2):
            return f"block {i}: decision {d!r} is not one of 0, 1, 2"
    run = max_skip_run(path)
    if run > constraints.max_consecutive_skips:
        return (
            f"path skips {run} consecutive blocks; at most "
            f"{constraints.max_consecutive_skips} allowed"
        )
    cost = sum(path)
    cap = constraints.max_cost_factor * len(path)
    if cost > cap:
        return f"path cost {cost} exceeds the cap {cap:g} ({constraints.max_cost_factor:g} x L)"
    executed = sum(1 for d in path if d != SKIP)
    if executed < constraints.min_executed:
        return f"path executes {executed} blocks; at least {constraints.min_executed} required"
    return None


def validate_path(
    path: tuple[int, ...],
    num_layers: int | None = None,
    constraints: PathConstraints = DEFAULT_CONSTRAINTS,
) -> LayerPath:
    """Return ``path`` as a :class:`LayerPath` or raise :class:`InvalidPathError` saying why."""
    if not isinstance(path, LayerPath):
        path = LayerPath(path)
    reason = check_path(path, num_layers, constraints)
    if reason is not None:
        raise InvalidPathError(f"invalid path {path.to_str()}: {reason}")
    return path


@dataclass(frozen=True, order=True)
class Action:
    """One MCTS edit: skip ``length`` (1 or 2) consecutive executed blocks, or repeat one block.

    Attributes:
        kind: ``"skip"`` or ``"repeat"``.
        start: first block index the edit touches.
        length: number of blocks (1 or 2 for skip, 1 for repeat).
    """

    kind: Literal["skip", "repeat"]
    start: int
    length: int = 1

    def apply(self, path: LayerPath) -> LayerPath:
        """The edited path (no validation; see :func:`legal_actions`)."""
        value = SKIP if self.kind == "skip" else REPEAT
        end = self.start + self.length
        edited = tuple(path[: self.start]) + (value,) * self.length + tuple(path[end:])
        if isinstance(path, LayerPath):  # decisions already checked: only 0 / 2 are new
            return tuple.__new__(LayerPath, edited)
        return LayerPath(edited)

    def __str__(self) -> str:
        return f"{self.kind}[{self.start}:{self.start + self.length}]"


def legal_actions(path: LayerPath, constraints: PathConstraints = DEFAULT_CONSTRAINTS) -> list[Action]:
    """Every edit of ``path`` that yields a valid path, in a deterministic order.

    Skips act only on blocks currently executed once (decision 1); a 2-block skip needs two
    consecutive executed blocks. Repeats act on a block executed once, so a block repeats at
    most once by construction.

    Equivalent to keeping the actions whose ``check_path(action.apply(path))`` passes, in
    O(L) instead of O(L^2): an edit changes the cost and the executed blocks by a known amount,
    and a skip only merges the skip runs beside it (the longest run of the edited path is the
    larger of the path's own longest run and the merged one). Results are cached per
    ``(path, constraints)`` (the trees of a search share most of their shallow paths); the
    list returned is the caller's own.
    """
    return list(_legal_actions(path, constraints))


@functools.lru_cache(maxsize=8192)
def _legal_actions(path: tuple[int, ...], constraints: PathConstraints) -> tuple[Action, ...]:
    n = len(path)
    if n == 0:
        return ()
    cost = sum(path)
    executed = n - path.count(SKIP)
    cap = constraints.max_cost_factor * n
    max_run = constraints.max_consecutive_skips
    longest = max_skip_run(path)
    left = [0] * (n + 1)  # left[i]: skipped blocks just before block i
    for i in range(n):
        left[i + 1] = left[i] + 1 if path[i] == SKIP else 0
    right = [0] * (n + 1)  # right[i]: skipped blocks from block i on
    for i in range(n - 1, -1, -1):
        right[i] = right[i + 1] + 1 if path[i] == SKIP else 0
    repeat_ok = cost + 1 <= cap and executed >= constraints.min_executed and longest <= max_run
    actions: list[Action] = []
    for i in range(n):
        if path[i] != EXECUTE:
            continue
        for length in (1, 2):
            if length == 2 and (i + 1 >= n or path[i + 1] != EXECUTE):
                continue
            if (longest <= max_run and left[i] + length + right[i + length] <= max_run
                    and cost - length <= cap and executed - length >= constraints.min_executed):
                actions.append(_action("skip", i, length))
        if repeat_ok:
            actions.append(_action("repeat", i, 1))
    return tuple(actions)


_ACTIONS: dict[tuple[str, int, int], Action] = {}


def _action(kind: Literal["skip", "repeat"], start: int, length: int) -> Action:
    """The shared (immutable) :class:`Action` of these fields: building a frozen dataclass
    costs more than the rest of :func:`legal_actions`."""
    key = (kind, start, length)
    action = _ACTIONS.get(key)
    if action is None:
        action = _ACTIONS[key] = Action(kind, start, length)
    return action
