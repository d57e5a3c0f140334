"""notebooks/evaluation.ipynb runs on a tiny evaluation (tiny random model, tiny routers) and plots.

The run: default, routed at three alphas and matched static policies on a few synthetic
questions, in process; the notebook runs through :func:`drllm.notebooks.execute_notebook` (the
mechanism of ``python -m drllm.jobs.notebook``), on a kernel of this very interpreter.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

from drllm.data import DatasetConfig, load_examples
from drllm.data.prompts import render_prompt
from drllm.distributed.config import PoolConfig
from drllm.evaluation.config import EvaluationConfig
from drllm.evaluation.runner import EvalSet, run_evaluation
from drllm.files import atomic_write_json
from drllm.models.tiny import tiny_tokenizer
from drllm.notebooks import execute_notebook
from drllm.routers.module import Routers
from drllm.testing.models import TinyModelLoader

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "evaluation.ipynb"


@pytest.fixture(scope="module")
def tiny_eval(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny_eval")
    loader = TinyModelLoader("qwen2", 4, 64, 1)
    Routers(4, 64, bottleneck=8, windows=4).save_pretrained(root / "routers",
                                                           base_model_id=loader().model_id)
    data = DatasetConfig(num_examples=5, levels=(1,), max_new_tokens=3)
    tok = tiny_tokenizer()
    es = EvalSet(data, load_examples(data).examples, importance=(0.2, 0.1, 0.3, 0.4))
    config = EvaluationConfig(policies=("default", "routed", "static"),
                              routers=str(root / "routers"), alphas=(-0.5, 0.0, 0.5),
                              static=("importance",))
    summary = run_evaluation([es], config, render=lambda e: render_prompt(e, tok),
                             model=loader, out_dir=root / "results",
                             pool_config=PoolConfig(requests_per_actor=8), in_process=True,
                             progress=False)
    atomic_write_json(root / "summary.json", summary)
    return root


def test_evaluation_notebook_runs_and_plots(tiny_eval, tmp_path, monkeypatch):
    monkeypatch.setenv("DRLLM_EVAL_DIR", str(tiny_eval))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert "parameters" in nb.cells[1].metadata.get("tags", [])
    probe = tmp_path / "probe.ipynb"
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    nbformat.write(nb, probe)
    executed = execute_notebook(probe, tmp_path / "executed.ipynb", timeout=300)

    def text(cell) -> str:
        return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")

    code = [c for c in executed.cells if c.cell_type == "code"]
    assert Path(text(code[0]).strip()) == Path(sys.executable)
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    images = [o for c in code for o in c.outputs
              if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(images) >= 3, f"expected the 3 figures, got {len(images)}"
    everything = "\n".join(text(c) for c in code)
    assert "L = 4 blocks" in everything and "3 routed policies drawn" in everything
    for alpha in ("-0.50", "+0.00", "+0.50"):
        assert f"alpha {alpha}: accuracy" in everything
