"""Calibrating the gate on end-task accuracy: the most blocks saved that does no harm.

Calibration is a mode of the evaluation job (``evaluation.calibrate=true``): on a calibration
slice (disjoint from the training search and from the test slice: choose ``dataset.skip``
accordingly) it runs the ``default`` policy and the routers at every gate of
``evaluation.gates`` with the real generation and grader, then :func:`choose_gate` picks

    the gate with the fewest blocks per forward pass among those whose accuracy is at least
    ``default accuracy - epsilon`` (ties: the larger gate, i.e. fewer deviations);

``tau = 1`` (the default path) always qualifies, so the choice never does worse than the
default by more than ``epsilon`` on the slice. :func:`calibrate` stores the gate and its
evidence (per gate: accuracy, 95 % interval, n, blocks per pass) in the router checkpoint
(``config.json["calibration"]``, :func:`~drllm.routers.checkpoint.write_calibration`), which
routed inference and the lm-eval model then use by default. Imports neither torch nor ray.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping

logger = logging.getLogger(__name__)


def _evidence(policy: Mapping[str, Any], num_layers: int) -> dict[str, Any]:
    blocks = policy.get("blocks_per_pass")
    return {"policy": policy["policy"], "gate": policy.get("gate"),
            "accuracy": policy["accuracy"], "ci95": list(policy["ci95"]),
            "n": policy["examples"], "blocks_per_pass": blocks,
            "blocks_saved": None if blocks is None else num_layers - blocks}


def choose_gate(dataset: Mapping[str, Any], epsilon: float, num_layers: int) -> dict[str, Any]:
    """The gate of one dataset's evaluation summary (see the module docstring).

    Args:
        dataset: ``summary["datasets"][name]`` of an evaluation with ``default`` and gate
            policies ``routed(t=...)``.
        epsilon: accuracy the gate may lose against the default (absolute).
        num_layers: ``L``.

    Returns:
        ``{"gate", "epsilon", "default": evidence, "candidates": [evidence per gate],
        "chosen": evidence}``.

    Raises:
        ValueError: the summary has no ``default`` policy or no answered gate policy.
    """
    policies = dataset["policies"]
    if "default" not in policies or policies["default"]["accuracy"] is None:
        raise ValueError("calibration needs the default policy's accuracy on the slice")
    default = _evidence(policies["default"], num_layers)
    gates = [_evidence(p, num_layers) for p in policies.values()
             if p["kind"] == "routed" and p.get("gate") is not None and p["accuracy"] is not None
             and (p.get("alpha") or 0.0) == 0.0]
    if not gates:
        raise ValueError("calibration found no answered gate policy routed(t=...)")
    floor = default["accuracy"] - epsilon
    eligible = [g for g in gates if g["accuracy"] >= floor - 1e-12]
    chosen = (min(eligible, key=lambda g: (g["blocks_per_pass"], -g["gate"])) if eligible
              else None)
    if chosen is None or chosen["blocks_per_pass"] > default["blocks_per_pass"]:
        chosen = {**default, "gate": 1.0, "policy": "default (tau = 1)"}
    logger.info("calibration: gate %g (%s accuracy %.3f, %.2f blocks/pass) vs default %.3f",
                chosen["gate"], chosen["policy"], chosen["accuracy"], chosen["blocks_per_pass"],
                default["accuracy"])
    return {"gate": float(chosen["gate"]), "epsilon": float(epsilon), "default": default,
            "candidates": sorted(gates, key=lambda g: g["gate"]), "chosen": chosen}


def calibrate(summary: Mapping[str, Any], routers_dir: str, epsilon: float) -> dict[str, Any]:
    """Choose the gate on the first dataset of an evaluation summary and store it (with the
    slice's identity) in the checkpoint ``routers_dir``; returns the stored calibration."""
    from drllm.routers.checkpoint import write_calibration

    name, dataset = next(iter(summary["datasets"].items()))
    if len(summary["datasets"]) > 1:
        logger.warning("calibrating on the first dataset (%s) only", name)
    choice = choose_gate(dataset, epsilon, int(summary["num_layers"]))
    calibration = {**choice, "dataset": name, "examples": dataset["examples"],
                   "slice": dataset["ids_note"], "skip": dataset["skip"],
                   "grader": dataset["grader"], "results_dir": summary.get("results_dir"),
                   "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_calibration(routers_dir, calibration)
    return calibration


def format_calibration(calibration: Mapping[str, Any]) -> str:
    """Printed lines: every gate's accuracy and cost, and the choice."""
    d = calibration["default"]
    lines = [f"calibration on {calibration['dataset']} ({calibration['slice']}), "
             f"epsilon {calibration['epsilon']:g}: default {d['accuracy']:.1%} "
             f"[{d['ci95'][0]:.1%}, {d['ci95'][1]:.1%}] at {d['blocks_per_pass']:.2f} blocks/pass"]
    for g in calibration["candidates"]:
        lines.append(f"  gate {g['gate']:<5g} {g['accuracy']:6.1%} "
                     f"[{g['ci95'][0]:5.1%}, {g['ci95'][1]:5.1%}]  n={g['n']:<4d} "
                     f"{g['blocks_per_pass']:.2f} blocks/pass")
    lines.append(f"chosen gate {calibration['gate']:g} (stored in the router checkpoint)")
    return "\n".join(lines)
