"""The lm-evaluation-harness model ``drllm``: lm-eval's tasks and metrics on drllm's layer paths.

Importing this module registers :class:`DrLLMEval` under the name ``drllm`` in lm-eval's model
registry and does nothing else (no model is loaded until lm-eval builds one)::

    import lm_eval, drllm.inference.lm_eval  # noqa: F401 -- registers "drllm"
    lm_eval.simple_evaluate(model="drllm", model_args={"pretrained": "smollm2-135m-instruct",
                            "routers": "outputs/train/smollm2-135m-instruct/routers"}, tasks=[...])

or from the shell ``python -m drllm.jobs.lm_eval --model drllm --model_args ... --tasks ...``.

``model_args``:

* ``pretrained`` -- a :class:`~drllm.models.loading.ModelSpec` name (the embedded
  ``smollm2-135m-instruct``, a local Hugging Face directory, a ``.gguf`` file, a hub id) or an
  already loaded :class:`~drllm.models.loading.LoadedModel`; ``dtype`` (default ``float32``),
  ``device`` (lm-eval's ``--device``; a CUDA device on a machine without CUDA falls back to the
  CPU with a warning, as lm-eval's own ``hf`` model does for its default ``cuda:0``),
  ``gguf_file``, ``cache_dir``, ``revision``, ``trust_remote_code`` go to the spec;
* the **policy**, at most one of: ``routers=DIR`` (a checkpoint of
  :meth:`~drllm.routers.module.Routers.save_pretrained` for this model, with ``alpha=`` in
  [-1, 1], ``gate=`` (``tau`` in [0, 1], ``argmax``, or by default the checkpoint's calibrated
  gate) and ``check_model_id=``), or ``path=`` a fixed layer path of ``L`` decisions
  (``[1,1,0,1,...]``, ``"1,1,0,1"``, ``1101`` or the letters ``EESE``; checked with
  :mod:`drllm.paths`: values in {0, 1, 2}, at least one block run). Default: every block once,
  which reproduces lm-eval's ``hf`` model on the same weights;
* ``batch_size`` (rows per forward), ``max_length`` (default: the model's
  ``max_position_embeddings``), ``max_gen_toks`` (256), ``add_bos_token``, ``prefix_token_id``
  as in the ``hf`` model.

What routing means per request type. Routers decide **once per request, from its context**
(the prompt), exactly as in generation, where the decisions are made block by block during the
prefill over the prompt and reused for every generated token:

* ``loglikelihood`` (multiple choice, cloze): the path is chosen by a routing prefill over the
  request's context tokens (those left inside the model window after left truncation) and the
  continuation is then scored teacher-forced along that path. The continuation never influences
  its own path, so the choices of one question (same context) are scored along one path; a
  different context (another question, another few-shot prefix) may choose a different path.
* ``loglikelihood_rolling`` (perplexity) has no prompt: each document decides **once, from its
  first window's tokens** (the prefix token plus the document's first ``max_length - 1``
  tokens, i.e. the text being scored), and every later window of that document reuses that
  path.
* ``generate_until``: greedy generation along the path the routers choose during the prompt's
  prefill (:meth:`~drllm.inference.routed.RoutedModel.generate`); sampling is refused.

With ``path=`` or the default path no routing happens and every request runs the same path. All
work runs on the edited-path executor (:class:`~drllm.models.executor.PathExecutor`), which
drives the model's stock decoder layers. ``get_model_info`` adds the policy and the mean blocks
per forward pass over the requests to lm-eval's results ``config``.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Sequence

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import (
    handle_stop_sequences,
    has_bos_prefix,
    normalize_gen_kwargs,
    postprocess_generated_text,
    resolve_max_length,
)
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm.auto import tqdm

from drllm.inference.routed import CALIBRATED, RoutedModel
from drllm.inference.scoring import PathCache, Window, fit_window, score_continuations
from drllm.models.executor import PathExecutor
from drllm.models.loading import DEFAULT_MODEL, LoadedModel, ModelSpec, load_model
from drllm.paths import InvalidPathError, LayerPath, PathConstraints, validate_path
from drllm.routers.features import permissive_constraints
from drllm.routers.module import Routers

logger = logging.getLogger(__name__)

MODEL_NAME = "drllm"
DEFAULT_MAX_LENGTH = 2048
DEFAULT_MAX_GEN_TOKS = 256
_LETTERS = re.compile(r"^[SERser\s]+$")
_SEPARATORS = re.compile(r"[\s,;:/_\-]+")


def parse_path(value: Any, num_layers: int) -> LayerPath:
    """``path=`` as a :class:`LayerPath` of ``num_layers`` decisions, or a clear error.

    Accepts a sequence of ints, a string of digits with or without separators
    (``"1,1,0,1"``, ``"1 1 0 1"``, ``"1101"``), the letters ``S``/``E``/``R`` or an int (what
    lm-eval's argument parser makes of ``path=1101``; leading zeros are lost there, so prefer
    the list or letter forms). Any path of values in {0, 1, 2} running at least one block is
    accepted (runs of skips are not limited: evaluation is not the search).

    Raises:
        InvalidPathError: wrong length, a value outside {0, 1, 2}, or no block run.
    """
    hint = ("pass one decision per block (0 skip, 1 execute, 2 repeat), e.g. "
            f"path=[1,1,0,...] or path=EESE... with {num_layers} entries")
    try:
        if isinstance(value, str) and _LETTERS.match(value) and value.strip():
            decisions: Sequence[int] = LayerPath.parse(value)
        elif isinstance(value, str):
            text = value.strip().strip("[]()")
            parts = [p for p in _SEPARATORS.split(text) if p]
            decisions = [int(c) for c in parts[0]] if len(parts) == 1 else [int(p) for p in parts]
        elif isinstance(value, int) and not isinstance(value, bool):
            decisions = [int(c) for c in str(value)]
        elif isinstance(value, Sequence):
            decisions = [int(d) for d in value]
        else:
            raise InvalidPathError(f"unsupported type {type(value).__name__}")
        rules = PathConstraints(max_consecutive_skips=num_layers, min_executed=1)
        return validate_path(tuple(decisions), num_layers, rules)
    except (ValueError, TypeError) as err:
        raise InvalidPathError(f"drllm model_args path={value!r}: {err}; {hint}") from err


def _batch_size(value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"drllm needs a positive integer batch_size (rows per forward pass), got {value!r}; "
            f"'auto' batch sizing is not supported"
        )
    return value


def _device(device: str | None) -> str:
    """lm-eval's ``--device`` as a :class:`ModelSpec` device (``auto`` when not given)."""
    if device is None:
        return "auto"
    device = str(device)
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            logger.warning("device %s is not available here; running on the CPU", device)
            return "cpu"
    return device


def _gate_arg(gate: Any) -> Any:
    """``gate=`` of the model args: ``None`` / ``calibrated`` (the checkpoint's), ``argmax``,
    or a number in [0, 1]."""
    if gate is None or gate == CALIBRATED:
        return CALIBRATED
    if str(gate).lower() in ("argmax", "none"):
        return None
    return float(gate)


@register_model(MODEL_NAME)
class DrLLMEval(TemplateLM):
    """lm-eval model over the edited-path executor; see the module docstring for the args."""

    def __init__(
        self,
        pretrained: str | LoadedModel = DEFAULT_MODEL,
        routers: str | None = None,
        alpha: float = 0.0,
        path: Any = None,
        *,
        gate: Any = None,
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        device: str | None = None,
        dtype: str = "float32",
        max_length: int | None = None,
        max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
        add_bos_token: bool | None = None,
        prefix_token_id: int | None = None,
        check_model_id: bool = True,
        gguf_file: str | None = None,
        cache_dir: str | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        if routers is not None and path is not None:
            raise ValueError("drllm model_args: pass routers= or path=, not both")
        if routers is None and (float(alpha) != 0.0 or gate is not None):
            raise ValueError(f"drllm model_args: alpha={alpha} / gate={gate} need routers=")
        self.batch_size = _batch_size(batch_size)
        del max_batch_size  # lm-eval passes it for 'auto' batch sizes, which drllm does not do
        if isinstance(pretrained, LoadedModel):
            loaded = pretrained
        else:
            loaded = load_model(ModelSpec(
                name=str(pretrained), gguf_file=gguf_file, dtype=dtype, device=_device(device),
                cache_dir=cache_dir, revision=revision, trust_remote_code=trust_remote_code,
            ))
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.num_layers = loaded.num_layers
        self.routed: RoutedModel | None = None
        self.routers_dir = routers
        if routers is not None:
            checkpoint = Routers.from_pretrained(
                routers, expected_num_layers=loaded.num_layers,
                expected_hidden_size=loaded.hidden_size,
                expected_model_id=loaded.model_id if check_model_id else None,
            )
            self.routed = RoutedModel(loaded.model, loaded.tokenizer, checkpoint, float(alpha),
                                      gate=_gate_arg(gate))
            self.executor = self.routed.executor
        else:
            self.executor = PathExecutor(
                loaded.model, loaded.tokenizer, permissive_constraints(loaded.num_layers)
            )
        self.alpha = float(alpha)
        self.path = (
            LayerPath.default(loaded.num_layers) if path is None
            else parse_path(path, loaded.num_layers)
        )
        self._device = self.executor.device
        self._max_length = max_length
        self.max_gen_toks = int(max_gen_toks)
        self.add_bos_token = add_bos_token
        self.custom_prefix_token_id = prefix_token_id
        self._costs: list[int] = []
        self._paths_seen: set[LayerPath] = set()
        logger.info("drllm lm-eval model: %s, L=%d, %s", loaded.model_id, self.num_layers,
                    self.policy)

    # ------------------------------------------------------------------ lm-eval properties

    @property
    def policy(self) -> str:
        """``routed(DIR, alpha=A)``, ``path(EESE...)`` or ``default``."""
        if self.routed is not None:
            return f"routed({self.routers_dir}, alpha={self.alpha:g}, gate={self.routed.gate})"
        return "default" if self.path.is_default else f"path({self.path.to_str()})"

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        if self.custom_prefix_token_id is not None:
            return int(self.custom_prefix_token_id)
        if self.tokenizer.bos_token_id is not None:
            return self.tokenizer.bos_token_id
        return self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        if self._max_length:
            return int(self._max_length)
        return resolve_max_length(
            self.loaded.model.config, self.tokenizer, default=DEFAULT_MAX_LENGTH
        )

    @property
    def tokenizer_name(self) -> str:
        return str(self.tokenizer.name_or_path).replace("/", "__")

    def tok_encode(
        self, string: str, add_special_tokens: bool | None = None, **kwargs: Any
    ) -> list[int]:
        """Token ids as lm-eval's ``hf`` model makes them (no double BOS)."""
        options: dict[str, bool] = {}
        if add_special_tokens is not None:
            options["add_special_tokens"] = add_special_tokens
        elif self.add_bos_token is not None:
            options["add_special_tokens"] = self.add_bos_token
        if add_special_tokens is None and has_bos_prefix(
            string, self.tokenizer.decode(self.prefix_token_id)
        ):
            options["add_special_tokens"] = False
        return list(self.tokenizer.encode(string, **options))

    def tok_decode(self, tokens: Sequence[int] | int, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        return self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt,
        )

    def get_model_info(self) -> dict[str, Any]:
        """Policy and cost, merged into lm-eval's results ``config``."""
        costs = self._costs
        return {
            "drllm_model": self.loaded.model_id,
            "drllm_policy": self.policy,
            "drllm_num_layers": self.num_layers,
            "drllm_requests": len(costs),
            "drllm_mean_blocks_per_pass": sum(costs) / len(costs) if costs else None,
            "drllm_distinct_scoring_paths": len(self._paths_seen),
        }

    # ------------------------------------------------------------------ paths

    def choose_paths(self, contexts: Sequence[Sequence[int]]) -> list[LayerPath]:
        """The path of each context: routed (one prefill per distinct context) or fixed."""
        if self.routed is None:
            return [self.path] * len(contexts)
        return PathCache(self.routed.route, self.batch_size)(contexts)

    def _record(self, paths: Sequence[LayerPath]) -> None:
        self._costs.extend(p.cost for p in paths)
        self._paths_seen.update(paths)

    # ------------------------------------------------------------------ requests

    def _loglikelihood_tokens(
        self, requests: list[tuple[tuple[str, str], list[int], list[int]]],
        disable_tqdm: bool = False, **kwargs: Any,
    ) -> list[tuple[float, bool]]:
        windows = [fit_window(ctx, cont, self.max_length) for _, ctx, cont in requests]
        paths = self.choose_paths([w.context for w in windows])
        self._record(paths)
        scores = score_continuations(
            self.executor, windows, paths, self.batch_size, progress=not disable_tqdm
        )
        for (request, _, _), score in zip(requests, scores):
            if request is not None:
                self.cache_hook.add_partial("loglikelihood", request, score)
        return scores

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Perplexity windows as in the ``hf`` model; one path per document, from its first
        window's tokens."""
        windows: list[Window] = []
        owners: list[int] = []
        firsts: dict[int, tuple[int, ...]] = {}
        for doc, (string,) in enumerate(req.args for req in requests):
            pairs = get_rolling_token_windows(
                token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1,
            )
            for ctx, cont in map(make_disjoint_window, pairs):
                windows.append(fit_window(ctx, cont, self.max_length))
                owners.append(doc)
                firsts.setdefault(doc, windows[-1].input_ids)
        docs = sorted(firsts)
        by_doc = dict(zip(docs, self.choose_paths([firsts[d] for d in docs])))
        self._record(list(by_doc.values()))
        paths = [by_doc[d] for d in owners]
        scores = score_continuations(
            self.executor, windows, paths, self.batch_size, progress=not disable_tqdm
        )
        totals = [0.0] * len(requests)
        for doc, (logprob, _) in zip(owners, scores):
            totals[doc] += logprob
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy generation, grouped by generation kwargs, stop strings as in the ``hf`` model."""
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            key = json.dumps(req.args[1], sort_keys=True, default=str)
            groups.setdefault(key, []).append(i)
        out: list[str | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), desc="drllm generate_until", disable=disable_tqdm)
        for rows in groups.values():
            texts = self._generate_group([requests[i].args for i in rows], bar)
            for i, text in zip(rows, texts):
                out[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
        bar.close()
        return out  # type: ignore[return-value]

    def _generate_group(self, args: list[tuple[str, dict]], bar: Any) -> list[str]:
        kwargs = normalize_gen_kwargs(dict(args[0][1]), self.max_gen_toks)
        if kwargs.get("do_sample"):
            raise ValueError(
                f"drllm decodes greedily; this task asks for sampling ({args[0][1]}); "
                f"pass --gen_kwargs do_sample=False,temperature=0"
            )
        eos = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        until = [s for s in handle_stop_sequences(kwargs.pop("until", None), eos=eos) if s]
        max_new = int(kwargs.pop("max_gen_toks"))
        room = self.max_length - max_new
        if room < 1:
            raise ValueError(
                f"max_gen_toks={max_new} leaves no room for a prompt in max_length="
                f"{self.max_length}"
            )
        ids = [(self.tok_encode(ctx) or [self.prefix_token_id])[-room:] for ctx, _ in args]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        texts: list[str] = [""] * len(ids)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            gens = self._generate([ids[i] for i in rows], max_new, until)
            for i, gen in zip(rows, gens):
                text = self.tok_decode(list(gen.token_ids))
                texts[i] = postprocess_generated_text(text, until, None)
                if gen.token_ids:
                    self._costs.append(gen.layers_executed // len(gen.token_ids))
            bar.update(len(rows))
        return texts

    def _generate(self, ids: list[list[int]], max_new: int, until: list[str]) -> list[Any]:
        if self.routed is not None:
            return self.routed.generate(ids, max_new, stop_strings=until)
        return self.executor.generate(
            ids, [self.path] * len(ids), max_new_tokens=max_new, stop_strings=until
        )
