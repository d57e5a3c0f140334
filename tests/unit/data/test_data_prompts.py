"""Prompt templates and render_prompt (chat via a tokenizer's template, base via plain text)."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from drllm.data import DatasetConfig, load_examples, render_prompt
from drllm.data.prompts import (
    base_prompt,
    chat_messages,
    mc_instruction,
    mc_prompt,
    with_instruction,
)
from drllm.rewards import grade

TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _tokenizer(chat_template: str | None) -> PreTrainedTokenizerFast:
    vocab = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok = PreTrainedTokenizerFast(tokenizer_object=vocab)
    tok.chat_template = chat_template
    return tok


def test_mc_prompt_layout() -> None:
    two = mc_instruction(["A", "B"])
    assert two.startswith("Answer with a single letter (A or B) and no explanation.")
    text = mc_prompt("  Which?  ", ["A", "B", "C"], ["x ", "y", "z"])
    assert text == ("Question: Which?\nA. x\nB. y\nC. z\nAnswer with a single letter "
                    "(A, B, or C) and no explanation. Start your answer with \"Answer: \" "
                    "followed by the letter of the answer you choose.")
    # The answer format the instruction asks for is what the strict paper grader accepts.
    assert grade("mc_letter", "Answer: C", "C").reward == 1.0


def test_open_question_helpers() -> None:
    assert with_instruction("2+2?", None) == "Question: 2+2?"
    assert chat_messages("hi") == ({"role": "user", "content": "hi"},)
    assert base_prompt("Question: q", "Be brief. ") == "Be brief.\n\nQuestion: q\nAnswer:"


def test_render_chat_and_base() -> None:
    cfg = DatasetConfig(num_examples=1, levels=(1,), system_prompt="Be brief.")
    (ex,) = load_examples(cfg).examples
    text = render_prompt(ex, _tokenizer(TEMPLATE), style="chat")
    assert text == f"<|system|>Be brief.\n<|user|>{ex.prompt}\n<|assistant|>"
    assert render_prompt(ex, None, style="base") == f"Be brief.\n\n{ex.prompt}\nAnswer:"
    assert render_prompt(ex, _tokenizer(TEMPLATE)) == text  # chat is the default


def test_render_errors_are_actionable() -> None:
    (ex,) = load_examples(DatasetConfig(num_examples=1)).examples
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template.*style='base'"):
        render_prompt(ex, _tokenizer(None), style="chat")
    with pytest.raises(ValueError, match="needs a tokenizer"):
        render_prompt(ex, None)
    with pytest.raises(ValueError, match="prompt style must be 'chat' or 'base'"):
        render_prompt(ex, _tokenizer(TEMPLATE), style="raw")
