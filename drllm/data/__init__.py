"""Dataset adapters, prompt templates and the embedded synthetic default set.

Usage::

    from drllm.data import DatasetConfig, load_examples, render_prompt
    report = load_examples(DatasetConfig(name="arc_easy", path="../shared/data/ai2_arc"))
    text = render_prompt(report.examples[0], tokenizer, style="chat")

Registered datasets: ``arc_easy``, ``arc_challenge``, ``gsm8k``, ``math``, ``dart``,
``dart-1`` .. ``dart-5``, ``synthetic_arith``, ``local`` (see each module's docstring).
"""

from drllm.data.base import (
    DATASETS,
    DatasetAdapter,
    DatasetConfig,
    LoadReport,
    RowRejected,
    load_examples,
    parse_level,
)
# Importing the adapter modules registers them in DATASETS.
from drllm.data import arc, competition_math, dart, gsm8k, local, synthetic  # noqa: F401
from drllm.data.prompts import render_prompt
from drllm.data.synthetic import generate_problem

__all__ = [
    "DATASETS",
    "DatasetAdapter",
    "DatasetConfig",
    "LoadReport",
    "RowRejected",
    "generate_problem",
    "load_examples",
    "parse_level",
    "render_prompt",
]
