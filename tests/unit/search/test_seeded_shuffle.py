"""The uniform prior's inlined shuffle draws exactly what ``random.Random.shuffle`` draws (the
search's recorded results depend on it), and falls back for RNGs without getrandbits."""

from __future__ import annotations

import random

import pytest

from drllm.search.prior import seeded_shuffle


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 89, 300])
def test_same_order_and_same_rng_state_as_random_shuffle(n):
    for seed in range(50):
        expected, got = list(range(n)), list(range(n))
        reference, rng = random.Random(seed), random.Random(seed)
        reference.shuffle(expected)
        seeded_shuffle(got, rng)
        assert got == expected, (seed, n)
        assert rng.getstate() == reference.getstate()


def test_an_rng_without_getrandbits_falls_back_to_its_own_shuffle():
    class Coarse(random.Random):
        def random(self) -> float:  # overriding random() alone: _randbelow without bits
            return 0.5

    items = list(range(10))
    seeded_shuffle(items, Coarse(0))
    expected = list(range(10))
    Coarse(0).shuffle(expected)
    assert items == expected and items != list(range(10))
