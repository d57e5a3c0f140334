"""Prometheus metrics of the search, through ``ray.util.metrics``.

Ray exports application metrics of every driver and actor process on each node's metrics
export port (``ray.nodes()[i]["MetricsExportPort"]``, ``http://127.0.0.1:{port}/metrics``)
with a ``ray_`` prefix; counters gain a ``_total`` suffix (``drllm_evaluations`` is scraped as
``ray_drllm_evaluations_total``). Tags are low-cardinality: the model id and the dataset name.

Metrics are no-ops in a process that is not connected to Ray (unit tests, in-process runs).

=====================================  =========  =================  ==========================
name                                   kind       tags               recorded by
=====================================  =========  =================  ==========================
drllm_evaluations                      counter    model, dataset     driver (paths evaluated)
drllm_memo_hits                        counter    model, dataset     driver (per finished tree)
drllm_examples_done                    counter    model, dataset     driver
drllm_examples_improved                counter    model, dataset     driver
drllm_evaluation_errors                counter    model              pool (reward-0 failures)
drllm_requests_requeued                counter    model              pool (after actor deaths)
drllm_in_flight_requests               gauge      model              pool
drllm_evaluation_latency_seconds       histogram  model              pool (per actor call)
drllm_batch_size                       histogram  model              actor (per executor batch)
drllm_batch_latency_seconds            histogram  model              actor (per executor batch)
=====================================  =========  =================  ==========================
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, Optional

logger = logging.getLogger(__name__)

MODEL_TAGS = ("model",)
EXAMPLE_TAGS = ("model", "dataset")
LATENCY_BOUNDARIES = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0]
BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128]

_SPECS: dict[str, tuple[str, str, tuple[str, ...], Optional[list[float]]]] = {
    "drllm_evaluations": ("counter", "Paths evaluated (generated and graded).", EXAMPLE_TAGS, None),
    "drllm_memo_hits": ("counter", "MCTS simulations answered from the per-question memo.",
                        EXAMPLE_TAGS, None),
    "drllm_examples_done": ("counter", "Examples whose search finished and was written.",
                            EXAMPLE_TAGS, None),
    "drllm_examples_improved": ("counter", "Finished examples whose best path beats the default.",
                                EXAMPLE_TAGS, None),
    "drllm_evaluation_errors": ("counter", "Requests recorded as reward 0 after failed retries.",
                                MODEL_TAGS, None),
    "drllm_requests_requeued": ("counter", "Requests requeued after their actor died.",
                                MODEL_TAGS, None),
    "drllm_in_flight_requests": ("gauge", "Requests sent to actors and not yet answered.",
                                 MODEL_TAGS, None),
    "drllm_evaluation_latency_seconds": ("histogram", "Seconds from sending a call to its answer.",
                                         MODEL_TAGS, LATENCY_BOUNDARIES),
    "drllm_batch_size": ("histogram", "Requests per executor batch in an actor.", MODEL_TAGS,
                         BATCH_BOUNDARIES),
    "drllm_batch_latency_seconds": ("histogram", "Seconds one executor batch took in an actor.",
                                    MODEL_TAGS, LATENCY_BOUNDARIES),
}

_lock = threading.Lock()
_metrics: dict[str, Any] = {}


def _ray_connected() -> bool:
    """Whether this process is connected to Ray (never imports or starts Ray itself)."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def _metric(name: str) -> Any:
    """The process-wide ``ray.util.metrics`` object of ``name`` (created on first use)."""
    with _lock:
        metric = _metrics.get(name)
        if metric is None:
            from ray.util import metrics as ray_metrics

            kind, description, tag_keys, boundaries = _SPECS[name]
            if kind == "counter":
                metric = ray_metrics.Counter(name, description=description, tag_keys=tag_keys)
            elif kind == "gauge":
                metric = ray_metrics.Gauge(name, description=description, tag_keys=tag_keys)
            else:
                metric = ray_metrics.Histogram(
                    name, description=description, boundaries=boundaries, tag_keys=tag_keys
                )
            _metrics[name] = metric
        return metric


class SearchMetrics:
    """Records the search metrics with fixed ``model`` tag (and per-call ``dataset``).

    Args:
        model: model id (tag value).
        enabled: ``None``: record iff this process is connected to Ray; ``False``: never.
    """

    def __init__(self, model: str, enabled: Optional[bool] = None) -> None:
        self.model = str(model)
        self.enabled = _ray_connected() if enabled is None else bool(enabled)
        if self.enabled and not _ray_connected():
            raise RuntimeError("SearchMetrics(enabled=True) needs a process connected to Ray")

    def _inc(self, name: str, value: float, dataset: Optional[str] = None) -> None:
        if not self.enabled or value <= 0:
            return
        tags = {"model": self.model}
        if dataset is not None:
            tags["dataset"] = dataset
        _metric(name).inc(value, tags=tags)

    def evaluations(self, count: int, dataset: str) -> None:
        """``count`` paths of ``dataset`` examples were evaluated."""
        self._inc("drllm_evaluations", count, dataset)

    def example_done(self, dataset: str, *, improved: bool, memo_hits: int) -> None:
        """One search finished (and was handed to the shard writer)."""
        self._inc("drllm_examples_done", 1, dataset)
        self._inc("drllm_memo_hits", memo_hits, dataset)
        if improved:
            self._inc("drllm_examples_improved", 1, dataset)

    def evaluation_errors(self, count: int) -> None:
        self._inc("drllm_evaluation_errors", count)

    def requeued(self, count: int) -> None:
        self._inc("drllm_requests_requeued", count)

    def in_flight(self, count: int) -> None:
        if self.enabled:
            _metric("drllm_in_flight_requests").set(count, tags={"model": self.model})

    def call_latency(self, seconds: float) -> None:
        if self.enabled:
            _metric("drllm_evaluation_latency_seconds").observe(seconds, tags={"model": self.model})

    def batch(self, size: int, seconds: float) -> None:
        """An actor ran one executor batch of ``size`` requests in ``seconds``."""
        if self.enabled:
            tags = {"model": self.model}
            _metric("drllm_batch_size").observe(size, tags=tags)
            _metric("drllm_batch_latency_seconds").observe(seconds, tags=tags)
