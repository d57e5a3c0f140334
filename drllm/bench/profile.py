"""Where a profiled run's time goes, by stage: cProfile own times attributed along the call graph.

:func:`stage_seconds` assigns each function to a stage by where it is defined (a module path and,
optionally, a function name; first match wins); a function that matches nothing inherits the
stages of its callers, in proportion to the time each caller spent in it. So a stage's seconds
are the own time of its functions plus that of every unassigned helper they call (``dict``
methods, dataclass ``__init__``, pickling ...), with no double counting: the stages add up to
the profiled total. Imports neither torch nor ray.
"""

from __future__ import annotations

import pstats
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

FuncKey = tuple[str, int, str]
"""pstats' key of a function: (file name, first line, function name)."""


@dataclass(frozen=True)
class StageRule:
    """Functions of one stage: defined in a file whose path contains ``path_part`` and, when
    ``names`` is given, named one of them."""

    stage: str
    path_part: str
    names: Optional[frozenset[str]] = None

    def matches(self, key: FuncKey) -> bool:
        filename, _, name = key
        if self.path_part not in filename.replace("\\", "/"):
            return False
        return self.names is None or name in self.names


def rule(stage: str, path_part: str, *names: str) -> StageRule:
    """A :class:`StageRule` (no names: every function of the file)."""
    return StageRule(stage, path_part, frozenset(names) if names else None)


def _assigned(key: FuncKey, rules: Sequence[StageRule]) -> Optional[str]:
    for r in rules:
        if r.matches(key):
            return r.stage
    return None


def stage_seconds(stats: pstats.Stats, rules: Sequence[StageRule],
                  default: str = "other") -> dict[str, float]:
    """Seconds of own time per stage (see the module docstring); ``default`` takes what no
    rule and no assigned caller reaches (the profiler's entry, the event loop ...)."""
    table: Mapping[FuncKey, tuple] = stats.stats  # type: ignore[attr-defined]
    shares: dict[FuncKey, dict[str, float]] = {}

    def share(key: FuncKey, visiting: frozenset[FuncKey]) -> dict[str, float]:
        if key in shares:
            return shares[key]
        stage = _assigned(key, rules)
        if stage is not None:
            out = {stage: 1.0}
        else:
            callers = table[key][4] if key in table else {}
            weights = {c: edge[3] for c, edge in callers.items() if c not in visiting and c in table}
            total = sum(weights.values())
            if not weights or total <= 0:
                out = {default: 1.0}
            else:
                out = {}
                for caller, w in weights.items():
                    for s, frac in share(caller, visiting | {key}).items():
                        out[s] = out.get(s, 0.0) + frac * w / total
        shares[key] = out  # a recursive helper's cycle is cut once, then reused
        return out

    seconds: dict[str, float] = {}
    for key, (_, _, own, _, _) in table.items():
        for s, frac in share(key, frozenset()).items():
            seconds[s] = seconds.get(s, 0.0) + own * frac
    return seconds


def shares_of(seconds: Mapping[str, float]) -> dict[str, float]:
    """Each stage's fraction of the total, rounded to 3 places, largest first."""
    total = sum(seconds.values()) or 1.0
    return {k: round(v / total, 3) for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])}
