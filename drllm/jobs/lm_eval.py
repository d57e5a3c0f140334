"""``python -m drllm.jobs.lm_eval``: lm-evaluation-harness's own CLI, with ``--model drllm``.

Every argument is lm-eval's (``lm-eval run --help``); this entry point only registers drllm's
model (:mod:`drllm.inference.lm_eval`) and runs offline by default: ``HF_DATASETS_OFFLINE``,
``HF_HUB_OFFLINE`` and ``TRANSFORMERS_OFFLINE`` are set to 1 unless already set, so tasks read
local files (``--include_path DIR`` with task YAMLs whose ``dataset_path: parquet`` /
``dataset_kwargs.data_files`` point at local files, or a populated HF datasets cache). Set
``HF_DATASETS_OFFLINE=0 HF_HUB_OFFLINE=0`` to let lm-eval download hub datasets. Examples::

    python -m drllm.jobs.lm_eval --model drllm --model_args pretrained=smollm2-135m-instruct \\
        --include_path my_tasks/ --tasks my_arc --device cpu --batch_size 8 --output_path out/
    python -m drllm.jobs.lm_eval --model drllm --model_args pretrained=smollm2-135m-instruct \\
        routers=outputs/train/smollm2-135m-instruct/routers alpha=-0.2 \\
        --include_path my_tasks/ --tasks my_arc --limit 50
    python -m drllm.jobs.lm_eval --model drllm \\
        --model_args pretrained=/abs/hf_dir 'path=[1,1,0,1]' ...

(``--model_args`` takes space-separated ``key=value`` words, or one comma-separated string in
which brackets keep a list together: ``pretrained=/abs/hf_dir,path=[1,1,0,1]``.)

lm-eval prints its results table to stdout and, with ``--output_path``, writes
``results_<time>.json`` under ``<output_path>/<model name>/``.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

OFFLINE_VARIABLES = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def main(argv: Sequence[str] | None = None) -> None:
    """Run lm-eval's CLI on ``argv`` (default: this process's arguments) with ``drllm`` known."""
    for name in OFFLINE_VARIABLES:
        os.environ.setdefault(name, "1")
    # Imported only after the offline switches are set: ``datasets`` and ``huggingface_hub``
    # read them once, at import time.
    import drllm.inference.lm_eval  # noqa: F401 -- registers the "drllm" model
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
