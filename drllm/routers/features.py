"""The feature pass: pooled hidden states entering every block along each example's best path.

Router ``i`` is trained on the states that enter block ``i`` when the frozen model runs the
example's prompt along its MCTS best path (teacher forcing: block ``i`` sees the states the
*labeled* path produces, never those of router predictions). This module computes them once, so
router training never runs the LLM:

* :func:`extract_features` -- one cacheless prefill of a batch along fixed per-row paths; the
  executor's block hook pools (:func:`~drllm.routers.module.window_pool`, ``W`` windows, padding
  excluded) the states entering every block: ``[B, L, W, d]`` plus the window mask ``[B, W]``;
* :class:`FeatureExtractor` -- the Ray Data callable class: loads the model once per actor and
  maps shard rows (``rendered_prompt``, ``best_path``) to feature rows;
* :func:`run_feature_pass` -- reads the shards with ``ray.data.read_parquet``, keeps the rows of
  the row filter (``FeatureConfig.rows``: solved rows by default, see :mod:`drllm.routers.rows`),
  maps them through a fixed-size actor pool (``ActorPoolStrategy``), and writes the feature
  rows with Ray Data's ``write_parquet`` from the workers (the rows never pass through the
  driver) into a features directory (:mod:`drllm.routers.feature_store`); a rerun with the
  same key reuses it.

Prompts are the shards' ``rendered_prompt`` (chat template already applied), tokenized by
:meth:`PathExecutor.encode`, which adds no special tokens (the template wrote them). With
``pool="question"`` the windows cover only the question's tokens (the chat template's shared
prefix and suffix excluded, :mod:`drllm.routers.pooling`), exactly as routed inference pools.
Each feature row also carries its targets' evidence (:mod:`drllm.routers.targets`): the
good-path shares and the trace's negatives.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import torch

from drllm.models.loading import ModelSource, ModelSpec, load_source
from drllm.paths import PathConstraints
from drllm.routers.feature_store import (
    FEATURE_DTYPES,
    FeatureFileWriter,
    FeatureInfo,
    feature_key,
    feature_table,
    find_reusable,
)
from drllm.routers.module import DEFAULT_WINDOWS, window_pool
from drllm.routers.pooling import POOL_MODES, PoolingSpec, span_mask
from drllm.routers.rows import (
    RowSelection,
    ShardsIdentity,
    check_row_filter,
    filter_dataset,
    filter_table,
    select_rows,
    shard_columns,
    shards_identity,
)
from drllm.routers.targets import row_evidence

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class FeatureConfig:
    """How the feature pass runs.

    Attributes:
        windows: W, pooling windows per prompt (clamped per row by its length).
        dtype: storage dtype of the features, ``float16`` or ``float32``.
        batch_size: shard rows per model call (one left-padded prefill).
        num_actors: size of the Ray Data actor pool (one model copy each).
        num_cpus_per_actor: CPUs (and torch threads) per CPU actor.
        use_gpu: one GPU per actor; ``None`` uses GPUs when the cluster has them.
        rows: which shard rows are featurized (and so trained on): ``"solved"`` (default) or
            ``"all"`` (see :mod:`drllm.routers.rows`; CLI ``features.rows=all``).
        pool: ``"question"`` (the chat template's shared prefix and suffix excluded;
            :mod:`drllm.routers.pooling`; the whole prompt for a tokenizer without a chat
            template) or ``"prompt"`` (every prompt token, the paper). The routers inherit it
            (checkpoint ``pooling``), so inference pools the same tokens. ``question`` is the
            default: in the issue 19 validation (SmolLM2, synthetic arithmetic, 100
            calibration questions) its routers lost 4 pp at 0.19 blocks saved per pass where
            ``prompt`` pooling lost 11 pp at 0.23, and 11 pp at 0.85 where ``prompt`` lost
            18 pp at 0.90.
    """

    windows: int = DEFAULT_WINDOWS
    dtype: str = "float16"
    batch_size: int = 8
    num_actors: int = 1
    num_cpus_per_actor: int = 1
    use_gpu: bool | None = None
    rows: str = "solved"
    pool: str = "question"

    def __post_init__(self) -> None:
        check_row_filter(self.rows)
        if self.pool not in POOL_MODES:
            raise ValueError(f"FeatureConfig.pool must be one of {list(POOL_MODES)}, "
                             f"got {self.pool!r}")
        if self.dtype not in FEATURE_DTYPES:
            raise ValueError(
                f"FeatureConfig.dtype must be one of {sorted(FEATURE_DTYPES)}, got {self.dtype!r}"
            )
        for name in ("windows", "batch_size", "num_actors", "num_cpus_per_actor"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"FeatureConfig.{name} must be a positive int, got {value!r}")


def permissive_constraints(num_layers: int) -> PathConstraints:
    """Constraints that accept every well-formed path of ``L`` blocks (labels are data)."""
    return PathConstraints(max_consecutive_skips=num_layers, max_cost_factor=2.0, min_executed=0)


def left_pad(
    token_ids: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids [B, T], attention_mask [B, T])``, left-padded to the longest row."""
    if not token_ids or any(len(seq) == 0 for seq in token_ids):
        raise ValueError("every prompt needs at least one token")
    width = max(len(seq) for seq in token_ids)
    input_ids = torch.full((len(token_ids), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(token_ids), width), dtype=torch.long)
    for row, seq in enumerate(token_ids):
        input_ids[row, width - len(seq):] = torch.as_tensor(list(seq), dtype=torch.long)
        mask[row, width - len(seq):] = 1
    return input_ids.to(device), mask.to(device)


@torch.inference_mode()
def extract_features(
    executor: Any,
    token_ids: Sequence[Sequence[int]],
    paths: Sequence[Sequence[int]],
    windows: int = DEFAULT_WINDOWS,
    pooling: PoolingSpec | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced router features of a batch.

    Args:
        executor: a :class:`~drllm.models.executor.PathExecutor` of the frozen model; its
            constraints must accept ``paths``.
        token_ids: prompt token ids per row (any lengths; left-padded here).
        paths: one path of ``L`` decisions per row (the labels).
        windows: W.
        pooling: which tokens are pooled (default: the whole prompt).

    Returns:
        ``(features [B, L, W, d] float32 on CPU, wmask [B, W] bool)``: ``features[b, i]`` is
        ``window_pool`` of the states entering block ``i`` when row ``b`` runs along
        ``paths[b]``.
    """
    input_ids, mask = left_pad(token_ids, executor.pad_token_id, executor.device)
    num_layers = executor.num_layers
    pooled: list[torch.Tensor | None] = [None] * num_layers
    wmasks: list[torch.Tensor] = []
    spans = (pooling or PoolingSpec()).spans(token_ids)

    def hook(block: int, hidden: torch.Tensor, hook_mask: torch.Tensor) -> None:
        pooled[block], wmask = window_pool(hidden, span_mask(hook_mask, spans), windows)
        wmasks.append(wmask)
        return None

    executor.prefill_states(input_ids, mask, paths=list(paths), block_hook=hook)
    missing = [i for i, p in enumerate(pooled) if p is None]
    assert not missing, f"block hook not called for blocks {missing}"
    features = torch.stack(pooled, dim=1).cpu()  # type: ignore[arg-type]
    return features, wmasks[0].cpu()


def label_array(best_paths: pa.ChunkedArray | pa.Array, num_layers: int) -> np.ndarray:
    """``[N, L]`` int8 decisions of a ``best_path`` column (fixed-size lists)."""
    column = best_paths.combine_chunks() if isinstance(best_paths, pa.ChunkedArray) else best_paths
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, num_layers)


class FeatureExtractor:
    """Ray Data callable class: one frozen model per actor, shard rows in, feature rows out.

    Args:
        model: the frozen model (spec or loader), loaded once in ``__init__``.
        windows / dtype: W and the storage dtype.
        pooling: which prompt tokens are pooled (a :class:`PoolingSpec` or its dict).
        expected_model_id / expected_num_layers: what the shards were searched with; a loaded
            model that differs raises ``ValueError`` before any row is processed.
        num_threads: torch intra-op threads (CPU actors: their CPU share).
        device: ``"cuda"`` on a GPU actor, else ``None`` (the spec's device).
    """

    def __init__(
        self,
        model: ModelSource,
        *,
        windows: int = DEFAULT_WINDOWS,
        dtype: str = "float16",
        pooling: PoolingSpec | dict | None = None,
        expected_model_id: str | None = None,
        expected_num_layers: int | None = None,
        num_threads: int | None = None,
        device: str | None = None,
    ) -> None:
        from drllm.models.executor import PathExecutor

        if num_threads is not None:
            torch.set_num_threads(num_threads)
        loaded = load_source(model, device)
        if expected_model_id is not None and loaded.model_id != expected_model_id:
            raise ValueError(
                f"the shards were searched with model {expected_model_id!r} but the feature pass "
                f"loaded {loaded.model_id!r}; pass the search's model (model.name=...)"
            )
        if expected_num_layers is not None and loaded.num_layers != expected_num_layers:
            raise ValueError(
                f"the shards hold paths of L={expected_num_layers} blocks but model "
                f"{loaded.model_id!r} has {loaded.num_layers}"
            )
        self.model_id = loaded.model_id
        self.windows, self.dtype = windows, dtype
        self.pooling = (pooling if isinstance(pooling, PoolingSpec)
                        else PoolingSpec.from_dict(pooling))
        self.executor = PathExecutor(
            loaded.model, loaded.tokenizer, permissive_constraints(loaded.num_layers)
        )
        logger.info("feature extractor ready: %s (L=%d, d=%d) on %s", loaded.model_id,
                    loaded.num_layers, loaded.hidden_size, self.executor.device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Shard rows (:data:`SHARD_COLUMNS`) -> feature rows (``feature_schema``)."""
        num_layers = self.executor.num_layers
        paths = label_array(batch.column("best_path"), num_layers)
        prompts = [str(p) for p in batch.column("rendered_prompt").to_pylist()]
        token_ids = self.executor.encode(prompts)
        features, wmask = extract_features(self.executor, token_ids, paths.tolist(), self.windows,
                                           self.pooling)
        rows = batch.to_pylist()
        evidence = [row_evidence(r, num_layers) for r in rows]
        return feature_table(
            example_ids=[str(x) for x in batch.column("example_id").to_pylist()],
            datasets=[str(x) for x in batch.column("dataset").to_pylist()],
            num_tokens=[len(t) for t in token_ids],
            labels=paths,
            wmask=wmask.numpy(),
            features=features.numpy(),
            dtype=self.dtype,
            soft=np.stack([e[0] for e in evidence]),
            blame=np.stack([e[1] for e in evidence]),
            default_correct=[e[2] for e in evidence],
            improved=[bool(r.get("improved")) for r in rows],
        )


def pooling_spec(model: ModelSource, pool: str) -> PoolingSpec:
    """The :class:`PoolingSpec` of ``pool`` for ``model``'s tokenizer (no weights for a spec).

    ``question`` (the default) on a tokenizer without a chat template -- a base model, whose
    prompts have no shared template around the question -- pools the whole prompt, with a
    warning.
    """
    if pool == "prompt":
        return PoolingSpec()
    if isinstance(model, ModelSpec):
        from drllm.models.loading import load_tokenizer

        tokenizer = load_tokenizer(model)
    else:
        tokenizer = load_source(model).tokenizer
    if not getattr(tokenizer, "chat_template", None):
        logger.warning("features.pool=%s: the tokenizer has no chat template, so there is no "
                       "shared template to exclude; pooling every prompt token", pool)
        return PoolingSpec()
    return PoolingSpec.from_tokenizer(tokenizer, pool)


def _map_features(ds: Any, model: ModelSource, cfg: FeatureConfig, ident: ShardsIdentity,
                  pooling: PoolingSpec) -> Any:
    """``ds.map_batches`` through a fixed-size pool of :class:`FeatureExtractor` actors."""
    import ray

    use_gpu = _uses_gpu(cfg, ray.cluster_resources())
    resources = {"num_gpus": 1} if use_gpu else {"num_cpus": cfg.num_cpus_per_actor}
    return ds.map_batches(
        FeatureExtractor,
        fn_constructor_kwargs={
            "model": model, "windows": cfg.windows, "dtype": cfg.dtype,
            "pooling": pooling.to_dict(), "expected_model_id": ident.model_id,
            "expected_num_layers": ident.num_layers,
            "num_threads": None if use_gpu else cfg.num_cpus_per_actor,
            "device": "cuda" if use_gpu else None,
        },
        batch_size=cfg.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=cfg.num_actors),
        udf_modifying_row_count=False,
        **resources,
    )


def _uses_gpu(cfg: FeatureConfig, resources: Mapping[str, float]) -> bool:
    """``cfg.use_gpu``, or (``None``) whether the cluster (``ray.cluster_resources()``) has GPUs."""
    return cfg.use_gpu if cfg.use_gpu is not None else resources.get("GPU", 0.0) > 0


def actors_fit(cfg: FeatureConfig, resources: Mapping[str, float]) -> bool:
    """Whether the feature actors leave a CPU to Ray Data's read and write tasks.

    A CPU actor pool that holds every CPU of the cluster (one actor of one CPU on
    ``ray.num_cpus=1``) starves the read tasks that feed it: Ray Data waits forever. GPU actors
    hold no CPU. ``resources`` is ``ray.cluster_resources()``.
    """
    held = 0 if _uses_gpu(cfg, resources) else cfg.num_actors * cfg.num_cpus_per_actor
    return resources.get("CPU", 0.0) - held >= 1


def run_feature_pass(
    shards_dir: str | Path,
    features_dir: str | Path,
    model: ModelSource,
    cfg: FeatureConfig = FeatureConfig(),
    *,
    progress: bool = True,
    force: bool = False,
    in_process: bool = False,
) -> FeatureInfo:
    """Compute (or reuse) the router features of the rows of ``shards_dir`` that ``cfg.rows``
    selects (solved rows by default; unsolved rows are then never featurized).

    Ray must be connected (:func:`drllm.cluster.connect`) unless ``in_process``. The pass runs
    to completion before returning, so its actors release their CPUs / GPUs before training
    starts. On a cluster whose CPUs the actors would all hold (:func:`actors_fit`) it runs in
    this process, with a warning, instead of hanging.

    Args:
        shards_dir: supervision shards of one model.
        features_dir: where the features file and ``_features.json`` go.
        model: the model the shards were searched with (its id is checked by each actor).
        cfg: windows, dtype, batch size, actor pool.
        progress: show a progress bar over rows.
        force: recompute even when the existing features match the key.
        in_process: run one :class:`FeatureExtractor` in this process, without Ray (small
            runs, notebooks, tests).

    Returns:
        The :class:`FeatureInfo` of the (new or reused) features; its ``row_filter``,
        ``shard_rows`` and ``skipped_unsolved`` record the row selection.

    Raises:
        drllm.routers.rows.NoRowsError: the row filter keeps no row (message: the counts and
            ``features.rows=all``).
    """
    import ray

    ident = shards_identity(shards_dir)
    selection = select_rows(ident, cfg.rows, shards_dir)
    pooling = pooling_spec(model, cfg.pool)
    key = feature_key(
        model_id=ident.model_id,
        model_dtype=model.dtype if isinstance(model, ModelSpec) else None,
        shards_dir=shards_dir, windows=cfg.windows, dtype=cfg.dtype, rows=cfg.rows,
        pooling=pooling.to_dict(),
    )
    reused = None if force else find_reusable(features_dir, key)
    if reused is not None:
        logger.info("reusing %d feature rows in %s (same shards, model, W, dtype, rows=%s)",
                    reused.rows, features_dir, cfg.rows)
        return reused
    if not in_process:
        if not ray.is_initialized():
            raise RuntimeError("the feature pass needs Ray: call drllm.cluster.connect(...) "
                               "first, or pass in_process=True")
        resources = ray.cluster_resources()
        if not actors_fit(cfg, resources):
            logger.warning("the cluster's %g CPUs leave none to Ray Data's read and write tasks "
                           "beside %d feature actor(s) of %d CPU(s) (the pass would hang): "
                           "featurizing in this process instead", resources.get("CPU", 0.0),
                           cfg.num_actors, cfg.num_cpus_per_actor)
            in_process = True
    logger.info("feature pass: %d of %d rows of %s (rows=%s), %s, W=%d, %s", selection.used,
                ident.rows, shards_dir, cfg.rows,
                "in process" if in_process else f"{cfg.num_actors} actor(s)", cfg.windows,
                cfg.dtype)
    if in_process:
        return _write_stream(_local_batches(model, cfg, ident, pooling), features_dir, key,
                             ident, cfg, selection, progress)
    context = ray.data.DataContext.get_current()
    saved = context.enable_progress_bars
    context.enable_progress_bars = progress  # Ray Data's own bars
    writer = FeatureFileWriter(features_dir, key, num_layers=ident.num_layers,
                               windows=cfg.windows, dtype=cfg.dtype, model_id=ident.model_id,
                               selection=selection)
    try:
        ds = filter_dataset(ray.data.read_parquet([str(f) for f in ident.files]), cfg.rows)
        ds = ds.select_columns(shard_columns(ident.files))
        # the rows go from the feature actors to Ray Data's write tasks, never to the driver
        _map_features(ds, model, cfg, ident, pooling).write_parquet(str(writer.parts_dir))
        return _commit(writer, selection, cfg)
    except BaseException:
        writer.abort()
        raise
    finally:
        context.enable_progress_bars = saved


def _commit(writer: FeatureFileWriter, selection: RowSelection, cfg: FeatureConfig) -> FeatureInfo:
    info = writer.commit()
    if info.rows != selection.used:
        raise RuntimeError(f"feature pass wrote {info.rows} rows for {selection.used} "
                           f"selected shard rows (rows={cfg.rows})")
    return info


def _local_batches(
    model: ModelSource, cfg: FeatureConfig, ident: ShardsIdentity, pooling: PoolingSpec
) -> Iterator[pa.Table]:
    """Feature tables computed in this process by one :class:`FeatureExtractor`."""
    import pyarrow.parquet as pq

    extractor = FeatureExtractor(
        model, windows=cfg.windows, dtype=cfg.dtype, pooling=pooling,
        expected_model_id=ident.model_id, expected_num_layers=ident.num_layers,
    )
    columns = shard_columns(ident.files)
    for path in ident.files:
        table = filter_table(pq.read_table(path, columns=[*columns, "solved"]), cfg.rows)
        for start in range(0, table.num_rows, cfg.batch_size):
            yield extractor(table.slice(start, cfg.batch_size))


def _write_stream(
    batches: Iterable[pa.Table], features_dir: str | Path, key: dict[str, Any],
    ident: ShardsIdentity, cfg: FeatureConfig, selection: RowSelection, progress: bool,
) -> FeatureInfo:
    """Stream feature tables into a features file and commit it."""
    from tqdm.auto import tqdm

    writer = FeatureFileWriter(features_dir, key, num_layers=ident.num_layers,
                               windows=cfg.windows, dtype=cfg.dtype, model_id=ident.model_id,
                               selection=selection)
    bar = tqdm(total=selection.used, desc="features", unit="row", disable=not progress)
    try:
        for table in batches:
            writer.write(table)
            bar.update(table.num_rows)
        if writer.rows == 0:
            raise ValueError(f"the shards of {ident.files[0].parent} produced no feature rows")
        return _commit(writer, selection, cfg)
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
