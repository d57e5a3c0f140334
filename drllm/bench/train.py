"""Router-training throughput benchmark on synthetic features of a real model's shape.

Defaults follow SmolLM2-135M (L = 30 blocks, d = 576) and the paper's recipe (W = 8 windows,
b = 128, batch 16, 25 epochs): 4,000 examples x 25 epochs = 6,250 optimizer steps. Features are
random fp16 windows (the storage dtype of the feature pass); labels are drawn with the paper's
label balance (~7.6 % skip, ~90 % execute, ~2.4 % repeat). The number measured is the
in-process training loop of :func:`drllm.routers.training.fit` (no Ray start-up).

FLOPs counted: the matmuls of forward + backward actually run per example
(:meth:`StackedRouters.train_flops_per_example`: about 2x the forward ``2 L b (W d + 3)``, not
3x, because the input features need no gradient).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from drllm.routers.module import StackedRouters
from drllm.routers.training import TrainConfig, fit

logger = logging.getLogger(__name__)

PAPER_LABEL_BALANCE = (0.076, 0.900, 0.024)


def synthetic_features(
    num_examples: int, num_layers: int, hidden_size: int, windows: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random ``(features fp16 [N, L, W, d], labels [N, L], wmask [N, W])``.

    About one row in eight has a short prompt (fewer than ``windows`` valid windows).
    """
    gen = torch.Generator().manual_seed(seed)
    features = torch.empty(num_examples, num_layers, windows, hidden_size, dtype=torch.float16)
    chunk = max(1, 2**24 // (num_layers * windows * hidden_size))
    for start in range(0, num_examples, chunk):
        stop = min(num_examples, start + chunk)
        features[start:stop] = torch.randn(
            stop - start, num_layers, windows, hidden_size, generator=gen
        )
    probs = torch.tensor(PAPER_LABEL_BALANCE)
    labels = torch.multinomial(probs, num_examples * num_layers, replacement=True, generator=gen)
    labels = labels.view(num_examples, num_layers)
    valid = torch.full((num_examples,), windows)
    short = torch.rand(num_examples, generator=gen) < 0.125
    valid[short] = torch.randint(1, windows + 1, (int(short.sum()),), generator=gen)
    wmask = torch.arange(windows).unsqueeze(0) < valid.unsqueeze(1)
    return features, labels, wmask


def run_train_benchmark(
    num_examples: int = 4000,
    num_layers: int = 30,
    hidden_size: int = 576,
    windows: int = 8,
    epochs: int = 25,
    batch_size: int = 16,
    bottleneck: int = 128,
    val_fraction: float = 0.0,
    seed: int = 0,
    device: str | None = None,
) -> dict[str, Any]:
    """Train routers on synthetic features and report throughput.

    Returns:
        ``{"train_seconds", "examples_per_s", "steps", "steps_per_s", "ms_per_step",
        "train_gflops_per_s", "setup_seconds", "device", "torch_threads", ...shape}`` where
        ``train_seconds`` is the wall time of the epoch loop (excluding feature synthesis).
    """
    t0 = time.perf_counter()
    features, labels, wmask = synthetic_features(
        num_examples, num_layers, hidden_size, windows, seed
    )
    setup_seconds = time.perf_counter() - t0
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        bottleneck=bottleneck,
        windows=windows,
        seed=seed,
        val_fraction=val_fraction,
    )
    routers, history = fit(features, labels, wmask, cfg, device=device)
    steps = sum(e["train"]["steps"] for e in history.epochs)
    examples = sum(e["train"]["examples"] for e in history.epochs)
    train_seconds = history.seconds
    flops = StackedRouters.from_routers(routers).train_flops_per_example() * examples
    result = {
        "num_examples": num_examples,
        "num_layers": num_layers,
        "hidden_size": hidden_size,
        "windows": windows,
        "bottleneck": bottleneck,
        "epochs": epochs,
        "batch_size": batch_size,
        "steps": steps,
        "train_seconds": train_seconds,
        "examples_per_s": examples / train_seconds,
        "steps_per_s": steps / train_seconds,
        "ms_per_step": 1000.0 * train_seconds / steps,
        "train_gflops_per_s": flops / train_seconds / 1e9,
        "setup_seconds": setup_seconds,
        "device": str(device or ("cuda" if torch.cuda.is_available() else "cpu")),
        "torch_threads": torch.get_num_threads(),
        "final_train_loss": history.epochs[-1]["train"]["loss"],
    }
    logger.info("router training benchmark: %s", result)
    return result


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-examples", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    print(
        json.dumps(
            run_train_benchmark(
                num_examples=args.num_examples, epochs=args.epochs, device=args.device
            ),
            indent=2,
        )
    )
