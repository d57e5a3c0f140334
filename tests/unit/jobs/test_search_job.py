"""The search recipe end to end in one process (``ray.mode=in_process``, a tiny model on disk):
summary, shards, and a rerun over a shards directory holding a truncated shard, which is moved
to ``_quarantine/`` while the good shards' rows are kept and the lost rows searched again."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from drllm.hydra_schema import to_library
from drllm.jobs.search import SearchJobSettings, run
from drllm.shards import QUARANTINE_DIR, read_manifest, read_shards, shard_files

CONF = Path(__file__).resolve().parents[3] / "conf"


@pytest.fixture(scope="module")
def tiny_dir(tiny_llama_dir: Path) -> Path:
    return tiny_llama_dir


def _settings(tiny_dir: Path) -> tuple[SearchJobSettings, dict]:
    overrides = [f"model.name={tiny_dir}", "dataset.num_examples=3", "search.num_simulations=4",
                 "dataset.max_new_tokens=3", "pool.num_actors=1", "ray.mode=in_process",
                 "progress=false", "output.rows_per_shard=1"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return to_library(cfg, SearchJobSettings), OmegaConf.to_container(cfg, resolve=True)


def test_a_rerun_quarantines_a_truncated_shard_and_searches_its_rows_again(
        tiny_dir: Path, tmp_path: Path) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    settings, resolved = _settings(tiny_dir)
    first = run(settings, tmp_path, resolved)
    shards = tmp_path / "shards"
    assert first["this_run"]["searched"] == 3 and first["shards_quarantined"] == []
    files = shard_files(shards)
    assert len(files) == 3 and len(read_manifest(shards)) == 3
    files[0].write_bytes(files[0].read_bytes()[:7])  # a disk-full copy

    second = run(settings, tmp_path, resolved)
    assert second["shards_quarantined"] == [{
        "file": files[0].name, "moved_to": f"{QUARANTINE_DIR}/{files[0].name}",
        "reason": second["shards_quarantined"][0]["reason"]}]
    assert (shards / QUARANTINE_DIR / files[0].name).stat().st_size == 7
    assert second["this_run"]["searched"] == 1 and second["this_run"]["skipped_done"] == 2
    assert second["examples"] == 3 and read_shards(shards).num_rows == 3
    assert {e["file"] for e in read_manifest(shards)} == {p.name for p in shard_files(shards)}
    assert json.loads((tmp_path / "summary.json").read_text())["shards_quarantined"]
