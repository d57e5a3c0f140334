"""Expansion priors: uniform order (the paper's stream), block logits, their constructors."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from drllm.paths import Action, LayerPath, legal_actions
from drllm.search import (
    BlockPrior,
    MCTSConfig,
    Prior,
    SearchTree,
    UniformPrior,
    prior_from_config,
    run,
)
from drllm.search.prior import REPEAT_OFFSET


def test_uniform_prior_is_the_seeded_shuffle_the_tree_pops_from_the_end() -> None:
    actions = legal_actions(LayerPath.default(7))
    order = UniformPrior().order(LayerPath.default(7), actions, random.Random(5))
    shuffled = list(actions)
    random.Random(5).shuffle(shuffled)
    assert order == shuffled[::-1] and actions == legal_actions(LayerPath.default(7))


@pytest.mark.parametrize("mode", ["full", "widening"])
def test_no_prior_and_uniform_prior_give_the_same_search(mode: str) -> None:
    def reward(p: LayerPath) -> float:
        return (sum(i * d for i, d in enumerate(p)) % 5) / 5

    config = MCTSConfig(seed=4, early_stop=False, expansion=mode)
    assert run(8, reward, config) == run(8, reward, config, prior=UniformPrior())


def test_block_prior_expands_a_strongly_preferred_block_first() -> None:
    skip = [0.0] * 10
    skip[7] = 10.0
    prior = BlockPrior(skip, [0.0] * 10, temperature=0.5)
    for seed in range(20):
        order = prior.order(LayerPath.default(10), legal_actions(LayerPath.default(10)), random.Random(seed))
        assert order[0] == Action("skip", 7, 1)
        assert set(order[1:3]) == {Action("skip", 6, 2), Action("skip", 7, 2)}  # mean 5
    # the tree expands it first: the first path after the root skips block 7
    calls: list[LayerPath] = []

    def evaluate(p: LayerPath) -> float:
        calls.append(p)
        return float(p[7] == 0)

    result = run(10, evaluate, MCTSConfig(seed=3), prior=prior)
    assert calls[1] == LayerPath.parse("EEEEEEESEE") and result.simulations == 2


def test_block_prior_sampling_is_deterministic_per_seed_and_follows_the_softmax() -> None:
    prior = BlockPrior([1.0, 0.0], [0.0, -1.0])
    actions = legal_actions(LayerPath.default(2))  # skip 0, repeat 0, skip 1, repeat 1
    assert len(actions) == 4
    one = [prior.order(LayerPath.default(2), actions, random.Random(s)) for s in range(50)]
    two = [prior.order(LayerPath.default(2), actions, random.Random(s)) for s in range(50)]
    assert one == two and len({tuple(o) for o in one}) > 1
    rng = random.Random(0)
    firsts = Counter(prior.order(LayerPath.default(2), actions, rng)[0] for _ in range(6000))
    weights = {a: math.exp(prior.logit(a)) for a in actions}
    total = sum(weights.values())
    for action in actions:
        assert firsts[action] / 6000 == pytest.approx(weights[action] / total, abs=0.025)


def test_block_prior_temperature_flattens_the_order() -> None:
    skip = [float(i) for i in range(10)]
    actions = legal_actions(LayerPath.default(10))
    cold = BlockPrior(skip, [-20.0] * 10, temperature=0.01)
    order = cold.order(LayerPath.default(10), actions, random.Random(0))
    assert order[0] == Action("skip", 9, 1) and all(a.kind == "repeat" for a in order[-10:])
    hot = BlockPrior(skip, [-20.0] * 10, temperature=1e6)
    firsts = Counter(hot.order(LayerPath.default(10), actions, random.Random(s))[0] for s in range(300))
    assert len(firsts) > 15  # close to uniform over the 29 edits


def test_block_prior_validation() -> None:
    with pytest.raises(ValueError, match="repeat_logits has 3 entries but skip_logits has 4"):
        BlockPrior([0.0] * 4, [0.0] * 3)
    with pytest.raises(ValueError, match="skip_logits is empty"):
        BlockPrior([], [])
    with pytest.raises(ValueError, match=r"skip_logits\[1\] must be finite"):
        BlockPrior([0.0, math.inf], [0.0, 0.0])
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        BlockPrior([0.0], [0.0], temperature=0.0)
    with pytest.raises(ValueError, match="BlockPrior has logits for 4 blocks but the model has 6"):
        SearchTree(6, MCTSConfig(), BlockPrior([0.0] * 4, [0.0] * 4))
    with pytest.raises(TypeError, match="prior must be a drllm.search.Prior"):
        SearchTree(6, MCTSConfig(), lambda path: [])  # type: ignore[arg-type]


def test_from_layer_importance_tries_unimportant_blocks_first() -> None:
    importance = [0.9, 0.8, 0.05, 0.7, 0.6, 0.85]
    prior = BlockPrior.from_layer_importance(importance, temperature=0.05)
    mean = sum(importance) / 6
    std = math.sqrt(sum((v - mean) ** 2 for v in importance) / 6)
    assert prior.skip_logits == pytest.approx([-(v - mean) / std for v in importance])
    assert prior.repeat_logits == pytest.approx([REPEAT_OFFSET] * 6)
    assert REPEAT_OFFSET == pytest.approx(math.log(2.3 / 7.6))
    order = prior.order(LayerPath.default(6), legal_actions(LayerPath.default(6)), random.Random(0))
    assert order[0] == Action("skip", 2, 1)
    # equal importance: every skip logit 0, repeats after skips on average
    flat = BlockPrior.from_layer_importance([0.3] * 4)
    assert flat.skip_logits == (0.0,) * 4 and flat.repeat_logits == (REPEAT_OFFSET,) * 4


def test_from_layer_importance_validation() -> None:
    with pytest.raises(ValueError, match="importance is empty"):
        BlockPrior.from_layer_importance([])
    with pytest.raises(ValueError, match=r"importance must be >= 0; blocks \[1\]"):
        BlockPrior.from_layer_importance([0.1, -0.2, 0.3])
    with pytest.raises(ValueError, match=r"importance\[0\] must be finite"):
        BlockPrior.from_layer_importance([math.nan, 0.2])
    with pytest.raises(ValueError, match="logits for 3 blocks but the model has 4"):
        SearchTree(4, MCTSConfig(), BlockPrior.from_layer_importance([0.1, 0.2, 0.3]))


def test_from_router_probs_logits() -> None:
    probs = [[0.2, 0.7, 0.1], [0.5, 0.25, 0.25], [0.0, 1.0, 0.0], [2.0, 1.0, 1.0]]
    prior = BlockPrior.from_router_probs(probs, temperature=2.0)
    assert prior.temperature == 2.0 and prior.num_layers == 4
    assert prior.skip_logits[:2] == pytest.approx([math.log(0.2 / 0.7), math.log(2.0)])
    assert prior.repeat_logits[:2] == pytest.approx([math.log(0.1 / 0.7), 0.0])
    assert prior.skip_logits[2] == pytest.approx(math.log(1e-6))  # floored, finite
    assert prior.skip_logits[3] == pytest.approx(math.log(2.0))  # rows renormalized


def test_from_router_probs_validation() -> None:
    with pytest.raises(ValueError, match="probs is empty"):
        BlockPrior.from_router_probs([])
    with pytest.raises(ValueError, match=r"probs\[1\] has 2 entries; each block needs 3"):
        BlockPrior.from_router_probs([[0.1, 0.8, 0.1], [0.5, 0.5]])
    with pytest.raises(ValueError, match=r"probs\[0\] = .* is not a probability row"):
        BlockPrior.from_router_probs([[-0.1, 0.8, 0.3]])
    with pytest.raises(ValueError, match=r"probs\[0\] = .* is not a probability row"):
        BlockPrior.from_router_probs([[0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="logits for 2 blocks but the model has 5"):
        SearchTree(5, MCTSConfig(), BlockPrior.from_router_probs([[0.1, 0.8, 0.1]] * 2))


def test_prior_from_config() -> None:
    assert isinstance(prior_from_config("uniform"), UniformPrior)
    imp = prior_from_config("layer_importance", 0.5, importance=[0.1, 0.2, 0.3])
    assert isinstance(imp, BlockPrior) and imp.temperature == 0.5
    router = prior_from_config("router", router_probs=[[0.1, 0.8, 0.1]] * 3)
    assert isinstance(router, BlockPrior) and router.num_layers == 3
    with pytest.raises(ValueError, match="needs importance="):
        prior_from_config("layer_importance")
    with pytest.raises(ValueError, match="needs router_probs="):
        prior_from_config("router")
    with pytest.raises(ValueError, match="unknown prior 'learned'"):
        prior_from_config("learned")


def test_a_custom_prior_must_return_a_permutation() -> None:
    class Broken(Prior):
        def order(self, path: LayerPath, actions: list[Action], rng: random.Random) -> list[Action]:
            return actions[:-1]

    tree = SearchTree(4, MCTSConfig(), Broken())
    tree.tell(*tree.ask(1), 0.0)
    with pytest.raises(ValueError, match="must return a permutation of the 11 legal edits"):
        tree.ask(1)


def test_config_prior_name_does_not_build_a_prior() -> None:
    # the tree uses the object it is given; the name is for the caller
    config = MCTSConfig(prior="layer_importance", seed=2)
    assert isinstance(SearchTree(5, config).prior, UniformPrior)

    def reward(p: LayerPath) -> float:
        return float(p[1] == 0)

    assert run(5, reward, config) == run(5, reward, MCTSConfig(seed=2))
