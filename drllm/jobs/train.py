"""``python -m drllm.jobs.train``: feature pass + Ray Train router fit + router checkpoint.

Config: ``conf/train.yaml`` (groups model/, ray/, train/; keys features, trainer), whose schema
is :class:`drllm.routers.train_job.TrainJobSettings`. Examples::

    python -m drllm.jobs.train shards_dir=/abs/path/outputs/search/<model>/<run>/shards
    python -m drllm.jobs.train shards_dir=... train.epochs=5 trainer.num_workers=2
    python -m drllm.jobs.train shards_dir=... ray=auto trainer.use_gpu=true
    python -m drllm.jobs.train --cfg job                          # every settable field

The routers land in ``outputs/train/<model>/routers`` (``Routers.from_pretrained``-loadable).
``main`` returns their validation macro-F1, the objective a Hydra sweeper (Optuna, Ax) maximizes.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from drllm.hydra_schema import job_settings, register
from drllm.routers.train_job import HEADLINE, TrainJobSettings, run

SCHEMA = "train_job_schema"
register(SCHEMA, TrainJobSettings)


@hydra.main(config_path="../_conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Compose, validate, run; returns the routers' macro-F1 (a sweeper's objective, maximize)."""
    settings = job_settings(cfg, TrainJobSettings)
    summary = run(settings, Path(HydraConfig.get().runtime.output_dir))
    return float(summary["metrics"][HEADLINE])


if __name__ == "__main__":
    main()
