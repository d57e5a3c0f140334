"""``python -m drllm.jobs.evaluate``: accuracy and cost of default / routed / oracle / static policies.

Config: ``conf/evaluate.yaml`` (groups model/, dataset/, evaluation/, pool/, ray/), whose schema
is :class:`drllm.evaluation.job.EvaluateJobSettings`. Examples::

    python -m drllm.jobs.evaluate dataset.skip=200 dataset.num_examples=300 \\
        evaluation.policies=[default,routed,static] evaluation.routers=/abs/routers \\
        evaluation.alphas=[-0.5,0,0.5]
    python -m drllm.jobs.evaluate --cfg job                    # every settable field

Rerunning the same command resumes (rows of identical policies are skipped). ``main`` returns
the accuracy on the first dataset of what routed inference uses: in calibration mode the chosen
gate (``default (tau = 1)`` when no gate qualified), else the checkpoint's calibrated gate where
it was evaluated, else the first routed policy (else the first policy).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from drllm.hydra_schema import job_settings, register
from drllm.evaluation.job import HEADLINE, EvaluateJobSettings, run
from drllm.routers.checkpoint import RouterCheckpointError

SCHEMA = "evaluate_job_schema"
register(SCHEMA, EvaluateJobSettings)


@hydra.main(config_path="../_conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Compose, validate, run; returns the headline accuracy (a sweeper's objective)."""
    settings = job_settings(cfg, EvaluateJobSettings)
    try:
        summary = run(settings, Path(HydraConfig.get().runtime.output_dir))
    except (RouterCheckpointError, FileNotFoundError) as err:
        sys.exit(f"evaluation error: {err}")
    value = summary["headline"][HEADLINE]
    return float("nan") if value is None else float(value)


if __name__ == "__main__":
    main()
