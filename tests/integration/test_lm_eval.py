"""The lm-evaluation-harness model ``drllm`` against lm-eval's own ``hf`` model and stock HF.

A local multiple-choice task (20 ARC-Easy train rows from the shared data, written as Parquet in
lm-eval's task format) runs offline through ``lm_eval.simple_evaluate``:

* on the default path ``drllm`` gives the ``hf`` model's per-choice log-likelihoods (fp32
  tolerance), greedy flags, argmax and acc per doc -- on a tiny random Llama saved to a local
  directory and (slow) on SmolLM2-135M-Instruct;
* a fixed path with a skipped block gives other log-likelihoods, equal to the ``hf`` model on
  the same weights with that block removed and to the executor's own logits along that path;
* routers choose a path per context (several distinct paths over the 20 questions), and every
  choice is scored along the path its context alone routes to;
* ``loglikelihood_rolling`` over several windows and ``generate_until`` (stop strings, two
  generation-kwarg groups) match the ``hf`` model / stock greedy ``model.generate``;
* bad arguments fail with clear errors, and ``python -m drllm.jobs.lm_eval`` (lm-eval's CLI)
  runs the task with ``--model drllm`` and writes the same acc as the ``hf`` model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

for _name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_name, "1")

import lm_eval  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from drllm.inference.lm_eval import DrLLMEval  # noqa: E402
from drllm.inference.routed import RoutedModel  # noqa: E402
from drllm.models.executor import PathExecutor  # noqa: E402
from drllm.models.loading import ModelSpec, load_model  # noqa: E402
from drllm.models.tiny import tiny_model, tiny_tokenizer  # noqa: E402
from drllm.paths import InvalidPathError, LayerPath  # noqa: E402
from drllm.routers.checkpoint import RouterCheckpointError  # noqa: E402
from drllm.routers.features import permissive_constraints  # noqa: E402
from drllm.routers.module import Routers  # noqa: E402
from drllm.testing.models import without_layers  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TASK = "drllm_arc_easy_local"
DOCS = 20
L, D = 4, 64
SKIP_PATH = [1, 1, 0, 1]
RTOL, ATOL = 1e-5, 1e-4  # fp32; values are sums of ~20-40 log-probs of size ~5


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory, shared_data) -> Path:
    """20 ARC-Easy rows as Parquet plus a multiple-choice task YAML in lm-eval's format."""
    root = tmp_path_factory.mktemp("lm_eval_tasks")
    table = pq.read_table(shared_data / "ai2_arc" / "ARC-Easy" / "train.parquet").slice(0, DOCS)
    pq.write_table(table, root / "arc.parquet")
    (root / f"{TASK}.yaml").write_text(
        f"task: {TASK}\n"
        "dataset_path: parquet\n"
        f"dataset_kwargs:\n  data_files:\n    test: {root / 'arc.parquet'}\n"
        "output_type: multiple_choice\n"
        "test_split: test\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\n'
        'doc_to_target: "{{choices.label.index(answerKey)}}"\n'
        'doc_to_choice: "{{choices.text}}"\n'
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
    )
    return root


@pytest.fixture(scope="module")
def tasks(task_dir) -> TaskManager:
    return TaskManager(include_path=str(task_dir), include_defaults=False)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny_llama")
    tiny_model("llama", L, D, seed=3).save_pretrained(out)
    tiny_tokenizer().save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return load_model(ModelSpec(name=str(tiny_dir)))


def evaluate(model, tasks, **kwargs) -> dict:
    """``simple_evaluate`` of the local task with samples logged."""
    return lm_eval.simple_evaluate(model=model, tasks=[TASK], task_manager=tasks,
                                   log_samples=True, **kwargs)


def per_doc(result: dict) -> list[dict]:
    """``[{doc_id, target, loglik [choices], greedy [choices], acc}]`` ordered by doc."""
    rows = sorted(result["samples"][TASK], key=lambda s: s["doc_id"])
    return [{"doc_id": s["doc_id"], "target": s["target"],
             "loglik": [r[0][0] for r in s["resps"]], "greedy": [r[0][1] for r in s["resps"]],
             "acc": s["acc"], "acc_norm": s["acc_norm"], "arguments": s["arguments"]}
            for s in rows]


def assert_same_results(got: list[dict], want: list[dict]) -> None:
    assert [d["doc_id"] for d in got] == [d["doc_id"] for d in want] == list(range(DOCS))
    for a, b in zip(got, want):
        torch.testing.assert_close(torch.tensor(a["loglik"], dtype=torch.float64),
                                   torch.tensor(b["loglik"], dtype=torch.float64),
                                   rtol=RTOL, atol=ATOL)
        assert a["greedy"] == b["greedy"]
        assert max(range(len(a["loglik"])), key=a["loglik"].__getitem__) == \
            max(range(len(b["loglik"])), key=b["loglik"].__getitem__)
        assert (a["acc"], a["acc_norm"]) == (b["acc"], b["acc_norm"])


@pytest.fixture(scope="module")
def hf_default(tiny_dir, tasks) -> dict:
    return evaluate("hf", tasks, model_args=f"pretrained={tiny_dir},dtype=float32",
                    device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def drllm_default(tiny_dir, tasks) -> dict:
    return evaluate("drllm", tasks, model_args={"pretrained": str(tiny_dir)}, device="cpu",
                    batch_size=3)


def reference_scores(executor: PathExecutor, tok, arguments, path) -> list[float]:
    """Each ``(context, continuation)`` scored alone (no padding, no batch) along ``path``."""
    out = []
    for context, continuation in arguments:
        ctx = tok.encode(context)
        whole = tok.encode(context + continuation)
        ids = torch.tensor([whole[:-1]])
        logprobs = F.log_softmax(executor.logits(ids, None, [path])[0].float(), dim=-1)
        targets = torch.tensor(whole[len(ctx):])
        out.append(float(logprobs[len(ctx) - 1:].gather(1, targets[:, None]).sum()))
    return out


def test_default_path_matches_the_hf_model_per_example(hf_default, drllm_default):
    assert_same_results(per_doc(drllm_default), per_doc(hf_default))
    assert drllm_default["results"][TASK]["acc,none"] == hf_default["results"][TASK]["acc,none"]
    info = drllm_default["config"]
    assert info["drllm_policy"] == "default" and info["drllm_requests"] == 4 * DOCS
    assert info["drllm_mean_blocks_per_pass"] == L


def test_skip_path_matches_the_model_without_that_block(tiny, tasks, drllm_default):
    got = evaluate("drllm", tasks, model_args={"pretrained": tiny, "path": "1,1,0,1"},
                   batch_size=4)
    trimmed = HFLM(pretrained=without_layers(tiny.model, LayerPath(SKIP_PATH)),
                   tokenizer=tiny.tokenizer, batch_size=4)
    assert_same_results(per_doc(got), per_doc(evaluate(trimmed, tasks)))
    default = [x for d in per_doc(drllm_default) for x in d["loglik"]]
    skipped = [x for d in per_doc(got) for x in d["loglik"]]
    assert min(abs(a - b) for a, b in zip(default, skipped)) > 1e-2
    executor = PathExecutor(tiny.model, tiny.tokenizer)
    for doc in per_doc(got)[:5]:
        want = reference_scores(executor, tiny.tokenizer, doc["arguments"], SKIP_PATH)
        torch.testing.assert_close(torch.tensor(doc["loglik"]), torch.tensor(want),
                                   rtol=RTOL, atol=ATOL)
    assert got["config"]["drllm_policy"] == "path(EESE)"
    assert got["config"]["drllm_mean_blocks_per_pass"] == L - 1


def save_routers(directory: Path, model_id: str, num_layers: int = L, seed: int = 1) -> Path:
    torch.manual_seed(seed)  # seed 1: six distinct paths over the 20 questions
    Routers(num_layers, D, bottleneck=16, windows=8).save_pretrained(directory,
                                                                      base_model_id=model_id)
    return directory


def test_routers_score_each_choice_along_its_contexts_path(tiny, tasks, tmp_path):
    routers = save_routers(tmp_path / "routers", tiny.model_id)
    got = evaluate("drllm", tasks, model_args={"pretrained": tiny, "routers": str(routers)},
                   batch_size=4)
    routed = RoutedModel(tiny.model, tiny.tokenizer, Routers.from_pretrained(routers))
    paths = set()
    for doc in per_doc(got):
        contexts = {ctx for ctx, _ in doc["arguments"]}
        assert len(contexts) == 1
        (path,) = routed.route([tiny.tokenizer.encode(contexts.pop())])  # this context alone
        paths.add(path)
        if doc["doc_id"] < 10:
            want = reference_scores(routed.executor, tiny.tokenizer, doc["arguments"], path)
            torch.testing.assert_close(torch.tensor(doc["loglik"]), torch.tensor(want),
                                       rtol=RTOL, atol=ATOL)
    assert len(paths) >= 3, paths  # the contexts really do choose different paths
    assert got["config"]["drllm_distinct_scoring_paths"] == len(paths)
    assert got["config"]["drllm_policy"].startswith("routed(")


def test_rolling_loglikelihood_over_several_windows_matches_hf(tiny, shared_data, tmp_path):
    table = pq.read_table(shared_data / "ai2_arc" / "ARC-Easy" / "train.parquet").slice(20, 3)
    texts = [r["question"] for r in table.to_pylist()] + ["x"]
    requests = [Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)]
    hf = HFLM(pretrained=tiny.model, tokenizer=tiny.tokenizer, batch_size=2, max_length=24)
    ours = DrLLMEval(tiny, batch_size=2, max_length=24)
    assert max(len(tiny.tokenizer.encode(t)) for t in texts) > 2 * 24  # three windows or more
    torch.testing.assert_close(torch.tensor(ours.loglikelihood_rolling(requests)),
                               torch.tensor(hf.loglikelihood_rolling(requests)),
                               rtol=RTOL, atol=ATOL)
    # with routers, one path per document, chosen from its first window's tokens
    routers = save_routers(tmp_path / "routers", tiny.model_id)
    routed = DrLLMEval(tiny, routers=str(routers), batch_size=2, max_length=24)
    totals = routed.loglikelihood_rolling(requests)
    for text, total in zip(texts, totals):
        ids = tiny.tokenizer.encode(text)
        first = ([routed.prefix_token_id] + ids)[: min(24, len(ids))]  # the first input
        (path,) = routed.routed.route([first])
        fixed = DrLLMEval(tiny, path=list(path), max_length=24)
        assert total == pytest.approx(
            fixed.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])[0],
            rel=RTOL, abs=ATOL)


def hf_greedy(model, tok, prompt: str, max_new: int, until: list[str]) -> str:
    enc = tok(prompt, return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=max_new, do_sample=False)
    text = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    for stop in until:
        text = text.split(stop)[0]
    return text


def test_generate_until_matches_hf_greedy_generate(tiny):
    prompts = ["Question: Which gas do plants take in?\nAnswer:", "2+2=", "Once upon a time",
               "<|im_start|>user\nName a color.<|im_end|>\n<|im_start|>assistant\n"]
    free = [hf_greedy(tiny.model, tiny.tokenizer, p, 12, []) for p in prompts]
    stop = free[0][3:5]  # a stop string that does occur, in the first output at least
    assert stop and stop in free[0]
    kw_stop = {"until": [stop], "max_gen_toks": 12, "do_sample": False}
    kw_free = {"until": [], "max_gen_toks": 12}
    requests = [Instance("generate_until", {}, (p, kw), i)
                for i, (p, kw) in enumerate([(p, kw_stop) for p in prompts] +
                                            [(p, kw_free) for p in prompts])]
    want = [hf_greedy(tiny.model, tiny.tokenizer, p, 12, [stop]) for p in prompts] + free
    assert DrLLMEval(tiny, batch_size=3).generate_until(requests) == want
    assert want[0] == free[0][:3]
    skipped = DrLLMEval(tiny, path=SKIP_PATH, batch_size=3).generate_until(requests[4:])
    trimmed = without_layers(tiny.model, LayerPath(SKIP_PATH))
    assert skipped == [hf_greedy(trimmed, tiny.tokenizer, p, 12, []) for p in prompts]
    assert skipped != free
    with pytest.raises(ValueError, match="greedily"):
        DrLLMEval(tiny).generate_until(
            [Instance("generate_until", {}, ("hi", {"do_sample": True, "temperature": 0.7}), 0)])


def test_bad_arguments_are_clear_errors(tiny, tiny_dir, tmp_path):
    with pytest.raises(InvalidPathError, match=r"path=\[1, 1, 0\].*3 decisions but the model "
                                               r"has 4 blocks"):
        DrLLMEval(tiny, path=[1, 1, 0])
    with pytest.raises(InvalidPathError, match="decision 5"):
        DrLLMEval(tiny, path="1,5,1,1")
    with pytest.raises(ValueError, match="routers= or path=, not both"):
        DrLLMEval(tiny, routers=str(tmp_path), path="EEEE")
    with pytest.raises(ValueError, match="alpha=0.5 / gate=None need routers="):
        DrLLMEval(tiny, alpha=0.5)
    with pytest.raises(ValueError, match="positive integer batch_size"):
        DrLLMEval(tiny, batch_size="auto")
    other = save_routers(tmp_path / "other", tiny.model_id, num_layers=L + 2)
    with pytest.raises(RouterCheckpointError, match=r"blocks \(L\) 6 but the model has blocks "
                                                    r"\(L\) 4"):
        DrLLMEval(tiny, routers=str(other))
    renamed = save_routers(tmp_path / "renamed", "some-other-model")
    with pytest.raises(RouterCheckpointError, match="model id 'some-other-model'"):
        lm_eval.api.registry.get_model("drllm").create_from_arg_string(
            f"pretrained={tiny_dir},routers={renamed}")
    assert DrLLMEval(tiny, routers=str(renamed), check_model_id=False).routed is not None


def test_entry_point_runs_lm_evals_cli_offline(tiny_dir, task_dir, hf_default, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env["HF_HOME"] = str(tmp_path / "hf_home")  # an empty cache: nothing to find offline
    proc = subprocess.run(
        [sys.executable, "-m", "drllm.jobs.lm_eval", "--model", "drllm",
         "--model_args", f"pretrained={tiny_dir}", "--include_path", str(task_dir),
         "--tasks", TASK, "--limit", "5", "--device", "cpu", "--batch_size", "2",
         "--output_path", str(tmp_path / "out")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    want = sum(d["acc"] for d in per_doc(hf_default)[:5]) / 5
    rows = [line.split("|") for line in proc.stdout.splitlines() if line.startswith(f"|{TASK}")]
    assert len(rows) == 1 and rows[0][5].strip() == "acc", proc.stdout[-2000:]
    assert float(rows[0][7]) == pytest.approx(want)
    (written,) = (tmp_path / "out").rglob("results_*.json")
    result = json.loads(written.read_text())
    assert result["results"][TASK]["acc,none"] == pytest.approx(want)
    assert result["config"]["model"] == "drllm" and result["config"]["drllm_requests"] == 20


@pytest.mark.slow
def test_smollm2_default_path_matches_the_hf_model_per_example(smollm2, tasks):
    """The real model: 20 ARC-Easy questions, 80 scored choices, drllm == lm-eval's hf."""
    hf = HFLM(pretrained=smollm2.model, tokenizer=smollm2.tokenizer, batch_size=4)
    want = evaluate(hf, tasks)
    got = evaluate(DrLLMEval(smollm2, batch_size=4), tasks)
    assert_same_results(per_doc(got), per_doc(want))
    assert got["results"][TASK]["acc,none"] == want["results"][TASK]["acc,none"]


def _loglik_requests(shared_data, path):
    """The task's 20 rows as the search's log-likelihood requests (reward: loglik, base)."""
    from drllm.data import DatasetConfig
    from drllm.data.arc import ArcAdapter
    from drllm.types import EvalRequest

    table = pq.read_table(shared_data / "ai2_arc" / "ARC-Easy" / "train.parquet").slice(0, DOCS)
    cfg = DatasetConfig(name="arc_easy", reward="loglik", prompt_style="base",
                        grader="mc_letter_lenient")
    adapter = ArcAdapter("arc_easy", "ARC-Easy")
    examples = [adapter.parse(row, i, cfg) for i, row in enumerate(table.to_pylist())]
    return [EvalRequest(e.id, e.base_prompt, e.gold, e.grader, LayerPath(path),
                        choices=e.choices) for e in examples]


def test_loglik_reward_equals_lm_evals_hf_acc_on_the_default_path(tiny, shared_data, hf_default):
    """The search's loglik reward (shared prefill) is lm-eval's acc, per document."""
    from drllm.distributed.executor_evaluator import ExecutorEvaluator

    evaluator = ExecutorEvaluator(tiny.model, tiny.tokenizer, model_id="tiny")
    got = evaluator.evaluate(_loglik_requests(shared_data, [1] * L))
    want = per_doc(hf_default)
    assert [e.reward for e in got] == [d["acc"] for d in want]
    for e, d in zip(got, want):
        lls, gold = d["loglik"], d["target"]
        margin = lls[gold] - max(ll for j, ll in enumerate(lls) if j != gold)
        assert e.margin == pytest.approx(margin, abs=1e-3)


def test_loglik_reward_equals_the_drllm_model_on_an_edited_path(tiny, tasks, shared_data):
    from drllm.distributed.executor_evaluator import ExecutorEvaluator

    evaluator = ExecutorEvaluator(tiny.model, tiny.tokenizer, model_id="tiny")
    got = evaluator.evaluate(_loglik_requests(shared_data, SKIP_PATH))
    want = per_doc(evaluate("drllm", tasks, model_args={"pretrained": tiny, "path": "1,1,0,1"},
                            batch_size=4))
    assert [e.reward for e in got] == [d["acc"] for d in want]
