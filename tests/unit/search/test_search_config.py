"""MCTSConfig validation, evaluation normalization, SearchTree argument checks, import purity."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from drllm.paths import LayerPath, PathConstraints
from drllm.search import MCTSConfig, SearchTree, as_evaluation
from drllm.types import Evaluation

REPO = Path(__file__).resolve().parents[3]


def test_defaults_are_the_papers() -> None:
    cfg = MCTSConfig()
    assert (cfg.num_simulations, cfg.c, cfg.length_penalty, cfg.epsilon) == (50, 1.8, 3.0, 0.1)
    assert (cfg.max_consecutive_skips, cfg.max_cost_factor, cfg.early_stop) == (2, 2.0, True)
    assert (cfg.early_stop_margin, cfg.success_reward, cfg.seed) == (2, 1.0, 0)
    assert cfg.constraints == PathConstraints(2, 2.0, 1)


def test_defaults_beyond_the_paper() -> None:
    cfg = MCTSConfig()
    assert (cfg.expansion, cfg.widen_k, cfg.widen_alpha, cfg.patience) == ("widening", 1.0, 0.5, 0)
    assert (cfg.prior, cfg.prior_temperature) == ("uniform", 1.0)
    assert MCTSConfig(expansion="full", prior="router", patience=8).patience == 8


def test_constraints_follow_the_knobs() -> None:
    cfg = MCTSConfig(max_consecutive_skips=1, max_cost_factor=1.5, min_executed=3)
    assert cfg.constraints == PathConstraints(
        max_consecutive_skips=1, max_cost_factor=1.5, min_executed=3
    )


def test_ints_accepted_for_float_knobs() -> None:
    cfg = MCTSConfig(c=2, length_penalty=0, epsilon=1, max_cost_factor=1)
    assert cfg.constraints.max_cost_factor == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_simulations": 0}, "num_simulations must be >= 1, got 0"),
        ({"num_simulations": 2.5}, "num_simulations must be an integer"),
        ({"num_simulations": True}, "num_simulations must be an integer"),
        ({"c": -0.1}, "c must be >= 0"),
        ({"c": float("nan")}, "c must be a finite number"),
        ({"length_penalty": float("inf")}, "length_penalty must be a finite number"),
        ({"length_penalty": "3"}, "length_penalty must be a finite number"),
        ({"epsilon": 1.5}, r"epsilon must be in \[0, 1\], got 1.5"),
        ({"epsilon": -0.01}, r"epsilon must be in \[0, 1\]"),
        ({"max_consecutive_skips": -1}, "max_consecutive_skips must be >= 0"),
        ({"max_cost_factor": 0.9}, r"max_cost_factor must be in \[1, 2\], got 0.9"),
        ({"max_cost_factor": 2.5}, r"max_cost_factor must be in \[1, 2\]"),
        ({"min_executed": -1}, "min_executed must be >= 0"),
        ({"early_stop": 1}, "early_stop must be a bool"),
        ({"early_stop_margin": -2}, "early_stop_margin must be >= 0"),
        ({"success_reward": float("nan")}, "success_reward must be a finite number"),
        ({"seed": 1.0}, "seed must be an integer"),
        ({"expansion": "wide"}, r"expansion must be one of \['widening', 'full'\], got 'wide'"),
        ({"widen_k": 0}, "widen_k must be > 0, got 0"),
        ({"widen_k": float("inf")}, "widen_k must be a finite number"),
        ({"widen_alpha": 1.5}, r"widen_alpha must be in \[0, 1\]"),
        ({"widen_alpha": -0.1}, r"widen_alpha must be in \[0, 1\]"),
        ({"patience": -1}, "patience must be >= 0"),
        ({"patience": 1.5}, "patience must be an integer"),
        ({"prior": "learned"}, r"prior must be one of \['uniform', 'layer_importance', 'router'\]"),
        ({"prior_temperature": 0.0}, "prior_temperature must be > 0"),
        ({"prior_temperature": -1}, "prior_temperature must be > 0, got -1"),
    ],
)
def test_invalid_config_is_rejected_with_a_clear_message(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MCTSConfig(**kwargs)


def test_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        MCTSConfig().c = 1.0  # type: ignore[misc]


def test_as_evaluation() -> None:
    assert as_evaluation(1) == Evaluation(reward=1.0)
    assert as_evaluation(0.5) == Evaluation(reward=0.5, response="")
    ev = Evaluation(reward=1.0, response="B", layers_executed=40, reason="match")
    assert as_evaluation(ev) is ev
    with pytest.raises(ValueError, match="finite"):
        as_evaluation(float("nan"))
    with pytest.raises(ValueError, match="finite"):
        as_evaluation(Evaluation(reward=float("inf")))
    with pytest.raises(ValueError, match="Evaluation or a float reward, got str"):
        as_evaluation("1.0")  # type: ignore[arg-type]
    # a failed evaluation is not a reward: passed through, whatever its reward field holds
    failed = Evaluation(reward=0.0, reason="worker died", failed=True)
    assert as_evaluation(failed) is failed
    nan_failed = Evaluation(reward=float("nan"), failed=True)
    assert as_evaluation(nan_failed) is nan_failed


def test_tree_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="num_layers must be >= 1"):
        SearchTree(0)
    with pytest.raises(ValueError, match="num_layers must be an integer"):
        SearchTree(3.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="config must be an MCTSConfig"):
        SearchTree(4, {"c": 1.0})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lower MCTSConfig.min_executed"):
        SearchTree(3, MCTSConfig(min_executed=4))
    with pytest.raises(ValueError, match="k >= 1"):
        SearchTree(4).ask(0)


def test_tell_rejects_paths_not_pending_and_bad_rewards() -> None:
    tree = SearchTree(4, MCTSConfig(seed=3))
    root = LayerPath.default(4)
    with pytest.raises(ValueError, match="never handed out"):
        tree.tell(root, 1.0)
    assert tree.ask(3) == [root]  # the root goes out alone, first
    assert tree.ask(3) == []  # nothing else until its reward arrives
    assert not tree.done and tree.pending == (root,)
    with pytest.raises(RuntimeError, match="default path's reward"):
        tree.result()
    with pytest.raises(ValueError, match="finite"):
        tree.tell(root, float("nan"))
    assert tree.pending == (root,)  # a rejected result leaves the path pending
    tree.tell((1, 1, 1, 1), Evaluation(reward=0.0, response="no"))  # a plain tuple works
    with pytest.raises(ValueError, match="already told"):
        tree.tell(root, 0.0)
    (path,) = tree.ask(1)
    assert path.cost != 8  # one edit away from the root
    with pytest.raises(ValueError, match="never handed out"):
        tree.tell(LayerPath.parse("RRRR"), 1.0)
    assert tree.result().default_response == "no"


def test_search_package_imports_no_torch_ray_transformers() -> None:
    code = (
        "import sys, drllm.search, drllm.search.tree, drllm.search.runner\n"
        "heavy = sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('torch', 'ray', 'transformers', 'numpy'))\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "", f"drllm.search pulled in: {out.stdout.strip()}"


