"""notebooks/supervision.ipynb runs on a tiny run (shards -> features -> routers) and plots.

The run: shards of hand-built search results over a tiny model's chat prompts (two datasets,
paths with skips and repeats), the feature pass in process, routers trained in process and
saved with ``save_pretrained``. The notebook runs with nbclient on a kernelspec written here
that points at this interpreter (the venv), which the first injected cell double-checks.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from drllm.bench.train import random_path, write_synthetic_shards
from drllm.models.loading import LoadedModel
from drllm.models.tiny import tiny_model, tiny_tokenizer
from drllm.routers.feature_store import load_features
from drllm.routers.features import FeatureConfig, run_feature_pass
from drllm.routers.training import TrainConfig, fit
from drllm.types import Example

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "supervision.ipynb"
L, D, W = 6, 64, 4


class TinyLoader:
    model_id = "tiny-qwen2-L6"

    def __call__(self) -> LoadedModel:
        return LoadedModel(tiny_model("qwen2", L, D, seed=2), tiny_tokenizer(), self.model_id,
                           L, D, "qwen2")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_run")
    rng = random.Random(0)
    tok = tiny_tokenizer()
    questions = [f"Question {i}: what is {i} squared?" for i in range(40)]
    examples = [Example(id=f"x{i}", dataset=("arith", "trivia")[i % 2], split="train",
                        prompt=q, messages=({"role": "user", "content": q},), gold=str(i * i),
                        grader="exact") for i, q in enumerate(questions)]
    prompts = [tok.apply_chat_template([dict(e.messages[0])], add_generation_prompt=True,
                                       tokenize=False) for e in examples]
    paths = [random_path(L, rng, edits=rng.randint(0, 3)) for _ in examples]
    write_synthetic_shards(root / "shards", examples, prompts, paths, model_id=TinyLoader.model_id,
                           rows_per_shard=16)
    features = root / "shards" / "features"
    run_feature_pass(root / "shards", features, TinyLoader(), FeatureConfig(windows=W),
                     progress=False, in_process=True)
    data = load_features(features)
    cfg = TrainConfig(epochs=3, warmup_steps=2, batch_size=8, windows=W, bottleneck=16,
                      val_fraction=0.25)
    routers, history = fit(data.features, data.labels, data.wmask, cfg, ids=data.example_ids,
                           device="cpu")
    routers.save_pretrained(root / "routers", base_model_id=TinyLoader.model_id,
                            class_counts=history.class_counts, train_config=cfg,
                            metrics=history.final_metrics)
    return {"shards": root / "shards", "routers": root / "routers", "features": features}


def venv_kernel(tmp_path: Path) -> KernelManager:
    """A kernel manager whose only kernelspec runs ipykernel on this very interpreter."""
    spec_dir = tmp_path / "kernels" / "drllm-venv"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "drllm venv", "language": "python",
    }))
    ksm = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")], ensure_native_kernel=False)
    return KernelManager(kernel_name="drllm-venv", kernel_spec_manager=ksm)


def test_notebook_runs_and_plots(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("DRLLM_SHARDS_DIR", str(tiny_run["shards"]))
    monkeypatch.setenv("DRLLM_ROUTERS_DIR", str(tiny_run["routers"]))
    monkeypatch.setenv("DRLLM_FEATURES_DIR", str(tiny_run["features"]))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert "parameters" in nb.cells[1].metadata.get("tags", [])
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    client = NotebookClient(nb, km=venv_kernel(tmp_path), timeout=300,
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    nbformat.write(nb, tmp_path / "executed.ipynb")

    def text(cell) -> str:
        return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")

    assert Path(text(nb.cells[0]).strip()) == Path(sys.executable)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(images) >= 4, f"expected the 4 figures, got {len(images)}"
    everything = "\n".join(text(c) for c in nb.cells if c.cell_type == "code")
    assert "40 examples (40 solved), L = 6 blocks" in everything
    assert "max |difference| vs checkpoint: 0.0000" in everything
