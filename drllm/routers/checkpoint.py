"""Router checkpoints: ``routers.safetensors`` (weights) + ``config.json`` (everything else).

``config.json`` holds ``format_version``, ``base_model_id``, ``num_layers`` (L), ``hidden_size``
(d), ``windows`` (W), ``bottleneck`` (b), ``num_classes``, ``class_names``, ``class_counts``
(training split), ``train_config``, ``metrics``, ``rows`` (which supervision rows were used:
``{"filter", "used", "skipped_unsolved", "train", "val"}``, see :mod:`drllm.routers.rows`; or
``null``), the decision settings (``logit_adjustment``, ``label_edits``, ``pooling``, and
``calibration`` once :func:`write_calibration` chose a gate; see
:mod:`drllm.routers.decision`), the training ``selection`` (best epoch) and the
``drllm_version`` that wrote it. Weight
names are those of :class:`~drllm.routers.module.Routers` (``routers.{i}.fc1.weight`` ...).

Both files are written to temporary names and renamed, so an interrupted save never leaves a
half-written checkpoint under the final names. Loading checks the format version, the shapes
of every tensor and, when asked, that the checkpoint fits the model it will route (L, d, model
id); every failure raises :class:`RouterCheckpointError` (or ``FileNotFoundError``) naming the
checkpoint directory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

import torch
from torch import nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import drllm
from drllm.files import atomic_write
from drllm.routers.metrics import CLASS_NAMES, NUM_CLASSES

R = TypeVar("R", bound=nn.Module)

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
WEIGHTS_NAME = "routers.safetensors"
CONFIG_NAME = "config.json"


class RouterCheckpointError(ValueError):
    """A router checkpoint is corrupt, of an unknown format, or does not fit the model."""


def _jsonable(value: Any) -> Any:
    """Convert dataclasses / mappings / tensors to JSON-serializable values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value



def save_routers(
    routers: nn.Module,
    directory: str | os.PathLike[str],
    *,
    base_model_id: str,
    class_counts: Sequence[int] | None = None,
    train_config: Any = None,
    metrics: Mapping[str, Any] | None = None,
    rows: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Save ``routers`` to ``directory`` (created if needed); returns the directory.

    Args:
        base_model_id: HF id or local path of the frozen model the routers were trained for.
        class_counts: training-split label counts ``(skip, execute, repeat)``.
        train_config: a :class:`~drllm.routers.training.TrainConfig` or a mapping.
        metrics: final metrics (JSON-serializable after conversion).
        rows: the supervision rows trained on (row filter and counts, e.g.
            ``{"filter": "solved", "used": N, "skipped_unsolved": M}``).
        extra: further ``config.json`` entries (decision settings, selection); they may not
            replace the keys above.
    """
    if not base_model_id:
        raise ValueError("base_model_id is required so the checkpoint can be matched to its model")
    if class_counts is not None and len(class_counts) != NUM_CLASSES:
        raise ValueError(f"class_counts must have {NUM_CLASSES} entries, got {list(class_counts)}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "format_version": FORMAT_VERSION,
        "base_model_id": base_model_id,
        "num_layers": routers.num_layers,
        "hidden_size": routers.hidden_size,
        "windows": routers.windows,
        "bottleneck": routers.bottleneck,
        "num_classes": NUM_CLASSES,
        "class_names": list(CLASS_NAMES),
        "class_counts": None if class_counts is None else [int(c) for c in class_counts],
        "train_config": _jsonable(train_config),
        "metrics": _jsonable(metrics) if metrics is not None else None,
        "rows": _jsonable(rows) if rows is not None else None,
        "drllm_version": drllm.__version__,
    }
    clash = sorted(set(extra or {}) & set(config))
    if clash:
        raise ValueError(f"extra checkpoint entries {clash} would replace reserved keys")
    config.update({str(k): _jsonable(v) for k, v in (extra or {}).items()})
    text = json.dumps(config, indent=2, sort_keys=True, allow_nan=False)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in routers.state_dict().items()}
    atomic_write(
        out / WEIGHTS_NAME, lambda p: save_file(tensors, str(p), metadata={"format": "pt"})
    )
    atomic_write(out / CONFIG_NAME, lambda p: p.write_text(text + "\n", encoding="utf-8"))
    logger.info("saved %d routers for %s to %s", routers.num_layers, base_model_id, out)
    return out


def write_calibration(directory: str | os.PathLike[str], calibration: Mapping[str, Any]) -> Path:
    """Store a calibration (``{"gate": tau, ...evidence}``) in a checkpoint's ``config.json``.

    The routed model and the lm-eval model then use ``calibration["gate"]`` by default. The
    file is replaced atomically; the weights are untouched.
    """
    root = Path(directory)
    config = read_config(root)
    if "gate" not in calibration:
        raise ValueError("a calibration needs its chosen 'gate'")
    config["calibration"] = _jsonable(dict(calibration))
    text = json.dumps(config, indent=2, sort_keys=True, allow_nan=False)
    atomic_write(root / CONFIG_NAME, lambda p: p.write_text(text + "\n", encoding="utf-8"))
    logger.info("stored calibration gate %s in %s", calibration["gate"], root)
    return root


def read_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed, validated ``config.json`` of a checkpoint directory."""
    root = Path(directory)
    path = root / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"router checkpoint {root}: missing {CONFIG_NAME}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RouterCheckpointError(
            f"router checkpoint {root}: {CONFIG_NAME} is not valid JSON ({err})"
        ) from err
    if not isinstance(config, dict):
        raise RouterCheckpointError(f"router checkpoint {root}: {CONFIG_NAME} is not a JSON object")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise RouterCheckpointError(
            f"router checkpoint {root}: format_version {version!r} is not supported "
            f"(this drllm reads version {FORMAT_VERSION})"
        )
    for key in ("base_model_id", "num_layers", "hidden_size", "windows", "bottleneck"):
        if key not in config:
            raise RouterCheckpointError(f"router checkpoint {root}: {CONFIG_NAME} lacks {key!r}")
    return config


def _check_expected(root: Path, config: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    labels = {
        "num_layers": "blocks (L)",
        "hidden_size": "hidden size (d)",
        "base_model_id": "model id",
    }
    for key, want in expected.items():
        if want is not None and config[key] != want:
            raise RouterCheckpointError(
                f"router checkpoint {root} was trained for {labels[key]} {config[key]!r} "
                f"but the model has {labels[key]} {want!r}"
            )


def _load_weights(root: Path, routers: nn.Module) -> None:
    path = root / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"router checkpoint {root}: missing {WEIGHTS_NAME}")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise RouterCheckpointError(
            f"router checkpoint {root}: cannot read {WEIGHTS_NAME} ({err})"
        ) from err
    expected = routers.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise RouterCheckpointError(
            f"router checkpoint {root}: {WEIGHTS_NAME} does not match its config "
            f"(missing {missing[:4]}, unexpected {extra[:4]})"
        )
    for name, ref in expected.items():
        if tensors[name].shape != ref.shape:
            raise RouterCheckpointError(
                f"router checkpoint {root}: {name} has shape {tuple(tensors[name].shape)}, "
                f"config implies {tuple(ref.shape)}"
            )
        if not torch.isfinite(tensors[name]).all():
            raise RouterCheckpointError(f"router checkpoint {root}: {name} has non-finite values")
    routers.load_state_dict(tensors)


def load_routers(
    directory: str | os.PathLike[str],
    build: Callable[[int, int, int, int], R],
    *,
    expected_num_layers: int | None = None,
    expected_hidden_size: int | None = None,
    expected_model_id: str | None = None,
) -> R:
    """Load routers saved by :func:`save_routers` (float32, CPU, eval mode).

    ``build(num_layers, hidden_size, bottleneck, windows)`` makes the empty module the weights
    go into (:meth:`Routers.from_pretrained` passes the class).

    The ``expected_*`` arguments describe the model the routers will drive; a mismatch raises
    :class:`RouterCheckpointError` naming both values and the directory.
    """
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"router checkpoint directory {root} does not exist")
    config = read_config(root)
    _check_expected(
        root,
        config,
        {
            "num_layers": expected_num_layers,
            "hidden_size": expected_hidden_size,
            "base_model_id": expected_model_id,
        },
    )
    try:
        routers = build(
            config["num_layers"], config["hidden_size"], config["bottleneck"], config["windows"]
        )
    except ValueError as err:
        raise RouterCheckpointError(f"router checkpoint {root}: bad {CONFIG_NAME} ({err})") from err
    _load_weights(root, routers)
    routers.eval()
    return routers
