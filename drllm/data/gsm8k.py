"""GSM8K adapter (``gsm8k``): grade-school word problems, numeric grader.

Layout (``openai/gsm8k``, config ``main``): ``question`` and ``answer``, a worked solution
ending in ``#### N``. The gold is ``N`` canonicalised by
:func:`drllm.rewards.extract.gsm8k_gold` (``"#### 1,080"`` -> ``"1080"``). Rows have no id
column; the id is ``<split>-<row index>`` (row index in the loaded table).

Rejections: ``empty question``, ``missing answer``, ``no number after #### in answer``.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from drllm.data.base import DATASETS, DatasetAdapter, DatasetConfig, RowRejected, required_text
from drllm.data.prompts import GSM8K_INSTRUCTION, make_example, with_instruction
from drllm.rewards.extract import gsm8k_gold
from drllm.types import Example

logger = logging.getLogger(__name__)


class Gsm8kAdapter(DatasetAdapter):
    """``openai/gsm8k`` ``main``."""

    name = "gsm8k"
    default_grader = "gsm8k_numeric"
    hub_repo = "openai/gsm8k"
    hub_configs = ("main",)
    columns = ("question", "answer")

    def parse(self, row: Mapping[str, Any], index: int, config: DatasetConfig) -> Example:
        question = required_text(row.get("question"), "empty question")
        answer = required_text(row.get("answer"), "missing answer")
        gold = gsm8k_gold(answer) if "####" in answer else None
        if gold is None:
            raise RowRejected("no number after #### in answer")
        return make_example(
            id=f"{config.split}-{index}",
            dataset=self.name,
            split=config.split,
            prompt=with_instruction(question, GSM8K_INSTRUCTION),
            gold=gold,
            grader=config.grader_name,
            system_prompt=config.system_prompt,
        )


DATASETS.register("gsm8k")(Gsm8kAdapter())
