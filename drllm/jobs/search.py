"""``python -m drllm.jobs.search``: distributed length-aware MCTS writing supervision shards.

Config: ``conf/config.yaml`` (groups model/, dataset/, search/, cluster/). Examples::

    python -m drllm.jobs.search                                   # laptop default
    python -m drllm.jobs.search dataset=arc_easy search=paper cluster=auto
    python -m drllm.jobs.search -m dataset=arc_easy,gsm8k         # multirun
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from drllm.config import ConfigError, register_configs, search_job_settings

register_configs()


@hydra.main(config_path="../_conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    logging.getLogger("drllm").setLevel(cfg.log_level)
    try:
        settings = search_job_settings(cfg)
    except ConfigError as err:
        sys.exit(f"config error: {err}")
    from drllm.search_job import run
    from drllm.shards import ResumeConflictError

    try:
        run(settings, Path(HydraConfig.get().runtime.output_dir),
            OmegaConf.to_container(cfg, resolve=True))
    except ResumeConflictError as err:
        sys.exit(f"resume error: {err}")


if __name__ == "__main__":
    main()
