"""Starting or joining Ray, once per process (Hydra multirun reuses the instance)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from drllm.checks import check_bool, check_choice, check_int

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterSettings:
    """How to reach Ray.

    Attributes:
        mode: ``"local"`` starts Ray in this process (laptop / single node); ``"auto"`` joins a
            running cluster (``address``, ``RAY_ADDRESS`` or the cluster a Ray Job runs in).
        address: cluster address for ``auto`` (``"auto"`` or ``"ray://host:10001"``...).
        num_cpus: CPUs a local Ray may use (None: all).
        include_dashboard: start the dashboard with a local Ray (http://127.0.0.1:8265).
        namespace: Ray namespace for the named evaluator actors.
    """

    mode: str = "local"
    address: str | None = None
    num_cpus: int | None = None
    include_dashboard: bool = False
    namespace: str = "drllm"

    def __post_init__(self) -> None:
        check_choice("ClusterSettings", "mode", self.mode, ("local", "auto"))
        if self.num_cpus is not None:
            check_int("ClusterSettings", "num_cpus", self.num_cpus, 1)
        check_bool("ClusterSettings", "include_dashboard", self.include_dashboard)


def connect(settings: ClusterSettings) -> bool:
    """Start or join Ray unless this process is already connected.

    Returns:
        True if this call started/joined Ray (the caller may shut it down), False if Ray was
        already initialized (e.g. an earlier job of a Hydra multirun): it is reused as is.
    """
    import ray

    if ray.is_initialized():
        logger.info("reusing the Ray instance this process is connected to")
        return False
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if settings.mode == "local":
        logger.info("starting a local Ray instance (num_cpus=%s)", settings.num_cpus or "all")
        # address="local": always a fresh instance, never a cluster that `ray start` (or a
        # stale address file it left) points at.
        ray.init(
            address="local",
            num_cpus=settings.num_cpus,
            include_dashboard=settings.include_dashboard,
            namespace=settings.namespace,
            log_to_driver=True,
            logging_level=logging.WARNING,
        )
    else:
        address = settings.address or os.environ.get("RAY_ADDRESS") or "auto"
        logger.info("joining the Ray cluster at %s", address)
        try:
            ray.init(address=address, namespace=settings.namespace, logging_level=logging.WARNING)
        except ConnectionError as err:
            raise ConnectionError(
                f"could not join a Ray cluster at {address!r}: {err}. Start one with "
                "`ray start --head`, set RAY_ADDRESS, or use ray=local"
            ) from err
    return True


def cluster_gpus() -> float:
    """GPUs the connected cluster has in total (0 on a CPU-only cluster)."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))
