"""Dataset shards: N search drivers on disjoint slices of one dataset sample.

``DatasetConfig.shard = "k/N"`` keeps, of the examples the config selects (after the seeded
shuffle, ``skip`` and ``num_examples``), those whose id hashes to ``k`` modulo ``N``. The
hash is a stable digest of the example id (not Python's salted ``hash``), so every process on
every machine agrees, the ``N`` slices are disjoint, and together they are exactly the
unsharded sample. Each shard's driver writes its own output directory (``shard-k-of-N``, with
its own lock, writer and resume); readers take the union with a glob
(``<run>/shard-*-of-N/shards/shard-*.parquet``).

Imports neither torch nor ray.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Iterable, Optional, TypeVar

from drllm.types import Example

_SPEC_RE = re.compile(r"^\s*(\d+)\s*(?:/|-of-)\s*(\d+)\s*$")

E = TypeVar("E", bound=Example)


@dataclass(frozen=True)
class ShardSpec:
    """Shard ``index`` of ``count`` (``0 <= index < count``)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= k < N and N >= 1")

    @property
    def name(self) -> str:
        """Directory name of this shard's output: ``shard-k-of-N``."""
        return f"shard-{self.index}-of-{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, example_id: str) -> bool:
        """Whether the example with this id belongs to this shard."""
        return shard_of(example_id, self.count) == self.index

    def select(self, examples: Iterable[E]) -> list[E]:
        """The examples of this shard, in their order."""
        return [ex for ex in examples if self.holds(str(ex.id))]


def shard_of(example_id: str, count: int) -> int:
    """The shard (``0 .. count - 1``) of an example id: a stable 64-bit digest modulo count."""
    digest = hashlib.blake2b(str(example_id).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % count


def parse_shard(text: Optional[str]) -> Optional[ShardSpec]:
    """``"k/N"`` (or ``"k-of-N"``) as a :class:`ShardSpec`; ``None`` stays ``None``.

    Raises:
        ValueError: not of that form, or ``k`` outside ``0 .. N - 1``; the message names
            ``DatasetConfig.shard`` and the value.
    """
    if text is None:
        return None
    match = _SPEC_RE.match(str(text))
    if match is None:
        raise ValueError(f"DatasetConfig.shard: expected 'k/N' (shard k of N, 0 <= k < N), "
                         f"got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or index >= count:
        raise ValueError(f"DatasetConfig.shard: {text!r} is not a shard: need 0 <= k < N and "
                         f"N >= 1 (shards 0/{max(count, 1)} .. {max(count, 1) - 1}/"
                         f"{max(count, 1)})")
    return ShardSpec(index, count)


def shard_dir_suffix(text: Optional[str]) -> str:
    """``"/shard-k-of-N"`` for a shard spec, ``""`` for ``None``: the Hydra resolver
    ``drllm_shard`` that puts each shard's run in its own output directory."""
    if text is None:
        return ""
    try:
        return f"/{parse_shard(text).name}"
    except ValueError:  # DatasetConfig names the bad value when the job's config is built
        return "/shard-" + re.sub(r"[^0-9A-Za-z]+", "-", str(text)).strip("-")


def register_resolver() -> None:
    """Register :func:`shard_dir_suffix` as the OmegaConf resolver ``drllm_shard`` (used by
    ``hydra.run.dir`` in ``conf/config.yaml``); idempotent."""
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("drllm_shard", shard_dir_suffix, replace=True)
