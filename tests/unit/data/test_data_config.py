"""DatasetConfig validation (errors name the field) and deterministic, seed-dependent sampling."""

from __future__ import annotations

import logging
import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from drllm.data import DATASETS, DatasetConfig, load_examples

EXPECTED_NAMES = {
    "arc_easy", "arc_challenge", "gsm8k", "math", "dart", "dart-1", "dart-2", "dart-3",
    "dart-4", "dart-5", "synthetic_arith", "local",
}


def test_registry_holds_every_adapter() -> None:
    assert set(DATASETS.names()) == EXPECTED_NAMES
    for name in EXPECTED_NAMES:
        assert DATASETS.get(name).name == name


def test_defaults_are_the_synthetic_set() -> None:
    cfg = DatasetConfig()
    assert (cfg.name, cfg.split, cfg.num_examples, cfg.seed, cfg.prompt_style) == (
        "synthetic_arith", "train", 32, 0, "chat")
    assert cfg.grader_name == "gsm8k_numeric"


def test_unknown_name_lists_known_names() -> None:
    msg = r"DatasetConfig.name: unknown dataset 'arc_hard'.*arc_easy.*gsm8k"
    with pytest.raises(ValueError, match=msg):
        DatasetConfig(name="arc_hard")


@pytest.mark.parametrize("levels", [(0,), (6,), (1, 7), (-1,), ("3",), (True,), ()])
def test_levels_outside_range_rejected(levels) -> None:
    with pytest.raises(ValueError, match="DatasetConfig.levels"):
        DatasetConfig(name="math", levels=levels)


def test_levels_normalized_from_lists() -> None:
    # Hydra hands lists (ListConfig); they become sorted, de-duplicated tuples.
    assert DatasetConfig(name="math", levels=[3, 1, 3]).levels == (1, 3)
    assert DatasetConfig(name="local", data_files="x.jsonl", grader="exact",
                         field_map={"question": "q", "gold": "a"}).data_files == ("x.jsonl",)


@pytest.mark.parametrize("n", [0, -3, True, 2.5])
def test_num_examples_must_be_positive(n) -> None:
    with pytest.raises(ValueError, match="DatasetConfig.num_examples"):
        DatasetConfig(num_examples=n)


def test_prompt_style_checked() -> None:
    with pytest.raises(ValueError, match=r"DatasetConfig.prompt_style.*'chat', 'base'"):
        DatasetConfig(prompt_style="instruct")
    assert DatasetConfig(prompt_style="base").prompt_style == "base"


def test_levels_only_where_datasets_have_levels() -> None:
    msg = "DatasetConfig.levels: dataset 'gsm8k' has no difficulty levels"
    with pytest.raises(ValueError, match=msg):
        DatasetConfig(name="gsm8k", levels=(1,))
    with pytest.raises(ValueError, match="DatasetConfig.levels: 'dart-3' is level 3 only"):
        DatasetConfig(name="dart-3", levels=(2,))
    assert DatasetConfig(name="dart-3", levels=(3,)).levels == (3,)


def test_field_map_only_for_local_and_required_there() -> None:
    with pytest.raises(ValueError, match="DatasetConfig.field_map: only the 'local'"):
        DatasetConfig(name="arc_easy", field_map={"question": "q", "gold": "a"})
    with pytest.raises(ValueError, match="DatasetConfig.grader: the 'local' dataset needs"):
        DatasetConfig(name="local", data_files="x.jsonl", field_map={"question": "q", "gold": "a"})
    with pytest.raises(ValueError, match=r"DatasetConfig.field_map: missing keys \['gold'\]"):
        DatasetConfig(name="local", data_files="x.jsonl", grader="exact",
                      field_map={"question": "q"})
    with pytest.raises(ValueError, match=r"unknown keys \['answer'\]"):
        DatasetConfig(name="local", data_files="x.jsonl", grader="exact",
                      field_map={"question": "q", "gold": "a", "answer": "b"})
    with pytest.raises(ValueError, match="needs data_files or path"):
        DatasetConfig(name="local", grader="exact", field_map={"question": "q", "gold": "a"})


def test_sources_and_grader_checked() -> None:
    with pytest.raises(ValueError, match="set one of them, not both"):
        DatasetConfig(name="gsm8k", path="/a", data_files=("/b.parquet",))
    msg = r"DatasetConfig.grader: unknown grader 'letter'.*mc_letter"
    with pytest.raises(ValueError, match=msg):
        DatasetConfig(name="arc_easy", grader="letter")
    with pytest.raises(ValueError, match="synthetic_arith is generated"):
        DatasetConfig(name="synthetic_arith", path="/somewhere")


def _ids(**kw) -> list[str]:
    return [e.id for e in load_examples(DatasetConfig(**kw)).examples]


def test_sampling_is_deterministic_and_seed_dependent() -> None:
    a = _ids(num_examples=20, seed=0)
    assert a == _ids(num_examples=20, seed=0)
    assert len(a) == 20 and len(set(a)) == 20
    b = _ids(num_examples=20, seed=1)
    assert b != a
    # A larger sample extends a smaller one: the same seeded order, cut later.
    assert _ids(num_examples=50, seed=0)[:20] == a


def test_sampling_covers_all_rows_when_num_examples_is_none() -> None:
    report = load_examples(DatasetConfig(num_examples=None, levels=(2,), seed=3))
    ids = [e.id for e in report.examples]
    assert sorted(ids) == sorted(f"synthetic_arith-L2-{i}" for i in range(1000))
    assert ids != sorted(ids, key=lambda s: int(s.rsplit("-", 1)[1]))  # shuffled, not file order
    assert report.rows_read == 1000 and report.rejected == {} and report.filtered == 0


def test_asking_for_more_than_available_returns_all_and_warns(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="drllm.data.base"):
        report = load_examples(DatasetConfig(num_examples=5000, levels=(1,)))
    assert len(report.examples) == 1000
    assert "asked for 5000 examples, only 1000 usable" in caplog.text
