"""Hydra composition of conf/: every group composes against the typed schemas; bad values fail
with the key named, before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from drllm.config import register_configs

CONF = Path(__file__).resolve().parents[2] / "conf"
GROUPS = {g: sorted(p.stem for p in (CONF / g).glob("*.yaml")) for g in ("model", "dataset", "search", "cluster")}


@pytest.fixture(scope="module", autouse=True)
def _schemas() -> None:
    register_configs()


def _compose(overrides: list[str], name: str = "config"):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def test_default_config() -> None:
    cfg = _compose([])
    assert cfg.model.name == "smollm2-135m-instruct"
    assert cfg.dataset.name == "synthetic_arith"
    assert cfg.search.preset == "quick"
    assert cfg.cluster.mode == "local"


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
        ("cluster.max_batch_size=0", "max_batch_size"),
        ("cluster.mode=cloud", "cluster.mode"),
        ("dataset.name=nope", "nope"),
        ("model.dtype=int3", "dtype"),
    ],
)
def test_out_of_range_values_fail_before_anything_starts(override: str, fragment: str) -> None:
    from drllm.config import ConfigError, search_job_settings

    with pytest.raises(ConfigError, match=fragment):
        search_job_settings(_compose([override]))


def test_default_settings_build() -> None:
    from drllm.config import search_job_settings

    s = search_job_settings(_compose([]))
    assert s.mcts.num_simulations == 16 and s.generation.max_new_tokens == 16
    assert s.dataset.levels == (1,) and s.model.name == "smollm2-135m-instruct"
