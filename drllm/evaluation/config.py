"""What the evaluation job compares: its policies and their settings (the ``evaluation/`` group).

Validated at construction, so a bad value fails before Ray starts (the message names the key).
Imports neither torch nor ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from drllm.checks import check_bool, check_int

POLICY_KINDS = ("default", "routed", "oracle", "static")
STATIC_KINDS = ("importance", "random")


def _floats(owner: str, name: str, values: object) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"{owner}.{name} must be a list of numbers, got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(float(v)):
            raise ValueError(f"{owner}.{name} must hold numbers, got {v!r}")
        out.append(float(v))
    return tuple(out)


def _names(owner: str, name: str, values: object, allowed: tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(values, str):
        values = (values,)
    out = tuple(values)  # type: ignore[arg-type]
    bad = [v for v in out if v not in allowed]
    if bad or not out or len(set(out)) != len(out):
        raise ValueError(f"{owner}.{name} must be distinct names from {list(allowed)}, "
                         f"got {list(out)}")
    return out


@dataclass(frozen=True)
class EvaluationConfig:
    """The policies compared on the same examples, and how each is built.

    Attributes:
        policies: which of ``default`` (every block once), ``routed`` (the router checkpoint
            at each ``alphas`` value), ``oracle`` (the MCTS best path of ``shards_dir``, for
            the examples it holds) and ``static`` (matched-cost skips) to run.
        routers: ``routed``: a router checkpoint directory (``python -m drllm.jobs.train``).
        alphas: ``routed``: control knob values in ``[-1, 1]``, one policy each (argmax of
            the knob's probabilities, the paper's sweep).
        gates: ``routed``: gate values ``tau`` in ``[0, 1]``, one policy each (knob 0; ``1``
            is the default path); a checkpoint's calibrated gate is always added.
        calibrate: calibration mode: run ``default`` and every gate on this (calibration)
            slice, choose the gate saving the most blocks per pass with accuracy
            ``>= default - epsilon``, and store it with its evidence in the checkpoint
            (:mod:`drllm.evaluation.calibration`); routed inference then uses it by default.
        epsilon: calibration: the accuracy the chosen gate may lose against the default
            (absolute, 0.01 = 1 pp).
        check_model_id: require the checkpoint's ``base_model_id`` to be the evaluated model
            (``L`` and ``d`` are always checked).
        shards_dir: ``oracle``: a search's shards directory (``drllm.shards`` layout).
        static: ``static``: ``importance`` (skip the ``k`` blocks of lowest block influence
            ``1 - cos(h_in, h_out)``, ShortGPT) and / or ``random`` (``k`` seeded random blocks).
        static_alphas: the routed ``alphas`` whose average cost (blocks per forward pass)
            the static ``k`` is matched to (``None``: every one; one ``k`` each, deduplicated;
            every gate is matched too).
        static_k: extra explicit ``k`` values (also usable without ``routed``).
        calibration_examples: prompts of the block-influence measurement: the first ones of
            the dataset's seeded order (``skip=0``), i.e. a search slice, not the test slice.
        random_seed: seed of the random static policy.
        flush_rows: per-example result rows buffered before a Parquet part is written.
        resume: skip (policy, example) rows already written by an identical policy.
    """

    policies: tuple[str, ...] = ("default",)
    routers: Optional[str] = None
    alphas: tuple[float, ...] = (0.0,)
    gates: tuple[float, ...] = ()
    calibrate: bool = False
    epsilon: float = 0.01
    check_model_id: bool = True
    shards_dir: Optional[str] = None
    static: tuple[str, ...] = STATIC_KINDS
    static_alphas: Optional[tuple[float, ...]] = None
    static_k: tuple[int, ...] = ()
    calibration_examples: int = 32
    random_seed: int = 0
    flush_rows: int = 64
    resume: bool = True

    def __post_init__(self) -> None:
        owner = "EvaluationConfig"
        object.__setattr__(self, "policies", _names(owner, "policies", self.policies,
                                                    POLICY_KINDS))
        object.__setattr__(self, "static", _names(owner, "static", self.static, STATIC_KINDS))
        alphas = _floats(owner, "alphas", self.alphas)
        bad = [a for a in alphas if not -1.0 <= a <= 1.0]
        if bad or len(set(alphas)) != len(alphas):
            raise ValueError(f"{owner}.alphas must be distinct values in [-1, 1], got {alphas}")
        object.__setattr__(self, "alphas", alphas)
        gates = _floats(owner, "gates", self.gates)
        if [g for g in gates if not 0.0 <= g <= 1.0] or len(set(gates)) != len(gates):
            raise ValueError(f"{owner}.gates must be distinct values in [0, 1], got {gates}")
        object.__setattr__(self, "gates", gates)
        epsilon = _floats(owner, "epsilon", [self.epsilon])[0]
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"{owner}.epsilon must be in [0, 1] (0.01 = 1 pp), got {epsilon}")
        object.__setattr__(self, "epsilon", epsilon)
        check_bool(owner, "calibrate", self.calibrate)
        if self.static_alphas is not None:
            chosen = _floats(owner, "static_alphas", self.static_alphas)
            missing = [a for a in chosen if a not in alphas]
            if missing:
                raise ValueError(f"{owner}.static_alphas {missing} are not among the routed "
                                 f"alphas {list(alphas)}")
            object.__setattr__(self, "static_alphas", chosen)
        ks = tuple(self.static_k)
        for k in ks:
            check_int(owner, "static_k", k, 0)
        object.__setattr__(self, "static_k", tuple(sorted(set(ks))))
        check_int(owner, "calibration_examples", self.calibration_examples, 1)
        check_int(owner, "random_seed", self.random_seed)
        check_int(owner, "flush_rows", self.flush_rows, 1)
        check_bool(owner, "check_model_id", self.check_model_id)
        check_bool(owner, "resume", self.resume)
        self._check_requirements(owner)

    def _check_requirements(self, owner: str) -> None:
        if "routed" in self.policies and not self.routers:
            raise ValueError(f"{owner}.routers: policy 'routed' needs a router checkpoint "
                             "directory (evaluation.routers=/abs/path/to/routers)")
        if "oracle" in self.policies and not self.shards_dir:
            raise ValueError(f"{owner}.shards_dir: policy 'oracle' needs a search's shards "
                             "directory (evaluation.shards_dir=/abs/path/to/shards)")
        if self.calibrate and not ({"default", "routed"} <= set(self.policies) and self.gates):
            raise ValueError(f"{owner}.calibrate needs policies default and routed and a list "
                             "of gates, e.g. evaluation.policies=[default,routed] "
                             "evaluation.gates=[0.3,0.5,0.7,0.9,1.0] evaluation.alphas=[]")
        if "static" in self.policies and "routed" not in self.policies and not self.static_k:
            raise ValueError(f"{owner}.static_k: policy 'static' matches the routed policy's "
                             "cost; without 'routed' give explicit evaluation.static_k=[...]")

    @property
    def matched_alphas(self) -> tuple[float, ...]:
        """The routed alphas the static policies are matched to."""
        if "routed" not in self.policies:
            return ()
        return self.alphas if self.static_alphas is None else self.static_alphas
