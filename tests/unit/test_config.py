"""Hydra composition of conf/: every group composes against the schemas derived from the library's
config classes; every library field is settable; bad values fail with the key named, before
anything starts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

import drllm.jobs.search  # noqa: F401 -- registers the search job's schema
import drllm.jobs.train  # noqa: F401 -- registers the train job's schema
from drllm.hydra_schema import ConfigError, to_library
from drllm.routers.train_job import TrainJobSettings
from drllm.search import MCTSConfig
from drllm.jobs.search import SearchJobSettings

CONF = Path(__file__).resolve().parents[2] / "conf"
GROUPS = {g: sorted(p.stem for p in (CONF / g).glob("*.yaml"))
          for g in ("model", "dataset", "search", "pool", "ray")}


def search_job_settings(cfg):
    return to_library(cfg, SearchJobSettings)


def _compose(overrides: list[str], name: str = "config"):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def test_default_config() -> None:
    cfg = _compose([])
    assert cfg.model.name == "smollm2-135m-instruct"
    assert cfg.dataset.name == "synthetic_arith"
    assert cfg.search.num_simulations == 16
    assert cfg.ray.mode == "local"


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_every_group_option_composes(group: str) -> None:
    assert GROUPS[group], f"no configs in conf/{group}"
    for option in GROUPS[group]:
        cfg = _compose([f"{group}={option}"])
        assert cfg[group] is not None


def test_paper_preset_is_the_paper() -> None:
    s = _compose(["search=paper"]).search
    assert (s.num_simulations, s.c, s.length_penalty, s.epsilon) == (50, 1.8, 3.0, 0.1)


def test_wrong_type_names_the_key() -> None:
    with pytest.raises(ConfigCompositionException, match="search.num_simulations=abc") as err:
        _compose(["search.num_simulations=abc"])
    assert isinstance(err.value.__cause__, ValidationError)
    with pytest.raises(ConfigCompositionException, match="not_a_key"):
        _compose(["search.not_a_key=1"])


def test_train_config_composes_with_required_shards_dir() -> None:
    cfg = _compose(["shards_dir=/tmp/x"], name="train")
    assert cfg.train.epochs == 25 and cfg.train.gamma == 2.0 and cfg.shards_dir == "/tmp/x"


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("search.epsilon=2", "epsilon"),
        ("search.num_simulations=0", "num_simulations"),
        ("dataset.max_new_tokens=0", "max_new_tokens"),
        ("dataset.chance_shuffles=3", "chance_shuffles"),
        ("resume=maybe", "resume"),
        ("pool.requests_per_actor=0", "requests_per_actor"),
        ("ray.mode=cloud", "ClusterSettings.mode"),
        ("dataset.name=nope", "nope"),
        ("model.dtype=int3", "dtype"),
    ],
)
def test_out_of_range_values_fail_before_anything_starts(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        search_job_settings(_compose([override]))


def test_default_settings_build() -> None:
    s = search_job_settings(_compose([]))
    assert s.search.num_simulations == 16 and s.generation.max_new_tokens == 128
    assert s.dataset.levels == (1,) and s.model.name == "smollm2-135m-instruct"


def test_search_presets_build_the_library_config() -> None:
    assert search_job_settings(_compose(["search=paper"])).search == MCTSConfig()
    assert search_job_settings(_compose(["search.c=2"])).search.num_simulations == 16
    with pytest.raises(ConfigCompositionException, match="num_simulation"):
        _compose(["search.num_simulation=16"])
    with pytest.raises(ConfigError, match="epsilon must be in"):
        search_job_settings(_compose(["search.epsilon=2.0"]))


# Fields that the hand-written schemas of earlier versions could not set from the command line.
ONCE_UNSETTABLE = [
    ("pool.max_request_retries=5", lambda s: s.pool.max_request_retries == 5),
    ("pool.num_gpus_per_actor=0.5", lambda s: s.pool.num_gpus_per_actor == 0.5),
    ("pool.name_prefix=x", lambda s: s.pool.name_prefix == "x"),
    ("driver.max_pending_per_tree=3", lambda s: s.driver.max_pending_per_tree == 3),
    ("driver.seed_per_example=false", lambda s: s.driver.seed_per_example is False),
    ("driver.poll_interval_s=0.5", lambda s: s.driver.poll_interval_s == 0.5),
    ("model.trust_remote_code=true", lambda s: s.model.trust_remote_code is True),
    # the evaluators' levers reach the generation config the actors get
    ("work_avoidance.draft=false", lambda s: s.generation.draft is False and s.generation.reuse_prefix),
    ("work_avoidance.prefix_cache_mb=64", lambda s: s.generation.prefix_cache_mb == 64.0),
]


@pytest.mark.parametrize("override, check", ONCE_UNSETTABLE, ids=[o for o, _ in ONCE_UNSETTABLE])
def test_every_library_field_is_settable(override: str, check) -> None:
    assert check(search_job_settings(_compose([override])))


@pytest.mark.parametrize("name, cls, overrides", [
    ("config", SearchJobSettings, []),
    ("train", TrainJobSettings, ["shards_dir=/tmp/x"]),
])
def test_schema_has_every_library_field(name: str, cls: type, overrides: list[str]) -> None:
    cfg = _compose(overrides, name=name)
    s = to_library(cfg, cls)
    assert set(cfg) == {f.name for f in dataclasses.fields(cls)}
    for f in dataclasses.fields(cls):
        value = getattr(s, f.name)
        if dataclasses.is_dataclass(value):
            assert set(cfg[f.name]) == {g.name for g in dataclasses.fields(value)}, f.name


def test_every_train_field_is_settable() -> None:
    s = to_library(_compose(["shards_dir=/tmp/x", "train.grad_clip=1.0",
                             "train.class_weighting=false", "trainer.threads=2",
                             "train.windows=4", "trainer.use_gpu=false",
                             "model.trust_remote_code=true"], name="train"), TrainJobSettings)
    assert s.train.grad_clip == 1.0 and s.train.class_weighting is False
    assert s.trainer.threads == 2 and s.model.trust_remote_code is True
    # the feature pass follows the routers' windows and the trainer's devices
    assert s.features.windows == 4 and s.features.use_gpu is False
    with pytest.raises(ConfigError, match="shards_dir is required"):
        to_library(_compose([], name="train"), TrainJobSettings)


def test_pool_namespace_follows_ray() -> None:
    s = search_job_settings(_compose(["ray.namespace=other"]))
    assert s.pool.namespace == "other" == s.ray.namespace
