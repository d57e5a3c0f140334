"""The evaluation job end to end on a tiny model saved to disk: Hydra config -> Ray actors ->
results, summary.json, resume; bad values fail before Ray starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from drllm.hydra_schema import to_library
from drllm.evaluation.job import EvaluateJobSettings, run
from drllm.evaluation.results import load_results
from drllm.jobs.evaluate import SCHEMA  # noqa: F401 -- registers the schema
from drllm.routers.checkpoint import RouterCheckpointError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    from drllm.models.tiny import tiny_model, tiny_tokenizer
    from drllm.routers.module import Routers

    root = tmp_path_factory.mktemp("tiny-eval-job")
    tiny_model("llama", num_layers=4).save_pretrained(root / "model")
    tiny_tokenizer().save_pretrained(root / "model")
    Routers(4, 64, bottleneck=8, windows=4).save_pretrained(
        root / "routers", base_model_id=str((root / "model").resolve()))
    Routers(5, 64, bottleneck=8).save_pretrained(root / "bad_routers", base_model_id="x")
    return {"model": root / "model", "routers": root / "routers", "bad": root / "bad_routers"}


def _settings(overrides: list[str]) -> EvaluateJobSettings:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=overrides)
    return to_library(cfg, EvaluateJobSettings)


def _common(tiny: dict[str, Path], routers: Path) -> list[str]:
    return [f"model.name={tiny['model']}", "dataset.num_examples=4", "dataset.skip=3",
            "dataset.max_new_tokens=3", "pool.num_actors=1", "progress=false",
            "evaluation.policies=[default,routed,static]", f"evaluation.routers={routers}",
            "evaluation.alphas=[-0.5,0]", "evaluation.calibration_examples=3"]


@pytest.mark.slow
def test_job_through_ray_writes_results_and_resumes(ray_local, tiny, tmp_path) -> None:
    settings = _settings(_common(tiny, tiny["routers"]))
    summary = run(settings, tmp_path)
    stored = json.loads((tmp_path / "summary.json").read_text())
    assert stored["headline"] == summary["headline"]
    assert stored["headline"]["policy"] == "routed(a=-0.5)"
    ds = stored["datasets"]["synthetic_arith"]
    assert ds["examples"] == 4 and ds["skip"] == 3 and ds["calibration"]["overlap"] == 0
    assert len(ds["calibration"]["importance"]) == 4
    pols = ds["policies"]
    assert {"default", "routed(a=-0.5)", "routed(a=+0)"} <= set(pols)
    assert any(p.startswith("shortgpt(k=") for p in pols) and any(p.startswith("random(k=") for p in pols)
    for p in pols.values():
        assert p["examples"] == 4 and p["failed"] == 0 and 0 <= p["ci95"][0] <= p["ci95"][1] <= 1
    assert pols["default"]["blocks_per_pass"] == 4.0
    table = load_results(tmp_path / "results")
    assert len(table) == 4 * len(pols)
    again = run(settings, tmp_path)
    assert all(p["evaluated"] == 0 for p in again["this_run"]["phases"].values())
    with pytest.raises((RouterCheckpointError, RuntimeError), match=r"\(L\) 5"):
        run(_settings(_common(tiny, tiny["bad"])), tmp_path / "bad")
    assert not list((tmp_path / "bad" / "results").glob("part-*"))


@pytest.mark.parametrize("override, key", [
    ("evaluation.alphas=[1.5]", "alphas"),
    ("evaluation.policies=[routed]", "routers"),
    ("dataset.skip=-3", "skip"),
])
def test_bad_value_fails_before_ray_starts(tiny, tmp_path, override, key) -> None:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "-m", "drllm.jobs.evaluate", f"model.name={tiny['model']}", override,
         f"hydra.run.dir={tmp_path}"], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=120)
    assert proc.returncode != 0 and key in proc.stderr, proc.stderr[-2000:]
    assert "starting a local Ray" not in proc.stdout + proc.stderr
