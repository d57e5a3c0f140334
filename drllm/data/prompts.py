"""Prompt templates: the user message every adapter builds, chat messages for instruct models,
plain text for base models, and :func:`render_prompt` that turns an example into model input.

Every user message has the paper's shape: ``"Question: <question>"``, then (multiple choice)
the lettered choices, then one instruction line telling the model how to answer so that the
example's grader can read the answer:

* multiple choice -- a single letter, optionally after ``"Answer: "`` (strict letter grader);
* math / DART -- the final answer within ``\\boxed{}``;
* GSM8K -- step by step, then the final number within ``\\boxed{}`` or after ``####``;
* synthetic arithmetic -- just the final number (short answers keep generation cheap).

A base-model prompt is the same text followed by ``"\\nAnswer:"``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from drllm.types import Example

MATH_INSTRUCTION = "Put your final answer within \\boxed{}."
GSM8K_INSTRUCTION = (
    "Solve the problem step by step, then give the final answer as a number within "
    "\\boxed{} (or after \"####\")."
)
ARITH_INSTRUCTION = "Reply with just the final number."
BASE_ANSWER_CUE = "\nAnswer:"

MC_INSTRUCTION = (
    "Answer with the letter of the correct choice and no explanation. Start your answer with "
    "\"Answer: \" followed by the letter."
)

# Instruction appended to a `local` question, by grader (graders not listed get none).
GRADER_INSTRUCTIONS = {
    "math_boxed": MATH_INSTRUCTION,
    "gsm8k_numeric": GSM8K_INSTRUCTION,
    "mc_letter": MC_INSTRUCTION,
    "mc_letter_lenient": MC_INSTRUCTION,
}


def mc_instruction(letters: Sequence[str]) -> str:
    """Instruction for a multiple-choice question whose choices are ``letters``."""
    if len(letters) <= 2:
        listed = " or ".join(letters)
    else:
        listed = ", ".join(letters[:-1]) + f", or {letters[-1]}"
    return (
        f"Answer with a single letter ({listed}) and no explanation. Start your answer with "
        f"\"Answer: \" followed by the letter of the answer you choose."
    )


def question_block(question: str) -> str:
    """``"Question: <question>"`` with surrounding whitespace removed."""
    return f"Question: {question.strip()}"


def mc_prompt(question: str, letters: Sequence[str], texts: Sequence[str]) -> str:
    """User message of a multiple-choice question: question, ``"A. text"`` lines, instruction."""
    assert len(letters) == len(texts) and letters, "choices must be non-empty and aligned"
    choices = "\n".join(f"{letter}. {text.strip()}" for letter, text in zip(letters, texts))
    return f"{question_block(question)}\n{choices}\n{mc_instruction(letters)}"


def with_instruction(question: str, instruction: str | None) -> str:
    """User message of an open question: ``"Question: ..."`` plus an optional instruction."""
    block = question_block(question)
    return f"{block}\n{instruction}" if instruction else block


def chat_messages(prompt: str, system_prompt: str | None = None) -> tuple[dict[str, str], ...]:
    """Chat messages for an instruct model: optional system turn, then the user turn."""
    user = {"role": "user", "content": prompt}
    if system_prompt:
        return ({"role": "system", "content": system_prompt}, user)
    return (user,)


def base_prompt(prompt: str, system_prompt: str | None = None) -> str:
    """Plain-text prompt for a base model: ``[system\\n\\n]Question: ...\\nAnswer:``."""
    head = f"{system_prompt.strip()}\n\n" if system_prompt else ""
    return f"{head}{prompt}{BASE_ANSWER_CUE}"


def make_example(
    *,
    id: str,
    dataset: str,
    split: str,
    prompt: str,
    gold: str,
    grader: str,
    system_prompt: str | None,
    meta: Mapping[str, Any] | None = None,
) -> Example:
    """An :class:`Example` with chat messages and base prompt built from ``prompt``."""
    return Example(
        id=id,
        dataset=dataset,
        split=split,
        prompt=prompt,
        messages=chat_messages(prompt, system_prompt),
        gold=gold,
        grader=grader,
        base_prompt=base_prompt(prompt, system_prompt),
        meta=dict(meta or {}),
    )


def render_prompt(example: Example, tokenizer: Any = None, style: str = "chat") -> str:
    """The text a model is fed for ``example``.

    Args:
        example: the example.
        tokenizer: a Hugging Face tokenizer with a chat template (``style="chat"`` only).
        style: ``"chat"``: ``tokenizer.apply_chat_template(messages, add_generation_prompt=True,
            tokenize=False)``; ``"base"``: ``example.base_prompt``.
    """
    if style == "base":
        if not example.base_prompt:
            raise ValueError(f"example {example.id!r} has no base_prompt")
        return example.base_prompt + example.answer_prefix
    if style != "chat":
        raise ValueError(f"prompt style must be 'chat' or 'base', got {style!r}")
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "prompt style 'chat' needs a tokenizer with a chat template; this tokenizer has "
            "none (a base model?): use style='base' (DatasetConfig.prompt_style='base')"
        )
    text = tokenizer.apply_chat_template(
        [dict(m) for m in example.messages], add_generation_prompt=True, tokenize=False
    )
    assert isinstance(text, str), f"apply_chat_template returned {type(text)}"
    return text + example.answer_prefix
