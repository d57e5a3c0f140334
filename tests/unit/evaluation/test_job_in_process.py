"""The evaluate job with ``ray.mode=in_process``: no Ray at all, also for the preflight task
(routers check and block influence), which once started a local Ray instance."""

from __future__ import annotations

import json
from pathlib import Path

from hydra import compose, initialize_config_dir

from drllm.evaluation.job import EvaluateJobSettings, run
from drllm.hydra_schema import to_library
from drllm.jobs.evaluate import SCHEMA  # noqa: F401 -- registers the schema

REPO = Path(__file__).resolve().parents[3]


def _settings(tmp_path: Path, *extra: str) -> EvaluateJobSettings:
    """A tiny Llama, fresh routers for it, three questions, in process."""
    from drllm.models.tiny import tiny_model, tiny_tokenizer
    from drllm.routers.module import Routers

    model = tmp_path / "model"
    tiny_model("llama", num_layers=4).save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    Routers(4, 64, bottleneck=8, windows=4).save_pretrained(
        tmp_path / "routers", base_model_id=str(model.resolve()))
    overrides = [f"model.name={model}", "dataset.num_examples=3", "dataset.max_new_tokens=2",
                 "ray.mode=in_process", "progress=false",
                 f"evaluation.routers={tmp_path / 'routers'}",
                 "evaluation.calibration_examples=2", *extra]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return to_library(compose(config_name="evaluate", overrides=overrides),
                          EvaluateJobSettings)


def test_in_process_job_starts_no_ray(tmp_path, monkeypatch) -> None:
    import ray

    settings = _settings(tmp_path, "evaluation.policies=[default,routed,static]",
                         "evaluation.alphas=[0]")

    def no_ray(*args, **kwargs):
        raise AssertionError("ray.mode=in_process used Ray")

    # patched, not probed with ray.is_initialized(): the suite may already hold a Ray session
    monkeypatch.setattr(ray, "init", no_ray)
    monkeypatch.setattr(ray, "remote", no_ray)
    summary = run(settings, tmp_path / "out")
    stored = json.loads((tmp_path / "out" / "summary.json").read_text())
    ds = stored["datasets"]["synthetic_arith"]
    assert ds["examples"] == 3 and len(ds["calibration"]["importance"]) == 4
    policies = summary["datasets"]["synthetic_arith"]["policies"]
    assert "default" in policies and any(p.startswith("routed") for p in policies)


def test_calibration_mode_headline_is_the_chosen_gate(tmp_path) -> None:
    """The job's objective in calibration mode is what it stored, not the first routed policy
    (here routed(a=-0.5), which is neither gate)."""
    settings = _settings(tmp_path, "evaluation.policies=[default,routed]",
                         "evaluation.alphas=[-0.5]", "evaluation.gates=[0,1]",
                         "evaluation.calibrate=true", "evaluation.epsilon=0.01")
    summary = run(settings, tmp_path / "out")
    chosen = summary["calibration"]["chosen"]
    assert chosen["policy"] in ("routed(t=0)", "routed(t=1)", "default (tau = 1)")
    assert summary["headline"] == {"dataset": "synthetic_arith", "policy": chosen["policy"],
                                   "accuracy": chosen["accuracy"]}
    stored = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert stored["headline"] == summary["headline"]
