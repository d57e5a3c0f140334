"""Shared integration fixtures: one local Ray cluster per test session."""

from __future__ import annotations

import os
from typing import Iterator

import pytest


@pytest.fixture(scope="session")
def ray_local() -> Iterator[object]:
    """A local Ray cluster (2 CPUs, no dashboard), started once and shut down at session end.

    Ray 2.60 turns on token authentication for new local clusters unless ``RAY_AUTH_MODE`` is
    set (``ray/_private/authentication/authentication_token_setup.py``), which would write a
    token under ``~/.ray``; tests run the cluster with auth disabled.
    """
    import ray

    previous = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        if previous is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = previous
