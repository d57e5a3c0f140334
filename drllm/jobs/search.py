"""``python -m drllm.jobs.search``: distributed length-aware MCTS writing supervision shards.

Config: ``conf/config.yaml`` (groups model/, dataset/, search/, pool/, ray/; keys driver, prior,
output), whose schema is :class:`drllm.search_job.SearchJobSettings`. Examples::

    python -m drllm.jobs.search                                   # laptop default
    python -m drllm.jobs.search dataset=arc_easy search=paper ray=auto pool=auto
    python -m drllm.jobs.search -m dataset=arc_easy,gsm8k         # multirun
    python -m drllm.jobs.search dataset.shard=0/4                 # shard 0 of 4 (4 drivers)
    python -m drllm.jobs.search --cfg job                         # every settable field

``main`` returns the run's ``search_accuracy`` (share of examples whose best path reaches the
success reward), the objective a Hydra sweeper (Optuna, Ax) maximizes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from drllm.config import job_settings, register
from drllm.data.sharding import register_resolver
from drllm.search_job import HEADLINE, SearchJobSettings, run
from drllm.shards import OutputLockedError, ResumeConflictError

SCHEMA = "search_job_schema"
register(SCHEMA, SearchJobSettings)
register_resolver()  # ${drllm_shard:...} in hydra.run.dir


@hydra.main(config_path="../_conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Compose, validate, run; returns the headline figure (a sweeper's objective, maximize)."""
    settings = job_settings(cfg, SearchJobSettings)
    try:
        summary = run(settings, Path(HydraConfig.get().runtime.output_dir),
                      OmegaConf.to_container(cfg, resolve=True))
    except ResumeConflictError as err:
        sys.exit(f"resume error: {err}")
    except OutputLockedError as err:
        sys.exit(f"output directory in use: {err}")
    return float(summary[HEADLINE])


if __name__ == "__main__":
    main()
