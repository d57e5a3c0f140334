"""Test doubles: the dummy evaluator, known-answer rewards, a tiny-model loader.

``drllm.testing.evaluators`` imports neither torch nor ray; ``drllm.testing.models`` imports
torch (a tiny HF model).
"""

from drllm.testing.evaluators import (
    ConstantReward,
    DummyEvaluator,
    KeyedBlockReward,
    RewardFn,
    hash_reward,
)

__all__ = ["ConstantReward", "DummyEvaluator", "KeyedBlockReward", "RewardFn", "hash_reward"]
