"""Starting or joining Ray, once per process (Hydra multirun reuses the instance).

``mode="local"`` always starts a fresh instance in this process (``address="local"``), never a
cluster that ``ray start`` (or a stale address file it left) points at. ``mode="auto"`` joins a
running cluster and fails within ``connect_timeout_s``, naming the address it tried, when no
cluster answers there (instead of Ray's own long reconnect loop). ``mode="in_process"`` uses no
Ray at all: the jobs that can run their evaluators in their own process (search, evaluate) do,
one call at a time (debugging, tests); router training needs Ray Train and refuses it.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

from drllm.checks import check_bool, check_choice, check_int, check_real

logger = logging.getLogger(__name__)


CLUSTER_MODES = ("local", "auto", "in_process")


@dataclass(frozen=True)
class ClusterSettings:
    """How to reach Ray.

    Attributes:
        mode: ``"local"`` starts Ray in this process (laptop / single node); ``"auto"`` joins a
            running cluster (``address``, ``RAY_ADDRESS`` or the cluster a Ray Job runs in);
            ``"in_process"``: no Ray, the evaluators run in the job's own process.
        address: cluster address for ``auto`` (``"auto"`` or ``"ray://host:10001"``...).
        num_cpus: CPUs a local Ray may use (None: all).
        include_dashboard: start the dashboard with a local Ray (http://127.0.0.1:8265).
        namespace: Ray namespace for the named evaluator actors.
        connect_timeout_s: ``auto`` fails when the cluster's GCS does not accept a connection
            within this long (seconds).
    """

    mode: str = "local"
    address: str | None = None
    num_cpus: int | None = None
    include_dashboard: bool = False
    namespace: str = "drllm"
    connect_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        check_choice("ClusterSettings", "mode", self.mode, CLUSTER_MODES)
        check_real("ClusterSettings", "connect_timeout_s", self.connect_timeout_s, 0.0,
                   open_low=True)
        if self.num_cpus is not None:
            check_int("ClusterSettings", "num_cpus", self.num_cpus, 1)
        check_bool("ClusterSettings", "include_dashboard", self.include_dashboard)


def connect(settings: ClusterSettings) -> bool:
    """Start or join Ray unless this process is already connected.

    Returns:
        True if this call started/joined Ray (the caller may shut it down), False if Ray was
        already initialized (e.g. an earlier job of a Hydra multirun): it is reused as is, or
        ``settings.mode`` is ``in_process`` (no Ray).
    """
    if settings.mode == "in_process":
        return False
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
        probe_cluster(address, settings.connect_timeout_s)
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


def _gcs_address(address: str) -> str | None:
    """``host:port`` of the GCS that ``ray.init(address=...)`` would dial, if it can be told."""
    if address.startswith("ray://") or address.startswith("http"):
        return None  # Ray Client / dashboard: not a GCS address
    if address == "auto":
        from ray._private.services import find_bootstrap_address

        return find_bootstrap_address(None)  # the last `ray start` on this node, or None
    return address


def probe_cluster(address: str, timeout_s: float) -> None:
    """Fail within ``timeout_s`` when nothing accepts connections at the cluster's GCS address.

    Raises:
        ConnectionError: naming the address (and how it was found) and the time waited.
    """
    gcs = _gcs_address(address)
    if gcs is None:
        return
    host, _, port = gcs.rpartition(":")
    if not host or not port.isdigit():
        return  # let Ray parse what we cannot
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return
    except OSError as err:
        source = "" if gcs == address else f" (address {address!r}, from `ray start`'s file)"
        raise ConnectionError(
            f"no Ray cluster answered at {gcs}{source} within {timeout_s:g} s "
            f"(ray.connect_timeout_s): {err}. Start one with `ray start --head`, point "
            "RAY_ADDRESS / ray.address at a live head node, or use ray=local"
        ) from err
