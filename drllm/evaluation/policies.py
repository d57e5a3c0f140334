"""The policies an evaluation compares, and how each turns an example into a request.

* ``default`` -- every block once.
* ``routed(a=...)`` -- the routers choose each row's path during prefill, control knob ``a``
  (argmax of the knob's probabilities); ``routed(t=...)`` -- the same at gate ``t`` (knob 0).
* ``oracle`` -- the MCTS best path a search stored for the example (an upper bound); an
  example the shards do not hold gets no request and is counted as missing.
* ``shortgpt(k=...)`` -- skip the ``k`` blocks of lowest block influence (ShortGPT).
* ``random(k=...)`` -- skip ``k`` seeded random blocks.

A static ``k`` is matched to a routed policy's average cost (blocks per forward pass, ``c``):
``k = clamp(round(L - c), 0, L - 1)`` (:func:`matched_k`). Each policy has a ``key``: a hash
of what decides its answers (kind, knob, paths, checkpoint, model, generation budget, grader),
so a resumed run reuses exactly the rows of an identical policy (an oracle row also needs its
stored path to be the example's current best path). Imports neither torch nor ray.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from drllm.data import DatasetConfig
from drllm.evaluation.types import PolicyOptions, PolicyRequest
from drllm.paths import LayerPath
from drllm.shards import decode_path, read_shards, shard_files
from drllm.types import Example

ORACLE_COLUMNS = ["dataset", "example_id", "best_path", "best_cost", "best_reward", "num_layers"]


@dataclass(frozen=True)
class Policy:
    """One way of choosing the path of every example.

    Attributes:
        name: display name (``default``, ``routed(a=-0.25)``, ``oracle``, ``shortgpt(k=3)``,
            ``random(k=3)``).
        kind: ``default``, ``routed``, ``oracle``, ``static_importance`` or ``static_random``.
        alpha: routed: the control knob.
        gate: routed: the gate ``tau`` (``None``: the argmax).
        k: static: blocks skipped.
        path: default / static: the path of every example.
        oracle_paths: oracle: ``(dataset, example id) -> best path``.
        matches: static: the routed alphas whose cost this ``k`` matches.
        identity: what decides this policy's answers (hashed into :attr:`key`).
    """

    name: str
    kind: str
    alpha: Optional[float] = None
    gate: Optional[float] = None
    k: Optional[int] = None
    path: Optional[tuple[int, ...]] = None
    oracle_paths: Mapping[tuple[str, str], tuple[int, ...]] = field(default_factory=dict)
    matches: tuple[float, ...] = ()
    identity: Mapping[str, Any] = field(default_factory=dict)

    def path_for(self, example: Example) -> Optional[tuple[int, ...]]:
        """The fixed path of ``example`` (``None``: routed, or an oracle example not held)."""
        if self.kind == "oracle":
            return self.oracle_paths.get((example.dataset, str(example.id)))
        return self.path

    def key(self, context: Mapping[str, Any]) -> str:
        """12 hex digits identifying this policy's answers under ``context`` (model, budget...)."""
        blob = json.dumps({"policy": dict(self.identity), "context": context}, sort_keys=True,
                          default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def request(self, example: Example, prompt: str, variants: tuple[tuple[str, str], ...],
                budget: tuple[int, tuple[str, ...]], num_layers: int,
                loglik_norm: bool = False) -> Optional[PolicyRequest]:
        """The request of ``example`` under this policy, or ``None`` (oracle, not held).

        An example with ``choices`` is scored by choice log-likelihood (per character with
        ``loglik_norm``), not generated."""
        path = self.path_for(example)
        if self.kind != "routed" and path is None:
            return None
        return PolicyRequest(
            example_id=str(example.id), prompt=prompt, gold=example.gold, grader=example.grader,
            path=LayerPath(path if path is not None else (1,) * num_layers), variants=variants,
            answer_prefix=example.answer_prefix, choices=example.choices,
            extra=PolicyOptions(alpha=self.alpha if self.kind == "routed" else None,
                                gate=self.gate if self.kind == "routed" else None,
                                max_new_tokens=budget[0], stop_strings=budget[1],
                                loglik_norm=loglik_norm),
        )


def default_policy(num_layers: int) -> Policy:
    path = (1,) * num_layers
    return Policy("default", "default", path=path, identity={"kind": "default", "path": path})


def routed_policy(alpha: float, routers_dir: str, checkpoint_id: str,
                  gate: Optional[float] = None) -> Policy:
    """``checkpoint_id``: a content hash of the checkpoint (a retrained or recalibrated one is
    another policy). ``gate=None``: knob ``alpha``, argmax, named ``routed(a=...)``; a gate:
    named ``routed(t=...)`` (give ``alpha=0``)."""
    name = f"routed(a={alpha:+g})" if gate is None else f"routed(t={gate:g})"
    if gate is not None and alpha != 0.0:
        name = f"routed(a={alpha:+g},t={gate:g})"
    identity = {"kind": "routed", "alpha": float(alpha), "routers": checkpoint_id}
    if gate is not None:
        identity["gate"] = float(gate)
    return Policy(name, "routed", alpha=float(alpha), gate=None if gate is None else float(gate),
                  identity=identity)


def checkpoint_id(routers_dir: str) -> str:
    """A hash of a router checkpoint's files (weights and config)."""
    digest = hashlib.sha256()
    root = Path(routers_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"router checkpoint directory {routers_dir} does not exist; "
                                "train one with python -m drllm.jobs.train")
    for path in sorted(root.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def matched_k(average_cost: float, num_layers: int) -> int:
    """Blocks a static policy skips to match ``average_cost`` blocks per forward pass.

    ``round(L - average_cost)`` (halves up), clamped to ``[0, L - 1]``: a routed policy that
    repeats more than it skips is matched by skipping nothing.
    """
    if not math.isfinite(average_cost):
        raise ValueError(f"average cost must be finite, got {average_cost}")
    return int(min(num_layers - 1, max(0, math.floor(num_layers - average_cost + 0.5))))


def skip_path(num_layers: int, skipped: Sequence[int]) -> tuple[int, ...]:
    gone = set(skipped)
    return tuple(0 if i in gone else 1 for i in range(num_layers))


def shortgpt_blocks(importance: Sequence[float], k: int) -> list[int]:
    """The ``k`` blocks of lowest influence (ties: the earlier block), sorted."""
    order = sorted(range(len(importance)), key=lambda i: (float(importance[i]), i))
    return sorted(order[:k])


def random_blocks(num_layers: int, k: int, seed: int) -> list[int]:
    """``k`` seeded random blocks (a pure function of ``L``, ``k`` and the seed), sorted."""
    return sorted(random.Random(f"static-random/{seed}/{num_layers}/{k}").sample(
        range(num_layers), k))


def static_policy(kind: str, k: int, num_layers: int, *, importance: Sequence[float] = (),
                  seed: int = 0, matches: tuple[float, ...] = ()) -> Policy:
    """``kind``: ``importance`` (ShortGPT) or ``random``."""
    if not 0 <= k < num_layers:
        raise ValueError(f"a static policy skips 0..{num_layers - 1} blocks, got k={k}")
    if kind == "importance":
        if len(importance) != num_layers:
            raise ValueError(f"block influence has {len(importance)} values for L={num_layers}")
        blocks, name = shortgpt_blocks(importance, k), f"shortgpt(k={k})"
    elif kind == "random":
        blocks, name = random_blocks(num_layers, k, seed), f"random(k={k})"
    else:
        raise ValueError(f"unknown static policy {kind!r}; known: importance, random")
    path = skip_path(num_layers, blocks)
    return Policy(name, f"static_{kind}", k=k, path=path, matches=matches,
                  identity={"kind": f"static_{kind}", "path": path})


def oracle_policy(shards_dir: str, num_layers: int) -> Policy:
    """The best paths stored in a search's shards.

    Raises:
        FileNotFoundError: no complete shard there.
        ValueError: the shards were searched with another number of blocks.
    """
    if not shard_files(shards_dir):
        raise FileNotFoundError(f"evaluation.shards_dir={shards_dir} holds no shard-*.parquet; "
                                "point it at a search run's shards directory")
    table = read_shards(shards_dir, columns=ORACLE_COLUMNS).to_pylist()
    layers = {int(r["num_layers"]) for r in table}
    if layers != {num_layers}:
        raise ValueError(f"shards in {shards_dir} were searched with L={sorted(layers)} but the "
                         f"evaluated model has L={num_layers}")
    paths = {(str(r["dataset"]), str(r["example_id"])): tuple(decode_path(r["best_path"],
                                                                          num_layers))
             for r in table}
    return Policy("oracle", "oracle", oracle_paths=paths,
                  identity={"kind": "oracle", "shards": str(Path(shards_dir).resolve())})


def context_of(model_id: str, dataset: DatasetConfig) -> dict[str, Any]:
    """What, besides the policy, decides an answer: model, prompt, budget and grader."""
    max_new_tokens, stops = dataset.generation_budget
    return {"model": model_id, "dataset": dataset.name, "split": dataset.split,
            "prompt_style": dataset.prompt_style, "system_prompt": dataset.system_prompt,
            "grader": dataset.grader_name, "chance_shuffles": dataset.chance_shuffles,
            "max_new_tokens": max_new_tokens, "stop_strings": list(stops),
            "reward": dataset.reward, "answer_prefix": dataset.answer_prefix,
            "path": dataset.path, "data_files": dataset.data_files, "levels": dataset.levels}
