"""``python -m drllm.jobs.train``: feature pass + Ray Train router fit + router checkpoint.

Config: ``conf/train.yaml`` (groups model/, cluster/, train/). Examples::

    python -m drllm.jobs.train shards_dir=/abs/path/outputs/search/<model>/<run>/shards
    python -m drllm.jobs.train shards_dir=... train.epochs=5 train.num_workers=2
    python -m drllm.jobs.train shards_dir=... cluster=auto train.use_gpu=true

The routers land in ``outputs/train/<model>/routers`` (``Routers.from_pretrained``-loadable).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from drllm.config import ConfigError, register_configs

register_configs()


@hydra.main(config_path="../_conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    logging.getLogger("drllm").setLevel(cfg.log_level)
    from drllm.routers.train_job import run_train_job, train_job_settings

    try:
        settings = train_job_settings(cfg)
    except ConfigError as err:
        sys.exit(f"config error: {err}")
    run_train_job(settings, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
