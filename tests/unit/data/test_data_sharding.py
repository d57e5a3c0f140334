"""Dataset shards (``dataset.shard=k/N``): parsing, a stable id hash, disjoint slices whose
union is the unsharded sample, the run directory per shard and the shard's actor names."""

from __future__ import annotations

import pytest

from drllm.data import DatasetConfig, load_examples
from drllm.data.sharding import ShardSpec, parse_shard, shard_dir_suffix, shard_of
from drllm.distributed.config import PoolConfig
from drllm.jobs.search import search_affecting, shard_pool


@pytest.mark.parametrize("text, expected", [("0/4", ShardSpec(0, 4)), ("3-of-4", ShardSpec(3, 4)),
                                            (" 1 / 2 ", ShardSpec(1, 2)), ("0/1", ShardSpec(0, 1)),
                                            (None, None)])
def test_parse(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["4/4", "1/0", "-1/2", "a/b", "2", "1/2/3", ""])
def test_bad_shards_name_the_key_and_value(text):
    with pytest.raises(ValueError, match=r"DatasetConfig\.shard: .*" + repr(text)[1:-1]):
        parse_shard(text)
    with pytest.raises(ValueError, match="DatasetConfig.shard"):
        DatasetConfig(shard=text)


def test_the_id_hash_is_stable_across_processes():
    # Pinned values: a different hash would send resumed examples to another shard's driver.
    assert [shard_of(f"q{i}", 4) for i in range(8)] == [2, 3, 2, 1, 2, 1, 3, 2]
    assert shard_of("synthetic_arith-L3-795", 2) == 1


def test_shards_are_disjoint_and_their_union_is_the_unsharded_sample():
    whole = [ex.id for ex in load_examples(DatasetConfig(num_examples=40)).examples]
    parts = [[ex.id for ex in load_examples(DatasetConfig(num_examples=40, shard=f"{k}/3")).examples]
             for k in range(3)]
    assert sum(len(p) for p in parts) == 40 and all(parts)
    assert sorted(i for p in parts for i in p) == sorted(whole)
    for p in parts:  # each keeps the sample's order
        assert p == [i for i in whole if i in set(p)]


def test_config_normalizes_and_the_run_dir_names_the_shard():
    assert DatasetConfig(shard="1-of-2").shard == "1/2"
    assert DatasetConfig().shard is None
    assert shard_dir_suffix(None) == ""
    assert shard_dir_suffix("1/2") == "/shard-1-of-2"
    assert shard_dir_suffix("4/4") == "/shard-4-4"  # the job's config check names the error


def test_shard_is_not_search_affecting_and_names_the_actors():
    resolved = {"dataset": {"name": "gsm8k", "num_examples": 10, "shard": "0/2"},
                "search": {"num_simulations": 50}}
    other = {"dataset": {"name": "gsm8k", "num_examples": 20, "shard": "1/2"},
             "search": {"num_simulations": 50}}
    assert search_affecting(resolved) == search_affecting(other)
    pool = PoolConfig(name_prefix="ev")
    assert shard_pool(pool, None) is pool
    assert shard_pool(pool, "1/2").name_prefix == "ev-shard-1-of-2"
